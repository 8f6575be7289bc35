"""``RelayService``: the relay as one MultiService (registration, sweeper, HTTPS/WSS, audit)."""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor.config.relay import RelayConfig
from supervisor.relay.audit import AuditStore
from supervisor.relay.hub import RelayHub
from supervisor.relay.owners import OwnerBook, OwnerBookError, owners_path
from supervisor.relay.registration import RegistrationFactory, RegistrationListener
from supervisor.relay.registry import Registry
from supervisor.relay.tls import ReloadableServerTLS
from supervisor.relay.web.site import STATIC_DIR, build_site
from supervisor.wire.metrics import MetricsService

__all__ = ["RelayService", "serve_dashboard"]


@implementer(IStreamServerEndpoint)
class _ListenNow:
    """Wraps an endpoint whose ``listen`` completes at once (TCP, TLS): a bind error ends
    start-up (under twistd: with the message, no traceback) instead of being logged while
    the relay runs without its listener; the listening port is kept for ``port``."""

    log = Logger()

    def __init__(self, endpoint: IStreamServerEndpoint, what: str) -> None:
        self._endpoint = endpoint
        self._what = what
        self.port: IListeningPort | None = None

    def listen(self, factory: Factory) -> Deferred[IListeningPort]:
        outcome: list[Any] = []
        d = self._endpoint.listen(factory)
        d.addBoth(outcome.append)
        if outcome and isinstance(outcome[0], Failure):
            raise SystemExit(f"cannot listen for {self._what}: {outcome[0].getErrorMessage()}")
        if not outcome:
            raise SystemExit(f"listening for {self._what} did not complete at once")
        self.port = outcome[0]
        self.log.info("{what} listening on {address}", what=self._what,
                      address=self.port.getHost())
        return succeed(self.port)


def serve_dashboard(parent: MultiService, config: Any, hub: Any, reactor: Any,
                    static_dir: str | None = None
                    ) -> tuple[ReloadableServerTLS, Any, _ListenNow]:
    """The HTTPS/WSS listener (dashboard page and §3 sessions of ``hub``) as a child of
    ``parent``: its reloadable TLS, its site and its listener (``port`` once started)."""
    tls = ReloadableServerTLS(config.tls, require_client_certificate=config.mtls)
    endpoint = SSL4ServerEndpoint(reactor, config.listen.port, tls, interface=config.listen.host)
    # served at /: the argument (tests), else dashboard.static_dir, else our dashboard
    static_dir = static_dir or config.dashboard.static_dir or STATIC_DIR
    site = build_site(config, hub, reactor=reactor, static_dir=static_dir)
    https = _ListenNow(endpoint, f"HTTPS/WSS on {config.listen.host}:{config.listen.port}")
    StreamServerEndpointService(https, site).setServiceParent(parent)
    return tls, site, https


def open_audit(audit: AuditStore, hub: RelayHub, log: Logger) -> Deferred[None]:
    """Open the audit store and mark the commands an earlier run left interrupted; fires
    when both are done (failures are logged: commands are refused until it opens)."""
    opened = audit.open()
    # queued on the audit thread before any command's record can be: what it marks
    # interrupted was left by an earlier run
    recovered = Deferred.fromCoroutine(hub.commands.recover())
    opened.addErrback(
        lambda f: log.critical(
            "audit store {path} cannot be opened; commands will be refused: {error}",
            path=audit.path, error=f.getErrorMessage()))
    recovered.addErrback(
        lambda f: log.critical("cannot mark interrupted commands: {error}",
                               error=f.getErrorMessage()))
    return recovered


