"""A plain HTTP GET on the running reactor, for tests that scrape a metrics page."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, ResponseDone


class _Body(Protocol):
    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self.done = done
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason) -> None:
        if reason.check(ResponseDone) or reason.type.__name__ == "PotentialDataLoss":
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


async def get(url: str) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """``(status, headers, body)`` of one GET."""
    response = await Agent(reactor).request(b"GET", url.encode())
    done: defer.Deferred[bytes] = defer.Deferred()
    response.deliverBody(_Body(done))
    body = await done
    return response.code, dict(response.headers.getAllRawHeaders()), body
