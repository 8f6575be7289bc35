"""``twistd supervisor-fleet``: the fleet gateway's options and service maker (no reactor
import at import time)."""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from supervisor.config._common import ConfigError
from supervisor.config.gateway import GatewayConfig, load_gateway_config

__all__ = ["Options", "makeService", "check_config"]

DEFAULT_TWISTD_PIDFILE = "twistd.pid"
GATEWAY_PIDFILE = "supervisor-fleet.pid"


def check_config(config: GatewayConfig) -> str:
    """Validate what a config points at (the session listener's certificates and the NATS
    client certificate) without starting anything; returns the gateway's principal."""
    from supervisor.fleet.gateway import gateway_principal
    from supervisor.relay.tls import ReloadableServerTLS, check_certificates, \
        load_pem_certificates

    ReloadableServerTLS(config.tls, require_client_certificate=config.mtls)
    check_certificates(config.tls, require_client_certificate=config.mtls,
                       public_url=config.listen.public_url if config.mtls else None)
    assert config.nats.tls is not None  # required by the loader
    load_pem_certificates("nats.tls.ca_path", config.nats.tls.ca_path)
    try:
        with open(config.nats.tls.private_key_path, "rb"):
            pass
    except OSError as e:
        raise ConfigError("nats.tls.private_key_path",
                          f"cannot read {config.nats.tls.private_key_path}: "
                          f"{e.strerror or e}") from None
    return gateway_principal(config.nats)


class Options(usage.Options):
    """Command line of ``twistd supervisor-fleet``."""

    synopsis = "--config FILE [--check]"
    optParameters = [["config", "c", None, "fleet gateway YAML configuration file"]]
    optFlags = [["check", None, "validate the configuration, print ok and exit"]]

    gateway_config: GatewayConfig | None = None
    principal: str | None = None

    def postOptions(self) -> None:
        if self.parent is not None and self.parent.get("pidfile") == DEFAULT_TWISTD_PIDFILE:
            # a gateway, a relay and a target can then run side by side in one folder
            self.parent["pidfile"] = GATEWAY_PIDFILE
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            self.gateway_config = load_gateway_config(self["config"])
            self.principal = check_config(self.gateway_config)
        except ConfigError as e:
            # the error alone, without twistd's usage text (with --check and at start)
            sys.stderr.write(f"{self['config']}: {e}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None
        if self["check"]:
            sys.stdout.write("ok\n")
            sys.stdout.flush()
            raise SystemExit(0)


def makeService(options: Options) -> Any:
    """Build the GatewayService from validated options."""
    import txaio
    from twisted.internet import reactor

    from supervisor._signals import StopOnce
    from supervisor.fleet.service import GatewayService

    txaio.set_global_log_level("info")
    config = options.gateway_config
    if config is None:
        config = load_gateway_config(options["config"])
    StopOnce(reactor).install()
    return GatewayService(config, principal=options.principal, reload_on_sighup=True)
