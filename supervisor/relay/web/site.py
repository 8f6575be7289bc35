"""The HTTPS resource tree: ``/`` the dashboard page, static assets, ``/supervisor`` the WS.

Static files come from ``supervisor/relay/web/static/`` (owned by the dashboard); when it
has no ``index.html`` a small placeholder page is served. Directory listings are disabled.
"""

from __future__ import annotations

import os
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.web import resource, static
from twisted.web.server import Request, Site

from supervisor.config.relay import RelayConfig
from supervisor.relay.web.protocol import DashboardServerFactory

__all__ = ["STATIC_DIR", "build_site", "DashboardRoot"]

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

PLACEHOLDER = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Supervisor relay</title></head>
<body><h1>Supervisor relay</h1>
<p>The dashboard files are not installed. The session WebSocket is at <code>/supervisor</code>.</p>
</body></html>
"""


class _StaticFiles(static.File):
    """static.File with our content types, no directory listings and no caching surprises."""

    contentTypes = {**static.File.contentTypes, **CONTENT_TYPES}

    def directoryListing(self) -> resource.Resource:
        return resource.NoResource("no directory listings")

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-cache")
        return super().render_GET(request)

    def createSimilarFile(self, path: str) -> "static.File":
        f = _StaticFiles(path, self.defaultType, self.ignoredExts, self.registry)
        f.processors = self.processors
        f.indexNames = self.indexNames[:]
        f.childNotFound = self.childNotFound
        return f


class DashboardRoot(resource.Resource):
    """``/`` → index.html (or the placeholder), ``/supervisor`` → WebSocket, else a file."""

    def __init__(self, static_dir: str, ws: resource.Resource) -> None:
        super().__init__()
        self._static_dir = static_dir
        self.putChild(b"supervisor", ws)

    def getChild(self, name: bytes, request: Request) -> resource.Resource:
        if name in (b"", b"index.html"):
            index = os.path.join(self._static_dir, "index.html")
            if os.path.isfile(index):
                return _StaticFiles(index)
            return static.Data(PLACEHOLDER, "text/html; charset=utf-8")
        if not os.path.isdir(self._static_dir):
            return resource.NoResource()
        return _StaticFiles(self._static_dir).getChild(name, request)

    def render_GET(self, request: Request) -> bytes:
        # "https://host:port" with no trailing slash
        request.redirect(b"/")
        return b""


def build_site(config: RelayConfig, hub: Any, *, reactor: Any,
               static_dir: str = STATIC_DIR) -> Site:
    """The Site served on the relay's TLS listener."""
    factory = DashboardServerFactory(config, hub, reactor=reactor)
    root = DashboardRoot(static_dir, WebSocketResource(factory))
    site = Site(root, timeout=config.timeouts.http_idle_seconds, reactor=reactor)
    site.displayTracebacks = False
    site.noisy = False
    return site
