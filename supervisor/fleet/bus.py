"""The message bus the fleet speaks over, as the Twisted side sees it, and an in-memory one.

``Bus`` is what host relays and gateways use: publish, subscribe, request/reply, each
non-blocking on the reactor thread, every handler called on the reactor thread. The real bus
(``supervisor.fleet.nats.NatsBus``) carries it over NATS; :class:`MemoryBus` delivers within
one process, with NATS's subject wildcards and optional per-client publish permissions, for
unit tests of fleet logic.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import attrs
from twisted.internet.defer import Deferred

from supervisor.wire.errors import WireError

__all__ = ["Bus", "BusMessage", "BusSubscription", "MemoryBus", "MemoryNetwork",
           "subject_matches", "bus_timeout", "bus_unavailable"]


@attrs.frozen
class BusMessage:
    """One message as delivered: its subject, its bytes and where to reply (or ``None``)."""

    subject: str
    data: bytes
    reply: str | None = None


class BusSubscription(Protocol):
    """A subscription's handle."""

    def unsubscribe(self) -> None: ...


Handler = Callable[[BusMessage], None]


class Bus(Protocol):
    """Publish/subscribe/request on subjects (NATS semantics: at most once, ordered per
    publisher and subject). Nothing here blocks; what cannot be sent is counted in
    ``dropped`` by the implementation, never queued without bound."""

    @property
    def connected(self) -> bool: ...

    def on_connection(self, callback: Callable[[bool], None]) -> None:
        """``callback(True|False)`` on the reactor thread whenever the connection changes."""

    def publish(self, subject: str, data: bytes) -> None: ...

    def subscribe(self, subject: str, handler: Handler) -> BusSubscription: ...

    def request(self, subject: str, data: bytes, timeout: float) -> "Deferred[bytes]":
        """The reply's bytes; fails with :class:`WireError` ``bus_timeout`` after ``timeout``
        seconds, or ``bus_unavailable`` when there is no connection or nobody listens."""

    def reply(self, message: BusMessage, data: bytes) -> None:
        """Answer a request (nothing when it carried no reply subject)."""


def bus_timeout(subject: str, timeout: float) -> WireError:
    return WireError("bus_timeout", "fleet", f"no reply on {subject} within {timeout:g} s",
                     None, True)


def bus_unavailable(subject: str, why: str) -> WireError:
    return WireError("bus_unavailable", "fleet", f"cannot send on {subject}: {why}", None, True)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want = pattern.split(".")
    have = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


class MemoryNetwork:
    """The shared "server" of :class:`MemoryBus` clients: delivers on ``clock`` turns
    (``callLater(0, …)``), never synchronously, as a real server would."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.up = True
        self.clients: list[MemoryBus] = []
        self._subscriptions: list[tuple[str, MemoryBus, Handler]] = []
        self._inbox = 0
        #: every (client name, subject) refused for lack of publish permission
        self.violations: list[tuple[str, str]] = []

    def client(self, name: str, publish: tuple[str, ...] | None = None) -> "MemoryBus":
        """A new connected client; ``publish`` (patterns) limits what it may publish to."""
        bus = MemoryBus(self, name, publish)
        self.clients.append(bus)
        return bus

    def set_up(self, up: bool) -> None:
        """Take the whole network down or bring it back (every client is told)."""
        self.up = up
        for client in self.clients:
            client.set_connected(up)

    def next_inbox(self) -> str:
        self._inbox += 1
        return f"_INBOX.{self._inbox}"

    def add(self, pattern: str, client: "MemoryBus", handler: Handler) -> None:
        self._subscriptions.append((pattern, client, handler))

    def remove(self, pattern: str, client: "MemoryBus", handler: Handler) -> None:
        self._subscriptions = [s for s in self._subscriptions
                               if s != (pattern, client, handler)]

    def listeners(self, subject: str) -> int:
        return sum(1 for pattern, client, _ in self._subscriptions
                   if client.connected and subject_matches(pattern, subject))

    def deliver(self, sender: "MemoryBus", message: BusMessage) -> None:
        if not self.up or not sender.connected:
            sender.dropped += 1
            return
        if not sender.may_publish(message.subject):
            self.violations.append((sender.name, message.subject))
            return
        for pattern, client, handler in list(self._subscriptions):
            if client.connected and subject_matches(pattern, message.subject):
                self.clock.callLater(0, client.handle, pattern, handler, message)


@attrs.define(eq=False)
class _MemorySubscription:
    network: MemoryNetwork
    client: "MemoryBus"
    pattern: str
    handler: Handler

    def unsubscribe(self) -> None:
        self.network.remove(self.pattern, self.client, self.handler)


class MemoryBus:
    """One client of a :class:`MemoryNetwork` (implements :class:`Bus`)."""

    def __init__(self, network: MemoryNetwork, name: str,
                 publish: tuple[str, ...] | None = None) -> None:
        self.network = network
        self.name = name
        self._publish = publish
        self._connected = network.up
        self._watchers: list[Callable[[bool], None]] = []
        #: messages not sent because the network was down
        self.dropped = 0
        #: every message this client published, in order (for assertions)
        self.sent: list[BusMessage] = []

    @property
    def connected(self) -> bool:
        return self._connected

    def set_connected(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            for watcher in list(self._watchers):
                watcher(connected)

    def on_connection(self, callback: Callable[[bool], None]) -> None:
        self._watchers.append(callback)

    def may_publish(self, subject: str) -> bool:
        if subject.startswith("_INBOX."):
            return True  # replies, as nats-server's allow_responses
        return self._publish is None or any(subject_matches(p, subject) for p in self._publish)

    def publish(self, subject: str, data: bytes, reply: str | None = None) -> None:
        message = BusMessage(subject, bytes(data), reply)
        self.sent.append(message)
        self.network.deliver(self, message)

    def subscribe(self, subject: str, handler: Handler) -> _MemorySubscription:
        self.network.add(subject, self, handler)
        return _MemorySubscription(self.network, self, subject, handler)

    def handle(self, pattern: str, handler: Handler, message: BusMessage) -> None:
        if self._connected and (pattern, self, handler) in self.network._subscriptions:
            handler(message)

    def request(self, subject: str, data: bytes, timeout: float) -> "Deferred[bytes]":
        d: Deferred[bytes] = Deferred()
        if not self._connected or not self.network.up:
            d.errback(bus_unavailable(subject, "not connected"))
            return d
        if not self.network.listeners(subject):
            d.errback(bus_unavailable(subject, "no responders"))
            return d
        inbox = self.network.next_inbox()

        def answered(message: BusMessage) -> None:
            subscription.unsubscribe()
            if timer.active():
                timer.cancel()
            if not d.called:
                d.callback(message.data)

        def expired() -> None:
            subscription.unsubscribe()
            if not d.called:
                d.errback(bus_timeout(subject, timeout))

        subscription = self.subscribe(inbox, answered)
        timer = self.network.clock.callLater(timeout, expired)
        self.publish(subject, data, inbox)
        return d

    def reply(self, message: BusMessage, data: bytes) -> None:
        if message.reply is not None:
            self.publish(message.reply, data)
