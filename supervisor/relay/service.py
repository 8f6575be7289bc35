"""``RelayService``: the relay as one MultiService (registration, sweeper, HTTPS/WSS, audit)."""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.server import Site

from supervisor.config.relay import RelayConfig
from supervisor.relay.audit import AuditStore
from supervisor.relay.hub import RelayHub
from supervisor.relay.registration import RegistrationFactory, RegistrationListener
from supervisor.relay.registry import LeaseSweeper, Registry
from supervisor.relay.tls import ReloadableServerTLS
from supervisor.relay.web.site import STATIC_DIR, build_site

__all__ = ["RelayService"]


class _HTTPSListener(Service):
    """Listens for HTTPS/WSS on ``listen.bind`` (binding in privilegedStartService)."""

    log = Logger()

    def __init__(self, endpoint: SSL4ServerEndpoint, site: Site) -> None:
        self._endpoint = endpoint
        self._site = site
        self.port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def _listen(self) -> Deferred[IListeningPort]:
        if self._listening is None:
            failures: list[Any] = []
            d = self._endpoint.listen(self._site)
            d.addCallbacks(self._bound, failures.append)
            if failures:  # TCP listening is synchronous: surface errors to twistd at once
                failures[0].raiseException()
            self._listening = d
        return self._listening

    def _bound(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        self.log.info("HTTPS/WSS listening on {address}", address=port.getHost())
        return port

    def startService(self) -> None:
        super().startService()
        self._listen()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port, self._listening = self.port, None, None
        if port is not None:
            return port.stopListening()
        return None


class RelayService(MultiService):
    """Everything ``twistd supervisor-relay`` runs; ``reactor`` is explicit for tests."""

    log = Logger()

    def __init__(self, config: RelayConfig, reactor: Any = None, *,
                 static_dir: str = STATIC_DIR, reload_on_sighup: bool = False) -> None:
        super().__init__()
        self._reload_on_sighup = reload_on_sighup
        self._previous_sighup: Any = None
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.registry = Registry(reactor, config.limits.max_targets)
        self.audit = AuditStore(config.audit.path, reactor,
                                busy_timeout_ms=config.audit.busy_timeout_ms)
        self.hub = RelayHub(config, self.registry, self.audit, reactor=reactor)

        registration = RegistrationFactory(
            config.registration, self.registry, reactor,
            read_timeout=config.timeouts.registration_read_seconds,
            max_line_bytes=config.limits.max_message_bytes,
            max_connections=config.limits.max_registration_connections,
        )
        sweep_interval = config.timeouts.lease_sweep_interval_ms / 1000.0
        self.registration = RegistrationListener(reactor, registration,
                                                 check_interval=sweep_interval)
        self.registration.setServiceParent(self)
        LeaseSweeper(self.registry, reactor, sweep_interval).setServiceParent(self)

        self.tls = ReloadableServerTLS(config.tls, require_client_certificate=config.mtls)
        endpoint = SSL4ServerEndpoint(reactor, config.listen.port, self.tls,
                                      interface=config.listen.host)
        self.site = build_site(config, self.hub, reactor=reactor, static_dir=static_dir)
        self.https = _HTTPSListener(endpoint, self.site)
        self.https.setServiceParent(self)
        self.audit_ready: Deferred[None] = succeed(None)

    @property
    def https_port(self) -> int:
        """The TCP port actually listened on (useful with ``bind: 127.0.0.1:0``)."""
        assert self.https.port is not None, "relay is not listening"
        return self.https.port.getHost().port

    def reload_tls(self) -> str | None:
        """Re-read the TLS certificate, key and client CA for new connections (``SIGHUP``).

        Returns None on success, else why the previous certificates stay in force."""
        return self.tls.reload()

    def _sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload_tls)

    def startService(self) -> None:
        if self._reload_on_sighup:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        self.audit_ready = self.audit.open()
        self.audit_ready.addErrback(
            lambda f: self.log.critical(
                "audit store {path} cannot be opened; commands will be refused: {error}",
                path=self.config.audit.path, error=f.getErrorMessage()))
        super().startService()

    def stopService(self) -> Deferred[Any]:
        if self._reload_on_sighup and self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        self.hub.close()
        d = super().stopService()

        def close_audit(_: Any) -> Deferred[None]:
            return self.audit.close()

        d.addBoth(close_audit)
        return d