class RelayService(MultiService):
    """Everything ``twistd supervisor-relay`` runs; ``reactor`` is explicit for tests."""

    log = Logger()

    def __init__(self, config: RelayConfig, reactor: Any = None, *,
                 static_dir: str | None = None, reload_on_sighup: bool = False,
                 fleet_bus: Any = None) -> None:
        super().__init__()
        self._reload_on_sighup = reload_on_sighup
        self._previous_sighup: Any = None
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.owners = OwnerBook(owners_path(config), config.registration, reactor)
        self.registry = Registry(reactor, config.limits.max_targets, self.owners)
        self.audit = AuditStore(config.audit.path, reactor,
                                busy_timeout_ms=config.audit.busy_timeout_ms)
        self.hub = RelayHub(config, self.registry, self.audit, reactor=reactor)
        self.audit.observe_write = self.hub.metrics.audit_write.observe
        self.hub.metrics.observe_hub(self.hub)
        #: the ``/metrics`` listener (``metrics.listen``), or ``None``
        self.metrics: MetricsService | None = None
        if config.metrics.listen is not None:
            self.metrics = MetricsService(reactor, config.metrics.listen, self.hub.metrics.registry,
                                          what="relay metrics")
            self.metrics.setServiceParent(self)

        registration = RegistrationFactory(
            config.registration, self.registry, reactor,
            read_timeout=config.timeouts.registration_read_seconds,
            max_line_bytes=config.limits.max_message_bytes,
            max_connections=config.limits.max_registration_connections,
            on_refused=lambda code: self.hub.metrics.registration_refused.labels(code).inc(),
        )
        sweep_interval = config.timeouts.lease_sweep_interval_ms / 1000.0
        self.registration = RegistrationListener(reactor, registration,
                                                 check_interval=sweep_interval)
        self.registration.setServiceParent(self)
        sweeper = TimerService(sweep_interval, self._sweep)
        sweeper.clock = reactor
        sweeper.setServiceParent(self)
        # the audit file is watched like the registration socket: at the sweep cadence
        watcher = TimerService(sweep_interval, self.audit.check)
        watcher.clock = reactor
        watcher.setServiceParent(self)

        self.tls, self.site, self._https = serve_dashboard(self, config, self.hub, reactor,
                                                           static_dir)
        self.audit_ready: Deferred[None] = succeed(None)
        #: the relay's part in a fleet (``fleet.enabled``), on ``fleet_bus`` or NATS
        self.fleet: Any = None
        self._fleet_bus: Any = None
        if config.fleet.enabled:
            self._join_fleet(fleet_bus)

    def _join_fleet(self, bus: Any) -> None:
        # imported here: a relay outside a fleet never loads the NATS client
        from supervisor.fleet.host import FleetHost, HostCollector
        from supervisor.fleet.nats import BusCollector, NatsBus

        if bus is None:
            bus = NatsBus(self.config.nats, self.reactor, f"host-{self.config.fleet.host_id}")
            self.hub.metrics.registry.register(BusCollector(bus))
        self._fleet_bus = bus
        self.fleet = FleetHost(self.hub, bus, self.config.fleet, clock=self.reactor)
        self.hub.metrics.registry.register(HostCollector(self.fleet))

    @property
    def https_port(self) -> int:
        """The TCP port actually listened on (useful with ``bind: 127.0.0.1:0``)."""
        assert self._https.port is not None, "relay is not listening"
        return self._https.port.getHost().port

    def _sweep(self) -> None:
        """Expire registrations whose lease ended (a failure is logged; sweeping goes on)."""
        try:
            self.registry.sweep()
        except Exception:
            self.log.failure("lease sweep failed")

    def reload_tls(self) -> str | None:
        """Re-read the TLS certificate, key and client CA for new connections (``SIGHUP``).

        Returns None on success, else why the previous certificates stay in force."""
        return self.tls.reload()

    def _sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload_tls)

    def startService(self) -> None:
        # before the registration socket serves: no claim is judged without the book
        try:
            self.owners.lock()
        except OwnerBookError as e:
            raise SystemExit(f"cannot use the target owner file: {e}") from None
        except OSError as e:
            self.log.critical("target owner file {path} cannot be used: {error}; target-id "
                              "owners are kept in memory only (lost at a restart) until it "
                              "can be written", path=self.owners.path, error=str(e))
        try:
            self.owners.load()
        except OwnerBookError as e:
            self.owners.unlock()
            raise SystemExit(f"cannot use the target owner file: {e}; owners would be "
                             "forgotten (repair or remove it)") from None
        if self._reload_on_sighup:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        self.audit_ready = open_audit(self.audit, self.hub, self.log)
        super().startService()
        self.hub.start_alerts()
        if self.fleet is not None:
            start = getattr(self._fleet_bus, "start", None)
            if start is not None:
                start()
            self.fleet.start()

    def stopService(self) -> Deferred[Any]:
        if self._reload_on_sighup and self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        if self.fleet is not None:
            self.fleet.stop()
        self.hub.close()
        d = super().stopService()
        if self._fleet_bus is not None and hasattr(self._fleet_bus, "stop"):
            bus = self._fleet_bus
            d.addBoth(lambda _: maybeDeferred(bus.stop))

        def close_audit(_: Any) -> Deferred[None]:
            self.owners.flush()
            self.owners.unlock()
            return self.audit.close()

        d.addBoth(close_audit)
        return d
