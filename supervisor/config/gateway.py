"""The fleet gateway's YAML configuration (``twistd supervisor-fleet --config fleet.yaml``).

The sessions' side (``listen``, ``tls``, ``trusted_proxy``, ``authorization``, ``audit``,
``limits``, ``timeouts``, ``dashboard``, ``metrics``) is read by the relay's own section
parsers, so a key means the same on both; ``nats`` is the shared fleet section (required
here), and ``gateway`` holds what only a gateway has.
"""

from __future__ import annotations

import os
from typing import Any

import attrs

from supervisor.config._common import ConfigError, Section, defaults, load_yaml_mapping
from supervisor.config.fleet import NATS_KEYS, NatsConfig, parse_nats
from supervisor.config.relay import (
    AlertsConfig, AuditConfig, AuthorizationConfig, DashboardConfig, LimitsConfig,
    ListenConfig, MetricsConfig, TimeoutsConfig, TLSConfig, TrustedProxyConfig, _audit,
    _authorization, _dashboard, _limits, _listen, _metrics, _proxy, _timeouts, _tls,
)

__all__ = ["ConfigError", "GatewaySettings", "GatewayConfig", "GATEWAY_KEYS",
           "load_gateway_config", "parse_gateway_config"]


@attrs.frozen
class GatewaySettings:
    """How the gateway watches hosts and asks them for things."""

    #: a host that sent no heartbeat for this long is unavailable (its targets too)
    host_timeout_ms: int = 2000
    #: the bind lease asked of hosts; renewed every third of it while sessions watch
    interest_lease_seconds: float = 10.0
    #: every request to a host (registry, bind, unbind, state, history) gives up after this
    request_timeout_seconds: float = 5.0
    #: hosts known at most; heartbeats of further hosts are ignored (counted)
    max_hosts: int = 1024


GATEWAY_KEYS = [f.name for f in attrs.fields(GatewaySettings)]


@attrs.frozen
class GatewayConfig:
    """Everything ``twistd supervisor-fleet`` needs."""

    listen: ListenConfig
    tls: TLSConfig
    trusted_proxy: TrustedProxyConfig
    authorization: AuthorizationConfig
    audit: AuditConfig
    nats: NatsConfig
    gateway: GatewaySettings = GatewaySettings()
    limits: LimitsConfig = LimitsConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    dashboard: DashboardConfig = DashboardConfig()
    metrics: MetricsConfig = MetricsConfig()
    #: the relay hub's alert rules: a gateway has none (hosts evaluate their own)
    alerts: AlertsConfig = AlertsConfig()
    source_path: str | None = None

    @property
    def mtls(self) -> bool:
        """True when identities come from client certificates (not a trusted proxy)."""
        return not self.trusted_proxy.enabled


def load_gateway_config(path: str) -> GatewayConfig:
    """Read and validate a gateway YAML file; relative paths are taken from its folder."""
    data = load_yaml_mapping(path)
    base_dir = os.path.dirname(os.path.abspath(path))
    return attrs.evolve(parse_gateway_config(data, base_dir), source_path=os.path.abspath(path))


def parse_gateway_config(data: Any, base_dir: str) -> GatewayConfig:
    """Validate an already-parsed mapping; ``base_dir`` anchors relative paths."""
    top = Section("", data, ["listen", "tls", "trusted_proxy", "authorization", "audit",
                             "limits", "timeouts", "dashboard", "metrics", "nats", "gateway"])
    proxy = _proxy(top.section("trusted_proxy",
                               ["enabled", "allowed_remote_addrs", "identity_header"]))
    limits = _limits(top.section("limits", [f.name for f in attrs.fields(LimitsConfig)]))
    if not top.has("nats"):
        raise ConfigError("nats", "is required: the NATS servers (tls://host:port) and the "
                                  "TLS files the gateway connects with")
    return GatewayConfig(
        listen=_listen(top.section("listen", ["bind", "public_url", "allowed_origins"])),
        tls=_tls(top.section("tls", ["certificate_path", "private_key_path", "client_ca_path"]),
                 base_dir, mtls=not proxy.enabled),
        trusted_proxy=proxy,
        authorization=_authorization(top.section("authorization", ["operators"])),
        audit=_audit(top.section("audit", ["path", "busy_timeout_ms"]), base_dir),
        nats=parse_nats(top.section("nats", NATS_KEYS), base_dir, required=True),
        gateway=_gateway(top.section("gateway", GATEWAY_KEYS)),
        limits=limits,
        timeouts=_timeouts(top.section("timeouts",
                                       [f.name for f in attrs.fields(TimeoutsConfig)])),
        dashboard=_dashboard(top.section("dashboard", ["static_dir"]), base_dir),
        metrics=_metrics(top.section("metrics", [f.name for f in attrs.fields(MetricsConfig)]),
                         base_dir),
    )


def _gateway(s: Section) -> GatewaySettings:
    d = defaults(GatewaySettings)
    return GatewaySettings(
        host_timeout_ms=s.integer("host_timeout_ms", d.host_timeout_ms, minimum=100,
                                  maximum=600_000),
        interest_lease_seconds=s.number("interest_lease_seconds", d.interest_lease_seconds,
                                        minimum=1, maximum=3600),
        request_timeout_seconds=s.number("request_timeout_seconds", d.request_timeout_seconds,
                                         minimum=0.1, maximum=300),
        max_hosts=s.integer("max_hosts", d.max_hosts, minimum=1, maximum=100_000),
    )
