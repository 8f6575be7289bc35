"""The ``nats:`` and ``fleet:`` sections: how a host relay or a gateway reaches NATS, and how a
host relay takes part in the fleet. Shared by the relay's and the gateway's configuration."""

from __future__ import annotations

from urllib.parse import urlsplit

import attrs

from supervisor.config._common import ConfigError, Section, defaults, join_key
from supervisor.fleet.subjects import valid_host_id

__all__ = ["NatsTLSConfig", "NatsConfig", "FleetConfig", "NATS_KEYS", "FLEET_KEYS",
           "parse_nats", "parse_fleet"]


@attrs.frozen
class NatsTLSConfig:
    """The CA that signed the NATS servers, and this client's certificate and key."""

    ca_path: str
    certificate_path: str
    private_key_path: str


@attrs.frozen
class NatsConfig:
    """NATS servers (``tls://host:port``, tried in turn) and the client's TLS material."""

    servers: tuple[str, ...] = ()
    tls: NatsTLSConfig | None = None
    #: connecting (and each reconnect attempt) gives up after this long
    connect_timeout_seconds: float = 2.0
    #: bytes of outgoing messages held while NATS is slow or away; past it the oldest
    #: stream messages are dropped (counted)
    max_pending_bytes: int = 8 * 1024 * 1024


@attrs.frozen
class FleetConfig:
    """A host relay's part in a fleet: its id, who may ask it for things, how often it
    says it is alive."""

    enabled: bool = False
    host_id: str = ""
    #: principals (certificate subjects, as §3) of the gateways whose requests are served
    trusted_gateways: tuple[str, ...] = ()
    heartbeat_ms: int = 500
    #: a gateway's bind lease, when its request names none
    interest_lease_seconds: float = 10.0


NATS_KEYS = ["servers", "tls", "connect_timeout_seconds", "max_pending_bytes"]
FLEET_KEYS = ["enabled", "host_id", "trusted_gateways", "heartbeat_ms",
              "interest_lease_seconds"]


def parse_nats(s: Section, base_dir: str, *, required: bool) -> NatsConfig:
    """Validate ``nats:``; ``required`` when the fleet is on (servers and TLS must be set)."""
    d = defaults(NatsConfig)
    servers = s.string_list("servers", [] if not required else None) if (
        required or s.has("servers")) else []
    if required and not servers:
        raise ConfigError(join_key(s.key, "servers"), "must list at least one server")
    for index, server in enumerate(servers):
        parts = urlsplit(server)
        if parts.scheme != "tls" or not parts.hostname or parts.port is None:
            raise ConfigError(join_key(join_key(s.key, "servers"), index),
                              "must be tls://host:port (NATS connections use TLS)")
    tls = None
    if required or s.has("tls"):
        t = s.section("tls", ["ca_path", "certificate_path", "private_key_path"])
        tls = NatsTLSConfig(ca_path=t.path("ca_path", base_dir),
                            certificate_path=t.path("certificate_path", base_dir),
                            private_key_path=t.path("private_key_path", base_dir))
    return NatsConfig(
        servers=tuple(servers),
        tls=tls,
        connect_timeout_seconds=s.number("connect_timeout_seconds", d.connect_timeout_seconds,
                                         minimum=0.1, maximum=60),
        max_pending_bytes=s.integer("max_pending_bytes", d.max_pending_bytes,
                                    minimum=64 * 1024, maximum=1024 ** 3),
    )


def parse_fleet(s: Section) -> FleetConfig:
    """Validate ``fleet:`` (a host relay's)."""
    d = defaults(FleetConfig)
    enabled = s.boolean("enabled", d.enabled)
    host_id = s.string("host_id", "" if not enabled else None, non_blank=enabled)
    if enabled and not valid_host_id(host_id):
        raise ConfigError(join_key(s.key, "host_id"),
                          "must be 1-64 letters, digits, '_' or '-' (one NATS subject token)")
    gateways = s.string_list("trusted_gateways", [])
    if enabled and not gateways:
        raise ConfigError(join_key(s.key, "trusted_gateways"),
                          "must list at least one gateway principal when the fleet is enabled")
    return FleetConfig(
        enabled=enabled,
        host_id=host_id,
        trusted_gateways=tuple(g.strip() for g in gateways),
        heartbeat_ms=s.integer("heartbeat_ms", d.heartbeat_ms, minimum=50, maximum=60_000),
        interest_lease_seconds=s.number("interest_lease_seconds", d.interest_lease_seconds,
                                        minimum=1, maximum=3600),
    )
