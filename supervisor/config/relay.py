"""The relay's YAML configuration: attrs models, loading and key-named validation."""

from __future__ import annotations

import ipaddress
import os
from typing import Any
from urllib.parse import urlsplit

import attrs

from supervisor.config._common import (
    MAX_UNIX_SOCKET_PATH_BYTES,
    ConfigError,
    Section,
    defaults,
    join_key,
    load_yaml_mapping,
    metrics_listen,
    resolve_path,
)
from supervisor.config.fleet import FLEET_KEYS, NATS_KEYS, FleetConfig, NatsConfig, parse_fleet, parse_nats
from supervisor.wire.bounds import LEASE_SECONDS_RANGE
from supervisor.wire.vocabulary import COMMANDS

__all__ = [
    "ConfigError",
    "ListenConfig",
    "DashboardConfig",
    "normalize_origin",
    "TLSConfig",
    "TrustedProxyConfig",
    "RegistrationConfig",
    "OperatorGrant",
    "AuthorizationConfig",
    "AuditConfig",
    "LimitsConfig",
    "TimeoutsConfig",
    "MetricsConfig",
    "AlertRule",
    "WebhookConfig",
    "AlertsConfig",
    "RelayConfig",
    "load_relay_config",
    "parse_relay_config",
]


_DEFAULT_PORTS = {"https": 443, "http": 80}


