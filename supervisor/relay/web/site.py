"""The HTTPS resource tree: ``/`` the dashboard page, static assets, ``/supervisor`` the WS.

Static files come from ``dashboard.static_dir`` (default ``supervisor/relay/web/static/``,
owned by the dashboard); when it has no ``index.html`` a small placeholder page is served.
A missing path whose last segment has no file extension is a client-side route and gets
``index.html``; a missing file is 404. Directory listings are disabled, paths cannot leave
the folder, and every file is sent with the dashboard's Content-Security-Policy.
``/supervisor`` without a WebSocket upgrade is ``426 Upgrade Required``.
"""

from __future__ import annotations

import os
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web import http, pages, resource, static
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from supervisor.config.relay import RelayConfig
from supervisor.relay.web.protocol import DashboardServerFactory

__all__ = ["STATIC_DIR", "build_site", "DashboardRoot", "RelaySite", "SessionResource"]

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}

#: sent with every static file; the same policy as our index.html's meta element, so a
#: dashboard served from ``dashboard.static_dir`` runs under the same rules
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'")

PLACEHOLDER = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Supervisor relay</title></head>
<body><h1>Supervisor relay</h1>
<p>The dashboard files are not installed. The session WebSocket is at <code>/supervisor</code>.</p>
</body></html>
"""


class _StaticFiles(static.File):
    """static.File with our content types, no directory listings and no caching surprises;
    its error pages are twisted.web.pages' (which escape what they show)."""

    contentTypes = {**static.File.contentTypes, **CONTENT_TYPES}
    childNotFound = pages.notFound()
    forbidden = pages.forbidden()

    def directoryListing(self) -> IResource:
        return pages.notFound(message="No directory listings.")

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY.encode())
        return super().render_GET(request)

    #: served for a client-side route (see :func:`_is_route`); None: plain 404
    route_index: str | None = None

    def getChild(self, path: bytes, request: Request) -> IResource:
        child = super().getChild(path, request)
        if (child is not self.childNotFound or self.route_index is None
                or not _is_route(request) or not os.path.isfile(self.route_index)):
            return child
        index = _StaticFiles(self.route_index)
        index.isLeaf = True  # the rest of the route's path is the client's, not a folder's
        return index

    def createSimilarFile(self, path: str) -> "static.File":
        f = _StaticFiles(path, self.defaultType, self.ignoredExts, self.registry)
        f.processors = self.processors
        f.indexNames = self.indexNames[:]
        f.childNotFound = self.childNotFound
        f.route_index = self.route_index
        return f


class _UpgradeOnly(resource.Resource):
    """``/supervisor``: the WebSocket resource for upgrade requests, else 426."""

    isLeaf = True

    def __init__(self, ws: resource.Resource) -> None:
        super().__init__()
        self._ws = ws

    def render(self, request: Request) -> Any:
        upgrade = request.getHeader(b"upgrade") or b""
        if upgrade.strip().lower() == b"websocket":
            return self._ws.render(request)
        request.setResponseCode(426, b"Upgrade Required")
        request.setHeader(b"upgrade", b"websocket")
        request.setHeader(b"connection", b"Upgrade")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return b"This is the dashboard session WebSocket: connect with a WebSocket client.\n"


class DashboardRoot(resource.Resource):
    """``/`` → index.html (or the placeholder), ``/supervisor`` → WebSocket, else a file;
    a missing extension-less path (a client-side route) → index.html."""

    def __init__(self, static_dir: str, ws: resource.Resource) -> None:
        super().__init__()
        self._static_dir = static_dir
        self.putChild(b"supervisor", _UpgradeOnly(ws))

    def _index(self) -> IResource:
        index = os.path.join(self._static_dir, "index.html")
        if os.path.isfile(index):
            return _StaticFiles(index)
        return static.Data(PLACEHOLDER, "text/html; charset=utf-8")

    def getChild(self, name: bytes, request: Request) -> IResource:
        if name in (b"", b"index.html"):
            return self._index()
        if not os.path.isdir(self._static_dir):
            return pages.notFound()
        files = _StaticFiles(self._static_dir)
        files.route_index = os.path.join(self._static_dir, "index.html")
        return files.getChild(name, request)

    def render_GET(self, request: Request) -> bytes:
        # "https://host:port" with no trailing slash
        request.redirect(b"/")
        return b""


class SessionResource(WebSocketResource):
    """``/supervisor``: the WebSocket, refused (403) when the trusted-proxy identity header
    appears more than once. twisted.web would hand autobahn the values joined with ``,``:
    an identity no proxy asserted."""

    log = Logger()

    def __init__(self, factory: DashboardServerFactory, identity_header: str | None) -> None:
        super().__init__(factory)
        self._identity_header = (identity_header.encode("utf-8")
                                 if identity_header is not None else None)

    def render(self, request: Request) -> bytes:
        header = self._identity_header
        if header is not None and len(request.requestHeaders.getRawHeaders(header, [])) > 1:
            self.log.warn("session from {peer} refused: more than one {header} header",
                          peer=request.getClientAddress(), header=header.decode("utf-8"))
            request.setResponseCode(http.FORBIDDEN)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"more than one identity header\n"
        return super().render(request)


