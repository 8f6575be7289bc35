"""``GatewayService``: the fleet gateway as one MultiService (bus, directory, hub, HTTPS/WSS).

The sessions' side is the relay's: the same hub, site, TLS listener, authorization, audit
store and metrics listener; only the registry (the fleet directory) and the links (remote
links over the bus) differ.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from supervisor.config.gateway import GatewayConfig
from supervisor.fleet.bus import Bus
from supervisor.fleet.nats import BusCollector, NatsBus
from supervisor.fleet.gateway import DirectoryCollector, FleetDirectory, GatewayCommands, \
    gateway_principal
from supervisor.relay.audit import AuditStore
from supervisor.relay.hub import RelayHub
from supervisor.relay.service import open_audit, serve_dashboard
from supervisor.wire.metrics import MetricsService

__all__ = ["GatewayService"]


class GatewayService(MultiService):
    """Everything ``twistd supervisor-fleet`` runs; ``reactor`` and ``bus`` are explicit
    for tests (by default the real NATS bus of ``nats``)."""

    log = Logger()

    def __init__(self, config: GatewayConfig, reactor: Any = None, *, bus: Bus | None = None,
                 principal: str | None = None, static_dir: str | None = None,
                 reload_on_sighup: bool = False) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self._reload_on_sighup = reload_on_sighup
        self._previous_sighup: Any = None
        self.principal = principal if principal is not None else gateway_principal(config.nats)
        if bus is None:
            bus = NatsBus(config.nats, reactor, "fleet-gateway")
        self.bus = bus
        self.directory = FleetDirectory(bus, config.gateway, clock=reactor,
                                        principal=self.principal,
                                        max_targets=config.limits.max_targets)
        self.audit = AuditStore(config.audit.path, reactor,
                                busy_timeout_ms=config.audit.busy_timeout_ms)
        self.hub = RelayHub(config, self.directory, self.audit,  # type: ignore[arg-type]
                            reactor=reactor, link_factory=self.directory.link_for,
                            processor=GatewayCommands)
        self.audit.observe_write = self.hub.metrics.audit_write.observe
        self.hub.metrics.observe_hub(self.hub)
        self.hub.metrics.registry.register(DirectoryCollector(self.directory))
        if isinstance(bus, NatsBus):
            self.hub.metrics.registry.register(BusCollector(bus))
        #: the ``/metrics`` listener (``metrics.listen``), or ``None``
        self.metrics: MetricsService | None = None
        if config.metrics.listen is not None:
            self.metrics = MetricsService(reactor, config.metrics.listen,
                                          self.hub.metrics.registry, what="gateway metrics")
            self.metrics.setServiceParent(self)
        watcher = TimerService(config.timeouts.lease_sweep_interval_ms / 1000.0,
                               self.audit.check)
        watcher.clock = reactor
        watcher.setServiceParent(self)
        self.tls, self.site, self._https = serve_dashboard(self, config, self.hub, reactor,
                                                           static_dir)
        self.audit_ready: Deferred[None] = succeed(None)

    @property
    def https_port(self) -> int:
        """The TCP port actually listened on (useful with ``bind: 127.0.0.1:0``)."""
        assert self._https.port is not None, "gateway is not listening"
        return self._https.port.getHost().port

    def reload_tls(self) -> str | None:
        """Re-read the session listener's certificates (``SIGHUP``); None, or why not."""
        return self.tls.reload()

    def _sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload_tls)

    def startService(self) -> None:
        if self._reload_on_sighup:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        self.audit_ready = open_audit(self.audit, self.hub, self.log)
        start = getattr(self.bus, "start", None)
        if start is not None:
            start()
        self.directory.start()
        self.log.info("fleet gateway {principal} (instance {instance}) started",
                      principal=self.principal, instance=self.directory.instance_id)
        super().startService()

    def stopService(self) -> Deferred[Any]:
        if self._reload_on_sighup and self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        self.hub.close()
        self.directory.stop()
        d = super().stopService()

        def stop_bus(_: Any) -> Any:
            stop = getattr(self.bus, "stop", None)
            return maybeDeferred(stop) if stop is not None else None

        def close_audit(_: Any) -> Deferred[None]:
            return self.audit.close()

        d.addBoth(stop_bus)
        d.addBoth(close_audit)
        return d
