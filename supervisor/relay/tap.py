"""``twistd supervisor-relay``: options and service maker (no reactor import at import time)."""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from supervisor.config._common import ConfigError
from supervisor.config.relay import RelayConfig, load_relay_config

__all__ = ["Options", "makeService", "check_config"]

DEFAULT_TWISTD_PIDFILE = "twistd.pid"
RELAY_PIDFILE = "supervisor-relay.pid"


def check_config(config: RelayConfig) -> None:
    """Validate what a config points at (certificates, keys) without starting anything.

    In trusted-proxy mode browsers reach the proxy, whose certificate names ``public_url``;
    the relay's own is then not checked against it."""
    from supervisor.relay.tls import ReloadableServerTLS, check_certificates

    ReloadableServerTLS(config.tls, require_client_certificate=config.mtls)
    check_certificates(config.tls, require_client_certificate=config.mtls,
                       public_url=config.listen.public_url if config.mtls else None)


class Options(usage.Options):
    """Command line of ``twistd supervisor-relay``."""

    synopsis = "--config FILE [--check]"
    optParameters = [["config", "c", None, "relay YAML configuration file"]]
    optFlags = [["check", None, "validate the configuration, print ok and exit"]]

    relay_config: RelayConfig | None = None

    def postOptions(self) -> None:
        if self.parent is not None and self.parent.get("pidfile") == DEFAULT_TWISTD_PIDFILE:
            # a relay and a target can then run side by side in one folder
            self.parent["pidfile"] = RELAY_PIDFILE
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            self.relay_config = load_relay_config(self["config"])
            check_config(self.relay_config)
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
    """Build the RelayService from validated options."""
    import txaio
    from twisted.internet import reactor

    from supervisor._signals import StopOnce
    from supervisor.relay.service import RelayService

    # autobahn logs every frame at debug level; a relay log should not
    txaio.set_global_log_level("info")
    config = options.relay_config
    if config is None:
        config = load_relay_config(options["config"])
    StopOnce(reactor).install()  # Ctrl-C and a launcher's SIGTERM together: one clean stop
    return RelayService(config, reload_on_sighup=True)