#: on every HTTP response: no page of the relay may be shown inside another site's frame
#: (clickjacking with the operator's certificate); ``X-Frame-Options`` for older browsers
FRAMING_HEADERS = ((b"content-security-policy", b"frame-ancestors 'none'"),
                   (b"x-frame-options", b"DENY"))

TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
             b"content-length: 33\r\nconnection: close\r\n\r\n"
             b"request header fields too large\r\n")


class _RelayRequest(Request):
    """A request whose response, whatever resource renders it, refuses to be framed."""

    def process(self) -> None:
        for name, value in FRAMING_HEADERS:
            self.setHeader(name, value)
        super().process()


def _is_route(request: Request) -> bool:
    """Whether a request that found no file names a client-side route: a GET whose last
    path segment has no extension (``/targets/a`` is a route, ``/app.js`` a missing file)."""
    if request.method not in (b"GET", b"HEAD"):
        return False
    last = request.path.rstrip(b"/").rsplit(b"/", 1)[-1]
    return b"." not in last


class _HeaderDeadlineChannel(http.HTTPChannel):
    """An HTTPChannel whose request headers must be complete ``headers_deadline`` seconds
    after their first byte arrived.

    Twisted's idle timeout restarts on every byte, so a slowloris peer sending one header
    byte at a time would hold a connection (and its TLS state) for hours; autobahn's opening
    handshake timeout only starts once the upgrade request is complete. The time before the
    first byte (TCP accept, TLS handshake) is bounded by the idle timeout, which no TLS
    handshake byte resets. The deadline starts again with the next request's first byte.

    A request line and headers over ``max_header_bytes`` (line ends included) are answered
    ``431 Request Header Fields Too Large`` and the connection is closed.
    """

    log = Logger()
    headers_deadline: float = 10.0
    max_header_bytes: int = http.HTTPChannel.totalHeadersSize
    _deadline_call: IDelayedCall | None = None
    _in_request = False  # headers of the current request are complete; it is being handled
    _header_bytes = 0  # of the request whose headers are being read
    _refused = False  # answered 431: nothing more is read

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_request and data:
            if self._deadline_call is None:
                self._deadline_call = self.callLater(self.headers_deadline,
                                                     self._headersTooSlow)
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._headersTooLarge()
                return
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancelDeadline()
        self._in_request = True
        self._header_bytes = 0
        super().allHeadersReceived()

    def requestDone(self, request: Request) -> None:
        self._in_request = False
        super().requestDone(request)

    def _headersTooLarge(self) -> None:
        self._refused = True
        self._cancelDeadline()
        peer = self.transport.getPeer() if self.transport is not None else None
        self.log.info("request headers from {peer} over {limit} bytes; answered 431",
                      peer=peer, limit=self.max_header_bytes)
        if self.transport is not None:
            self.transport.write(TOO_LARGE)
            self.transport.loseConnection()

    def _headersTooSlow(self) -> None:
        self._deadline_call = None
        peer = self.transport.getPeer() if self.transport is not None else None
        self.log.info("request headers from {peer} incomplete after {seconds:g} s; closing",
                      peer=peer, seconds=self.headers_deadline)
        if self.transport is not None:
            self.transport.abortConnection()

    def _cancelDeadline(self) -> None:
        call, self._deadline_call = self._deadline_call, None
        if call is not None and call.active():
            call.cancel()

    def connectionLost(self, reason: Any) -> None:
        self._cancelDeadline()
        super().connectionLost(reason)


class RelaySite(Site):
    """``Site`` whose channels enforce the request-headers deadline and size (see above) and
    whose responses carry :data:`FRAMING_HEADERS`; HTTP/1.1 only (the WebSocket upgrade
    needs nothing else)."""

    protocol = _HeaderDeadlineChannel

    def __init__(self, root: resource.Resource, *, headers_deadline: float, **kw: Any) -> None:
        kw.setdefault("requestFactory", _RelayRequest)
        super().__init__(root, **kw)
        self.headers_deadline = headers_deadline

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.headers_deadline = self.headers_deadline
        return channel


def build_site(config: RelayConfig, hub: Any, *, reactor: Any,
               static_dir: str = STATIC_DIR) -> Site:
    """The Site served on the relay's TLS listener."""
    factory = DashboardServerFactory(config, hub, reactor=reactor)
    proxy = config.trusted_proxy
    root = DashboardRoot(static_dir, SessionResource(
        factory, proxy.identity_header if proxy.enabled else None))
    site = RelaySite(root, timeout=config.timeouts.http_idle_seconds, reactor=reactor,
                     headers_deadline=config.timeouts.http_request_headers_seconds)
    site.displayTracebacks = False
    site.noisy = False
    return site
