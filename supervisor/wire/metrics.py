"""Prometheus exposition over Twisted: a ``/metrics`` page and the listener that serves it.

``prometheus_client.twisted.MetricsResource`` renders on the reactor's thread pool, so its
collectors would read live objects from another thread; this page renders on the reactor
thread instead, with the same ``generate_latest``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

#: seconds an idle scrape connection stays open
IDLE_TIMEOUT_SECONDS = 30


class MetricsPage(Resource):
    """``GET /metrics``: the registry in the Prometheus text format, rendered now."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self._registry)


def metrics_site(registry: CollectorRegistry) -> Site:
    """A site serving only ``/metrics``."""
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    site = Site(root, timeout=IDLE_TIMEOUT_SECONDS)
    site.displayTracebacks = False
    return site


class MetricsService(Service):
    """Listens on a Twisted server endpoint description (``unix:PATH``, ``tcp:PORT:interface=…``)."""

    _log = Logger()

    def __init__(self, reactor: Any, description: str, registry: CollectorRegistry,
                 what: str = "metrics") -> None:
        self._reactor = reactor
        self._description = description
        self._site = metrics_site(registry)
        self._what = what
        self.port: IListeningPort | None = None
        #: fires with the listening port, or ``None`` when listening failed (logged)
        self.listening: Deferred[IListeningPort | None] = Deferred()

    def startService(self) -> None:
        Service.startService(self)
        d = serverFromString(self._reactor, self._description).listen(self._site)

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            self._log.info("{what} served on {address}", what=self._what, address=port.getHost())
            return port

        def failed(f: Any) -> None:
            self._log.error("{what} cannot listen on {where}: {error}", what=self._what,
                            where=self._description, error=f.getErrorMessage())

        d.addCallbacks(listening, failed).chainDeferred(self.listening)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return port.stopListening()  # type: ignore[return-value]