def normalize_origin(text: str) -> str | None:
    """``scheme://host:port`` of a browser origin (lower case, explicit port), or None when
    ``text`` is not an http(s) origin (``null``, a path, user info, a wildcard)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (scheme not in _DEFAULT_PORTS or not parts.hostname or "*" in text
            or parts.username is not None or parts.path
            or parts.query or parts.fragment):
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port if port is not None else _DEFAULT_PORTS[scheme]}"


@attrs.frozen
class ListenConfig:
    """Where the HTTPS/WebSocket site listens, the URL browsers use to reach it and the
    other origins whose pages may open sessions."""

    host: str
    port: int
    public_url: str
    #: exact origins besides ``public_url``'s, normalized (see :func:`normalize_origin`)
    allowed_origins: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        """The browser origin of ``public_url`` (``wss://h:p/x`` → ``https://h:p``)."""
        parts = urlsplit(self.public_url)
        return f"https://{parts.netloc}"

    def admits_origin(self, origin: str) -> bool:
        """Whether a handshake's ``Origin`` is ``public_url``'s or a listed one."""
        normalized = normalize_origin(origin)
        return normalized is not None and (normalized == normalize_origin(self.origin)
                                           or normalized in self.allowed_origins)


@attrs.frozen
class DashboardConfig:
    """What the relay serves at ``/``."""

    #: a folder of built files (``index.html`` at its top); None: the packaged dashboard
    static_dir: str | None = None


@attrs.frozen
class TLSConfig:
    """Server certificate and key, and the CA that signs accepted client certificates."""

    certificate_path: str
    private_key_path: str
    client_ca_path: str | None


@attrs.frozen
class TrustedProxyConfig:
    """Identity from a header set by a proxy, accepted only from listed peer addresses."""

    enabled: bool = False
    allowed_remote_addrs: tuple[str, ...] = ()
    identity_header: str = "x-verified-client-subject"


@attrs.frozen
class RegistrationConfig:
    """The registration socket and the rules applied to every registration."""

    listen_path: str
    allowed_ipc_path_prefixes: tuple[str, ...]
    permissions: int = 0o600
    default_lease_seconds: int = 30
    max_lease_seconds: int = 120
    # target-id ownership (kept across lease expiry and relay restarts; see docs/security.md)
    #: an id whose owner has not registered it for this long is released to any uid
    owner_quiet_period_seconds: int = 7 * 24 * 3600
    #: ids whose owner is remembered at most; a new id beyond this is refused (registry_full)
    max_owner_records: int = 16384
    #: ``(target_id, uid)``: the id is only ever accepted from that uid
    pinned_owners: tuple[tuple[str, int], ...] = ()

    def pinned_owner(self, target_id: str) -> str | None:
        """The owner (``unix_uid:<uid>``) an id is pinned to, if it is."""
        for pinned_id, uid in self.pinned_owners:
            if pinned_id == target_id:
                return f"unix_uid:{uid}"
        return None


@attrs.frozen
class OperatorGrant:
    """One principal and the commands it may run."""

    principal: str
    commands: frozenset[str]


@attrs.frozen
class AuthorizationConfig:
    """Who may run which commands; everyone authenticated may watch."""

    operators: tuple[OperatorGrant, ...] = ()


@attrs.frozen
class AuditConfig:
    """The durable SQLite audit store."""

    path: str
    busy_timeout_ms: int = 2000


@attrs.frozen
class LimitsConfig:
    """Caps on sessions, messages and queues; each has a documented overflow behaviour."""

    max_sessions: int = 256
    max_message_bytes: int = 65536
    session_queue: int = 10000
    #: UTF-8 bytes a session's outbound queue may hold (docs/configuration.md)
    session_queue_bytes: int = 8 * 1024 * 1024
    max_targets: int = 4096
    max_registration_connections: int = 128
    max_ipc_line_bytes: int = 16 * 1024 * 1024
    max_ipc_in_flight: int = 256
    max_commands_in_flight: int = 32
    audit_replay: int = 200
    # flood bounds: command sizes, per-session rates, the replayed-command window, replay bytes
    max_reason_chars: int = 1000
    max_manifest_bytes: int = 16 * 1024
    commands_per_second: float = 5.0
    commands_burst: int = 20
    rejected_per_second: float = 1.0
    rejected_burst: int = 10
    filter_changes_per_second: float = 5.0
    filter_changes_burst: int = 30
    command_id_window_seconds: float = 600.0
    command_id_window_size: int = 20000
    audit_replay_max_bytes: int = 256 * 1024


@attrs.frozen
class TimeoutsConfig:
    """Deadlines for every network step and the reconnect/sweep cadence."""

    registration_read_seconds: float = 5.0
    ipc_connect_seconds: float = 5.0
    ipc_request_seconds: float = 10.0
    ipc_keepalive_seconds: float = 15.0
    http_idle_seconds: float = 30.0
    http_request_headers_seconds: float = 10.0
    websocket_open_handshake_seconds: float = 10.0
    websocket_close_handshake_seconds: float = 5.0
    websocket_frame_seconds: float = 10.0
    auto_ping_interval_seconds: float = 20.0
    auto_ping_timeout_seconds: float = 10.0
    reconnect_initial_ms: int = 250
    reconnect_max_ms: int = 5000
    reconnect_jitter_ratio: float = 0.2
    lease_sweep_interval_ms: int = 500


@attrs.frozen
class MetricsConfig:
    """Where the relay serves Prometheus metrics (its own listener, never the HTTPS site)."""

    #: ``tcp:PORT`` (127.0.0.1 unless ``:interface=`` says otherwise) or ``unix:PATH``; off when ``None``
    listen: str | None = None


ALERT_KINDS = ("restart_storm", "escalation", "target_unavailable", "child_stale")
RULE_KEYS = ("name", "kind", "restarts", "within_minutes", "seconds", "watch")
WEBHOOK_KEYS = ("url", "headers", "timeout_seconds")


@attrs.frozen
class AlertRule:
    """One alert rule: what opens an alert and whether the relay watches every target for it."""

    name: str
    kind: str
    #: restart_storm: this many ``child_restarted`` of one child …
    restarts: int = 5
    #: … within this many minutes
    within_minutes: float = 5.0
    #: target_unavailable / child_stale: for at least this long
    seconds: float = 60.0
    #: ``always``: keep every registered target linked for this rule; ``on_demand``: only
    #: what sessions watch
    watch: str = "on_demand"


@attrs.frozen
class WebhookConfig:
    """A URL every alert document is POSTed to."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    timeout_seconds: float = 5.0


@attrs.frozen
class AlertsConfig:
    """Alert rules and the webhooks told of every firing and resolving alert."""

    rules: tuple[AlertRule, ...] = ()
    webhooks: tuple[WebhookConfig, ...] = ()
    #: deliveries waiting at most (retries included); the oldest is dropped, counted, logged
    queue_limit: int = 256
    #: attempts per delivery before it is given up (counted, logged)
    max_attempts: int = 5


@attrs.frozen
class RelayConfig:
    """Everything ``twistd supervisor-relay`` needs."""

    listen: ListenConfig
    tls: TLSConfig
    trusted_proxy: TrustedProxyConfig
    registration: RegistrationConfig
    authorization: AuthorizationConfig
    audit: AuditConfig
    limits: LimitsConfig = LimitsConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    dashboard: DashboardConfig = DashboardConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()
    fleet: FleetConfig = FleetConfig()
    nats: NatsConfig = NatsConfig()
    source_path: str | None = None

    @property
    def mtls(self) -> bool:
        """True when identities come from client certificates (not a trusted proxy)."""
        return not self.trusted_proxy.enabled


def load_relay_config(path: str) -> RelayConfig:
    """Read and validate a relay YAML file; relative paths are taken from its folder."""
    data = load_yaml_mapping(path)
    base_dir = os.path.dirname(os.path.abspath(path))
    return attrs.evolve(parse_relay_config(data, base_dir), source_path=os.path.abspath(path))


def parse_relay_config(data: Any, base_dir: str) -> RelayConfig:
    """Validate an already-parsed mapping; ``base_dir`` anchors relative paths."""
    top = Section(
        "",
        data,
        ["listen", "tls", "trusted_proxy", "registration", "authorization", "audit",
         "limits", "timeouts", "dashboard", "metrics", "alerts", "fleet", "nats"],
    )
    listen = _listen(top.section("listen", ["bind", "public_url", "allowed_origins"]))
    proxy = _proxy(top.section("trusted_proxy",
                               ["enabled", "allowed_remote_addrs", "identity_header"]))
    tls = _tls(top.section("tls", ["certificate_path", "private_key_path", "client_ca_path"]),
               base_dir, mtls=not proxy.enabled)
    registration = _registration(
        top.section("registration", ["listen_path", "permissions", "allowed_ipc_path_prefixes",
                                     "default_lease_seconds", "max_lease_seconds",
                                     *OWNERSHIP_KEYS]),
        base_dir,
    )
    authorization = _authorization(top.section("authorization", ["operators"]))
    limits = _limits(top.section("limits", [f.name for f in attrs.fields(LimitsConfig)]))
    if registration.max_owner_records < limits.max_targets:
        raise ConfigError("registration.max_owner_records",
                          f"must be at least limits.max_targets ({limits.max_targets})")
    fleet = parse_fleet(top.section("fleet", FLEET_KEYS))
    audit = _audit(top.section("audit", ["path", "busy_timeout_ms"]), base_dir)
    return RelayConfig(
        listen=listen,
        tls=tls,
        trusted_proxy=proxy,
        registration=registration,
        authorization=authorization,
        audit=audit,
        limits=limits,
        timeouts=_timeouts(top.section("timeouts",
                                       [f.name for f in attrs.fields(TimeoutsConfig)])),
        dashboard=_dashboard(top.section("dashboard", ["static_dir"]), base_dir),
        metrics=_metrics(top.section("metrics", [f.name for f in attrs.fields(MetricsConfig)]),
                         base_dir),
        alerts=_alerts(top.section("alerts", [f.name for f in attrs.fields(AlertsConfig)])),
        fleet=fleet,
        nats=parse_nats(top.section("nats", NATS_KEYS), base_dir, required=fleet.enabled),
    )


def _audit(s: Section, base_dir: str) -> AuditConfig:
    return AuditConfig(
        path=s.path("path", base_dir),
        busy_timeout_ms=s.integer("busy_timeout_ms", defaults(AuditConfig).busy_timeout_ms,
                                  minimum=1, maximum=600_000),
    )


def _alerts(s: Section) -> AlertsConfig:
    d = defaults(AlertsConfig)
    rules = []
    raw_rules = s.data.get("rules") or []
    if not isinstance(raw_rules, list):
        raise ConfigError("alerts.rules", "must be a list")
    r = defaults(AlertRule)
    names: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule = Section(join_key("alerts.rules", index), raw, RULE_KEYS)
        kind = rule.string("kind")
        if kind not in ALERT_KINDS:
            raise ConfigError(join_key(rule.key, "kind"), f"must be one of {', '.join(ALERT_KINDS)}")
        watch = rule.string("watch", r.watch)
        if watch not in ("always", "on_demand"):
            raise ConfigError(join_key(rule.key, "watch"), "must be always or on_demand")
        name = rule.string("name", kind)
        if name in names:
            raise ConfigError(join_key(rule.key, "name"), f"duplicate rule name {name!r}")
        names.add(name)
        rules.append(AlertRule(
            name=name, kind=kind,
            restarts=rule.integer("restarts", r.restarts, minimum=1, maximum=100_000),
            within_minutes=rule.number("within_minutes", r.within_minutes, minimum=0.01,
                                       maximum=1440),
            seconds=rule.number("seconds", r.seconds, minimum=0, maximum=86_400),
            watch=watch))
    raw_hooks = s.data.get("webhooks") or []
    if not isinstance(raw_hooks, list):
        raise ConfigError("alerts.webhooks", "must be a list")
    hooks = []
    for index, raw in enumerate(raw_hooks):
        hook = Section(join_key("alerts.webhooks", index), raw, WEBHOOK_KEYS)
        url = hook.string("url")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ConfigError(join_key(hook.key, "url"), "must be an http:// or https:// URL")
        headers = hook.data.get("headers") or {}
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ConfigError(join_key(hook.key, "headers"), "must map header names to strings")
        hooks.append(WebhookConfig(url=url, headers=tuple(sorted(headers.items())),
                                   timeout_seconds=hook.number("timeout_seconds",
                                                               defaults(WebhookConfig).timeout_seconds,
                                                               minimum=0.1, maximum=120)))
    return AlertsConfig(
        rules=tuple(rules), webhooks=tuple(hooks),
        queue_limit=s.integer("queue_limit", d.queue_limit, minimum=1, maximum=100_000),
        max_attempts=s.integer("max_attempts", d.max_attempts, minimum=1, maximum=100))


def _metrics(s: Section, base_dir: str) -> MetricsConfig:
    if not s.has("listen"):
        return MetricsConfig()
    return MetricsConfig(listen=metrics_listen("metrics.listen", s.string("listen"), base_dir))


def _listen(s: Section) -> ListenConfig:
    bind = s.string("bind")
    host, sep, port_text = bind.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise ConfigError(join_key(s.key, "bind"),
                          "must be IP:port, e.g. \"127.0.0.1:9443\"") from None
    if not sep or not 0 <= port <= 65535:
        raise ConfigError(join_key(s.key, "bind"), "must be IP:port with a port 0-65535")
    url = s.string("public_url")
    parts = urlsplit(url)
    if parts.scheme != "wss" or not parts.hostname:
        raise ConfigError(join_key(s.key, "public_url"),
                          "must be a wss:// URL, e.g. \"wss://localhost:9443/supervisor\"")
    origins_key = join_key(s.key, "allowed_origins")
    origins = []
    for index, raw in enumerate(s.string_list("allowed_origins",
                                              list(defaults(ListenConfig).allowed_origins))):
        origin = normalize_origin(raw)
        if origin is None:
            raise ConfigError(join_key(origins_key, index),
                              "must be an exact origin, scheme://host[:port] with no path or "
                              "wildcard, e.g. \"https://dashboard.example:8443\"")
        origins.append(origin)
    return ListenConfig(host=host, port=port, public_url=url, allowed_origins=tuple(origins))


def _dashboard(s: Section, base_dir: str) -> DashboardConfig:
    if not s.has("static_dir"):
        return DashboardConfig()
    static_dir = s.path("static_dir", base_dir)
    if not os.path.isfile(os.path.join(static_dir, "index.html")):
        raise ConfigError(join_key(s.key, "static_dir"),
                          f"{static_dir} must be a folder with an index.html")
    return DashboardConfig(static_dir=static_dir)


def _tls(s: Section, base_dir: str, *, mtls: bool) -> TLSConfig:
    ca: str | None = None
    if mtls or s.has("client_ca_path"):
        ca = s.path("client_ca_path", base_dir)
    return TLSConfig(
        certificate_path=s.path("certificate_path", base_dir),
        private_key_path=s.path("private_key_path", base_dir),
        client_ca_path=ca,
    )


def _proxy(s: Section) -> TrustedProxyConfig:
    d = defaults(TrustedProxyConfig)
    enabled = s.boolean("enabled", d.enabled)
    addrs = s.string_list("allowed_remote_addrs", list(d.allowed_remote_addrs))
    for index, addr in enumerate(addrs):
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ConfigError(join_key(join_key(s.key, "allowed_remote_addrs"), index),
                              "must be an IP address") from None
    if enabled and not addrs:
        raise ConfigError(join_key(s.key, "allowed_remote_addrs"),
                          "must list at least one address when the trusted proxy is enabled")
    header = s.string("identity_header", d.identity_header).strip().lower()
    return TrustedProxyConfig(enabled=enabled, allowed_remote_addrs=tuple(addrs),
                              identity_header=header)


def _registration(s: Section, base_dir: str) -> RegistrationConfig:
    listen_path = s.path("listen_path", base_dir)
    if len(os.fsencode(listen_path)) >= MAX_UNIX_SOCKET_PATH_BYTES:
        # the relay binds ``.<name>`` beside the path (one byte longer) and links the path
        raise ConfigError(join_key(s.key, "listen_path"),
                          f"socket path is longer than {MAX_UNIX_SOCKET_PATH_BYTES - 1} bytes")
    prefixes_key = join_key(s.key, "allowed_ipc_path_prefixes")
    raw_prefixes = s.string_list("allowed_ipc_path_prefixes")
    if not raw_prefixes:
        raise ConfigError(prefixes_key, "must list at least one directory")
    prefixes = []
    for index, raw in enumerate(raw_prefixes):
        prefixes.append(resolve_path(join_key(prefixes_key, index), raw, base_dir).rstrip("/")
                        or "/")
    d = defaults(RegistrationConfig)
    max_lease = s.integer("max_lease_seconds", d.max_lease_seconds, minimum=1,
                          maximum=LEASE_SECONDS_RANGE[1])
    default_lease = s.integer("default_lease_seconds", d.default_lease_seconds, minimum=1,
                              maximum=LEASE_SECONDS_RANGE[1])
    if default_lease > max_lease:
        raise ConfigError(join_key(s.key, "default_lease_seconds"),
                          "must not exceed registration.max_lease_seconds")
    return RegistrationConfig(
        listen_path=listen_path,
        permissions=s.permissions("permissions", d.permissions),
        allowed_ipc_path_prefixes=tuple(prefixes),
        default_lease_seconds=default_lease,
        max_lease_seconds=max_lease,
        **_ownership(s),
    )


OWNERSHIP_KEYS = ("owner_quiet_period_seconds", "max_owner_records", "pinned_owners")


def _ownership(s: Section) -> dict[str, Any]:
    """The target-id ownership keys of ``registration`` (quiet period, bound, pins)."""
    d = defaults(RegistrationConfig)
    key = join_key(s.key, "pinned_owners")
    raw = s.data.get("pinned_owners") or {}
    if not isinstance(raw, dict):
        raise ConfigError(key, "must map target ids to uids, e.g. {payments-worker-a: 1001}")
    pins = []
    for target_id, uid in raw.items():
        if not isinstance(target_id, str) or not target_id.strip():
            raise ConfigError(key, f"{target_id!r} is not a target id")
        if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid < 2 ** 32:
            raise ConfigError(join_key(key, target_id), "must be a uid (an integer >= 0)")
        pins.append((target_id, uid))
    return {
        "owner_quiet_period_seconds": s.integer(
            "owner_quiet_period_seconds", d.owner_quiet_period_seconds, minimum=1,
            maximum=10 * 365 * 24 * 3600),
        "max_owner_records": s.integer("max_owner_records", d.max_owner_records, minimum=1,
                                       maximum=1_000_000),
        "pinned_owners": tuple(sorted(pins)),
    }


def _authorization(s: Section) -> AuthorizationConfig:
    raw = s.data.get("operators") or []
    key = join_key(s.key, "operators")
    if not isinstance(raw, list):
        raise ConfigError(key, "must be a list of {principal, commands}")
    grants = []
    for index, item in enumerate(raw):
        entry = Section(join_key(key, index), item, ["principal", "commands"])
        principal = entry.string("principal").strip()
        commands_value = entry.data.get("commands")
        commands_key = join_key(entry.key, "commands")
        if commands_value == "all":
            commands = frozenset(COMMANDS)
        elif isinstance(commands_value, list):
            names = entry.string_list("commands")
            for c_index, name in enumerate(names):
                if name not in COMMANDS:
                    raise ConfigError(join_key(commands_key, c_index),
                                      f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
            commands = frozenset(names)
        else:
            raise ConfigError(commands_key, "must be \"all\" or a list of command names")
        grants.append(OperatorGrant(principal=principal, commands=commands))
    return AuthorizationConfig(operators=tuple(grants))


def _limits(s: Section) -> LimitsConfig:
    d = defaults(LimitsConfig)
    return LimitsConfig(
        max_sessions=s.integer("max_sessions", d.max_sessions, minimum=1),
        max_message_bytes=s.integer("max_message_bytes", d.max_message_bytes, minimum=1024),
        session_queue=s.integer("session_queue", d.session_queue, minimum=16),
        session_queue_bytes=s.integer("session_queue_bytes", d.session_queue_bytes,
                                      minimum=65536, maximum=1024 * 1024 * 1024),
        max_targets=s.integer("max_targets", d.max_targets, minimum=1),
        max_registration_connections=s.integer(
            "max_registration_connections", d.max_registration_connections, minimum=1),
        max_ipc_line_bytes=s.integer("max_ipc_line_bytes", d.max_ipc_line_bytes,
                                     minimum=65536),
        max_ipc_in_flight=s.integer("max_ipc_in_flight", d.max_ipc_in_flight, minimum=1),
        max_commands_in_flight=s.integer("max_commands_in_flight", d.max_commands_in_flight,
                                         minimum=1),
        audit_replay=s.integer("audit_replay", d.audit_replay, minimum=0, maximum=10000),
        **_flood_limits(s, d),
    )


def _flood_limits(s: Section, d: LimitsConfig) -> dict[str, Any]:
    """The flood bounds of ``limits`` (sizes, rates, the command id window, replay bytes)."""
    return dict(
        max_reason_chars=s.integer("max_reason_chars", d.max_reason_chars, minimum=1,
                                   maximum=1_000_000),
        max_manifest_bytes=s.integer("max_manifest_bytes", d.max_manifest_bytes, minimum=1,
                                     maximum=16 * 1024 * 1024),
        commands_per_second=s.number("commands_per_second", d.commands_per_second,
                                     minimum=0.001, maximum=100_000),
        commands_burst=s.integer("commands_burst", d.commands_burst, minimum=1,
                                 maximum=1_000_000),
        rejected_per_second=s.number("rejected_per_second", d.rejected_per_second,
                                     minimum=0.001, maximum=100_000),
        rejected_burst=s.integer("rejected_burst", d.rejected_burst, minimum=1,
                                 maximum=1_000_000),
        filter_changes_per_second=s.number("filter_changes_per_second",
                                           d.filter_changes_per_second, minimum=0.001,
                                           maximum=100_000),
        filter_changes_burst=s.integer("filter_changes_burst", d.filter_changes_burst,
                                       minimum=1, maximum=1_000_000),
        command_id_window_seconds=s.number("command_id_window_seconds",
                                           d.command_id_window_seconds, minimum=0,
                                           maximum=7 * 86_400),
        command_id_window_size=s.integer("command_id_window_size", d.command_id_window_size,
                                         minimum=1, maximum=10_000_000),
        audit_replay_max_bytes=s.integer("audit_replay_max_bytes", d.audit_replay_max_bytes,
                                         minimum=1024, maximum=256 * 1024 * 1024),
    )


def _timeouts(s: Section) -> TimeoutsConfig:
    d = defaults(TimeoutsConfig)
    seconds = {}
    for name in ("registration_read_seconds", "ipc_connect_seconds", "ipc_request_seconds",
                 "ipc_keepalive_seconds",
                 "http_idle_seconds", "http_request_headers_seconds",
                 "websocket_open_handshake_seconds",
                 "websocket_close_handshake_seconds", "websocket_frame_seconds",
                 "auto_ping_interval_seconds",
                 "auto_ping_timeout_seconds"):
        seconds[name] = s.number(name, getattr(d, name), minimum=0.01, maximum=86400)
    initial = s.integer("reconnect_initial_ms", d.reconnect_initial_ms, minimum=1)
    maximum = s.integer("reconnect_max_ms", d.reconnect_max_ms, minimum=1)
    if maximum < initial:
        raise ConfigError(join_key(s.key, "reconnect_max_ms"),
                          "must be >= timeouts.reconnect_initial_ms")
    return TimeoutsConfig(
        **seconds,
        reconnect_initial_ms=initial,
        reconnect_max_ms=maximum,
        reconnect_jitter_ratio=s.number("reconnect_jitter_ratio", d.reconnect_jitter_ratio,
                                        minimum=0, maximum=1),
        lease_sweep_interval_ms=s.integer("lease_sweep_interval_ms",
                                          d.lease_sweep_interval_ms, minimum=10,
                                          maximum=60_000),
    )
