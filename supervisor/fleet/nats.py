"""The fleet's real bus: :class:`NatsBus`, the :class:`~supervisor.fleet.bus.Bus` interface over
NATS (nats-py), with TLS client certificates and endless reconnection.

nats-py is asyncio; it runs on its own event loop in one daemon thread, so the Twisted reactor
(epoll, as the single-host relay has it) is untouched. The two threads meet in two bounded
queues: outgoing (publish, reply, request, subscribe) appended on the reactor thread and
drained by the loop thread in batches (one wake per batch), and incoming deliveries appended
on the loop thread and handed to the handlers on the reactor thread in batches
(``reactor.callFromThread`` once per batch). Nothing here blocks the reactor.

Outgoing bytes are bounded by ``NatsConfig.max_pending_bytes``: past it the oldest queued
*droppable* message goes (stream messages by default; see ``droppable``), else the oldest
message of any kind; each is counted in :attr:`NatsBus.dropped`. While NATS is away the queue
holds what is published (within that bound) and sends it on reconnection.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import threading
import time
from typing import Any, Callable

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from supervisor.config.fleet import NatsConfig
from supervisor.fleet.bus import BusMessage, Handler, bus_timeout, bus_unavailable, subject_matches
from supervisor.fleet.subjects import MAX_PAYLOAD_BYTES, PREFIX

__all__ = ["NatsBus", "NatsSubscription", "BusCollector", "default_droppable", "tls_context"]

#: per-message bookkeeping counted against the bound, besides subject and payload
_OVERHEAD = 64
#: outgoing items one drain pass takes before letting nats-py's reader run, and incoming
#: deliveries one reactor turn hands to handlers
_BATCH = 512
#: how long the reactor lets deliveries gather after the first before taking them
DISPATCH_DELAY_SECONDS = 0.002
#: requests awaiting a reply at once; more fail at once with ``bus_unavailable``
MAX_REQUESTS_IN_FLIGHT = 1024
#: what nats-py itself buffers while a reconnection is under way (≥ the max payload)
_CLIENT_PENDING_BYTES = 2 * MAX_PAYLOAD_BYTES
#: one log line per this many seconds for repeated errors (the rest are only counted)
_LOG_INTERVAL = 5.0

_QUEUED, _SENT, _DROPPED = 0, 1, 2


def default_droppable(subject: str) -> bool:
    """Stream messages may be dropped under pressure (the gateway sees the ``seq`` gap);
    heartbeats, registries, requests and replies are kept while anything droppable is left."""
    return subject_matches(f"{PREFIX}.host.*.stream.*", subject)


def tls_context(config: NatsConfig) -> ssl.SSLContext:
    """A client context: the servers verified against the CA, this client's certificate."""
    if config.tls is None:
        raise ValueError("nats.tls is required (NATS connections use TLS)")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.tls.ca_path)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls.certificate_path, config.tls.private_key_path)
    return context


@attrs.define(eq=False)
class _Out:
    """One outgoing item: a publish (``reply`` set for a request's), a request, or a
    subscription change."""

    kind: str  # "publish" | "request" | "subscribe" | "unsubscribe"
    subject: str
    data: bytes = b""
    droppable: bool = False
    reply: str = ""
    size: int = 0
    state: int = _QUEUED
    deferred: Deferred | None = None
    timeout: float = 0.0
    timer: Any = None
    subscription: "NatsSubscription | None" = None


@attrs.define(eq=False)
class NatsSubscription:
    """A subscription's handle (implements ``BusSubscription``)."""

    bus: "NatsBus"
    subject: str
    handler: Handler
    active: bool = True
    nats_subscription: Any = None

    def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            self.bus._enqueue(_Out("unsubscribe", self.subject, subscription=self))


class _LogLimiter:
    """At most one line per interval for one kind of trouble; the others are counted."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = -interval
        self.suppressed = 0

    def allow(self) -> int | None:
        """``None`` to stay quiet, else how many were suppressed since the last line."""
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return None
        self.last = now
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


class NatsBus:
    """:class:`~supervisor.fleet.bus.Bus` over NATS (see the module docstring).

    Counters, for metrics (read on the reactor thread; written under a lock):
    ``published`` messages handed to NATS, ``dropped`` messages not sent (of which
    ``dropped_overflow`` for the outgoing bound, ``dropped_oversize`` for being over the max
    payload), ``dropped_incoming`` deliveries lost because the reactor fell behind by more
    than the bound, ``permission_violations`` publishes or subscriptions the server refused,
    ``errors`` every error nats-py reported, ``disconnects`` and ``reconnects``."""

    log = Logger()

    def __init__(self, config: NatsConfig, reactor: Any, name: str, *,
                 droppable: Callable[[str], bool] = default_droppable,
                 reconnect_time_wait: float = 0.25, ping_interval: float = 0.6,
                 max_outstanding_pings: int = 2,
                 dispatch_delay: float = DISPATCH_DELAY_SECONDS) -> None:
        if not config.servers:
            raise ValueError("nats.servers lists no server")
        self.config = config
        self.reactor = reactor
        self.name = name
        self._droppable_subject = droppable
        self._reconnect_time_wait = reconnect_time_wait
        # a server that stops answering is noticed after about
        # ping_interval * (max_outstanding_pings + 1) seconds
        self._ping_interval = ping_interval
        self._max_outstanding_pings = max_outstanding_pings
        self._bound = config.max_pending_bytes
        self._dispatch_delay = dispatch_delay

        self._lock = threading.Lock()
        self._out: collections.deque[_Out] = collections.deque()
        self._out_droppable: collections.deque[_Out] = collections.deque()
        self._out_bytes = 0
        self._out_dead = 0
        self._out_kicked = False
        self._in: collections.deque[tuple[NatsSubscription, BusMessage]] = collections.deque()
        self._in_bytes = 0
        self._in_kicked = False

        self._connected = False
        self._ever_connected: Deferred[None] | None = Deferred()
        self._watchers: list[Callable[[bool], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._wake: asyncio.Event | None = None
        self._nc: Any = None
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped: Deferred[None] | None = None
        self._requests_in_flight = 0
        self._error_log = _LogLimiter(_LOG_INTERVAL)
        self._violation_log = _LogLimiter(1.0)

        self.published = 0
        self.dropped = 0
        self.dropped_overflow = 0
        self.dropped_oversize = 0
        self.dropped_incoming = 0
        self.permission_violations = 0
        self.errors = 0
        self.disconnects = 0
        self.reconnects = 0
        #: the last error nats-py reported, as text, and the few before it (for diagnostics)
        self.last_error = ""
        self.recent_errors: collections.deque[str] = collections.deque(maxlen=8)

    # -- the Bus interface (reactor thread) -------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending_bytes(self) -> int:
        """Bytes queued for NATS and not yet handed to it."""
        return self._out_bytes

    @property
    def pending_messages(self) -> int:
        return len(self._out) - self._out_dead

    @property
    def incoming_bytes(self) -> int:
        """Bytes of deliveries received and not yet handed to their handlers."""
        return self._in_bytes

    def on_connection(self, callback: Callable[[bool], None]) -> None:
        self._watchers.append(callback)

    def publish(self, subject: str, data: bytes) -> None:
        self._publish(subject, bytes(data), self._droppable_subject(subject))

    def reply(self, message: BusMessage, data: bytes) -> None:
        if message.reply is not None:
            self._publish(message.reply, bytes(data), False)

    def subscribe(self, subject: str, handler: Handler) -> NatsSubscription:
        subscription = NatsSubscription(self, subject, handler)
        self._enqueue(_Out("subscribe", subject, subscription=subscription))
        return subscription

    def request(self, subject: str, data: bytes, timeout: float) -> "Deferred[bytes]":
        item = _Out("request", subject, bytes(data), timeout=timeout)
        d: Deferred[bytes] = Deferred(lambda _: self._cancel_request(item))
        item.deferred = d
        if not self._connected:
            d.errback(bus_unavailable(subject, "not connected to NATS"))
            return d
        if len(data) > MAX_PAYLOAD_BYTES:
            d.errback(bus_unavailable(subject, f"request over {MAX_PAYLOAD_BYTES} bytes"))
            return d
        if self._requests_in_flight >= MAX_REQUESTS_IN_FLIGHT:
            d.errback(bus_unavailable(subject, "too many requests awaiting replies"))
            return d
        self._requests_in_flight += 1
        item.size = len(subject) + len(data) + _OVERHEAD
        item.timer = self.reactor.callLater(timeout, self._settle, item, None,
                                            bus_timeout(subject, timeout))
        self._enqueue(item)
        return d

    # -- lifecycle (reactor thread) ---------------------------------------------------------

    def start(self) -> "Deferred[None]":
        """Start the loop thread and connect in the background; fires at once (a relay must
        start while NATS is down). :meth:`when_connected` fires on the first connection."""
        if self._thread is not None:
            return succeed(None)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._thread_main, name=f"nats-{self.name}",
                                        daemon=True)
        self._thread.start()
        return succeed(None)

    def when_connected(self) -> "Deferred[None]":
        """Fires when the bus is (or, the first time, becomes) connected."""
        d: Deferred[None] = Deferred()
        if self._ever_connected is None:
            d.callback(None)
        else:
            self._ever_connected.addBoth(lambda result: (d.callback(None), result)[1])
        return d

    def stop(self) -> "Deferred[None]":
        """Send what is queued (a short while at most), close the connection, end the
        thread. Pending requests fail with ``bus_unavailable``."""
        if self._stopped is not None:
            return self._stopped
        self._stopped = Deferred()
        self._stopping = True
        if self._loop is None or self._thread is None:
            self._stopped.callback(None)
            return self._stopped
        self._loop.call_soon_threadsafe(self._begin_shutdown)
        return self._stopped

    # -- queues ------------------------------------------------------------------------------

    def _publish(self, subject: str, data: bytes, droppable: bool) -> None:
        if len(data) > MAX_PAYLOAD_BYTES:
            with self._lock:
                self.dropped += 1
                self.dropped_oversize += 1
            self._log_error("publish on {subject} dropped: {size} bytes is over the maximum "
                            "payload", subject=subject, size=len(data))
            return
        self._enqueue(_Out("publish", subject, data, droppable=droppable,
                           size=len(subject) + len(data) + _OVERHEAD))

    def _enqueue(self, item: _Out) -> None:
        if self._stopping and item.kind != "unsubscribe":
            self._lost(item, "the bus is stopping")
            return
        victims: list[_Out] = []
        wake = False
        with self._lock:
            self._out.append(item)
            self._out_bytes += item.size
            if item.droppable:
                self._out_droppable.append(item)
            while self._out_bytes > self._bound:
                victim = self._oldest_victim()
                if victim is None:
                    break
                victim.state = _DROPPED
                self._out_bytes -= victim.size
                self._out_dead += 1
                self.dropped += 1
                self.dropped_overflow += 1
                victims.append(victim)
            self._prune()
            if not self._out_kicked:
                self._out_kicked = wake = True
        for victim in victims:
            if victim.kind == "request":
                self._settle(victim, None, bus_unavailable(victim.subject,
                                                           "outgoing queue full"))
        if wake and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._kick)
            except RuntimeError:  # the loop is closed: the bus has stopped
                pass

    def _oldest_victim(self) -> _Out | None:
        """Under the lock: the oldest queued droppable item, else the oldest sized one."""
        while self._out_droppable:
            candidate = self._out_droppable.popleft()
            if candidate.state == _QUEUED:
                return candidate
        for candidate in self._out:
            if candidate.state == _QUEUED and candidate.size:
                return candidate
        return None

    def _prune(self) -> None:
        """Under the lock: forget items already sent or dropped (compacting when many)."""
        while self._out and self._out[0].state != _QUEUED:
            self._out.popleft()
            self._out_dead -= 1
        while self._out_droppable and self._out_droppable[0].state != _QUEUED:
            self._out_droppable.popleft()
        if self._out_dead > 64 and self._out_dead * 2 > len(self._out):
            self._out = collections.deque(i for i in self._out if i.state == _QUEUED)
            self._out_droppable = collections.deque(
                i for i in self._out_droppable if i.state == _QUEUED)
            self._out_dead = 0

    def _take_batch(self) -> list[_Out]:
        """Loop thread: up to ``_BATCH`` queued items, oldest first."""
        batch: list[_Out] = []
        with self._lock:
            while self._out and len(batch) < _BATCH:
                item = self._out.popleft()
                if item.state != _QUEUED:
                    self._out_dead -= 1
                    continue
                item.state = _SENT
                self._out_bytes -= item.size
                batch.append(item)
            while self._out_droppable and self._out_droppable[0].state != _QUEUED:
                self._out_droppable.popleft()
            if not self._out:
                self._out_kicked = False
        return batch

    def _lost(self, item: _Out, why: str) -> None:
        """An item that will never be sent: counted, and a request's Deferred fails."""
        if item.kind in ("publish", "request"):
            with self._lock:
                self.dropped += 1
        if item.kind == "request":
            self.reactor.callFromThread(self._settle, item, None,
                                        bus_unavailable(item.subject, why))

    def _deliver(self, subscription: NatsSubscription, message: BusMessage) -> None:
        """Loop thread: queue a delivery for the reactor (oldest lost past the bound)."""
        wake = False
        with self._lock:
            self._in.append((subscription, message))
            self._in_bytes += len(message.data) + _OVERHEAD
            while self._in_bytes > self._bound and len(self._in) > 1:
                _, old = self._in.popleft()
                self._in_bytes -= len(old.data) + _OVERHEAD
                self.dropped_incoming += 1
            if not self._in_kicked:
                self._in_kicked = wake = True
        if wake:
            self.reactor.callFromThread(self._dispatch_soon)

    def _dispatch_soon(self) -> None:
        """Reactor thread: dispatch after ``dispatch_delay``, so that what arrives meanwhile
        (from many hosts, one message each) is handed over, and written to sessions, in one
        turn rather than one turn and one write per session for every message."""
        if self._dispatch_delay > 0:
            self.reactor.callLater(self._dispatch_delay, self._dispatch)
        else:
            self._dispatch()

    def _dispatch(self) -> None:
        """Reactor thread: hand up to ``_BATCH`` queued deliveries to their handlers, and
        come back on the next turn for the rest, so that what the handlers wrote (to
        sessions) goes out between batches instead of piling up behind one long turn."""
        with self._lock:
            n = min(len(self._in), _BATCH)
            batch = [self._in.popleft() for _ in range(n)]
            self._in_bytes -= sum(len(m.data) + _OVERHEAD for _, m in batch)
            more = bool(self._in)
            if not more:
                self._in_kicked = False
        if more:
            self.reactor.callLater(0, self._dispatch)
        for subscription, message in batch:
            if not subscription.active:
                continue
            try:
                subscription.handler(message)
            except Exception:
                self.log.failure("bus handler for {subject} failed", subject=message.subject)

    # -- reactor-side completions ----------------------------------------------------------

    def _settle(self, item: _Out, data: bytes | None, error: Exception | None) -> None:
        d = item.deferred
        if d is None or d.called:
            return
        if item.state == _QUEUED:
            with self._lock:
                if item.state == _QUEUED:  # timed out or cancelled before it was sent
                    item.state = _DROPPED
                    self._out_bytes -= item.size
                    self._out_dead += 1
                    self._prune()
        item.deferred = None
        self._requests_in_flight -= 1
        if item.timer is not None and item.timer.active():
            item.timer.cancel()
        if error is not None:
            d.errback(error)
        else:
            d.callback(data)

    def _cancel_request(self, item: _Out) -> None:
        self._settle(item, None, bus_unavailable(item.subject, "request cancelled"))

    def _connection_changed(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        if connected:
            self.log.info("NATS bus {name} connected", name=self.name)
        else:
            self.log.warn("NATS bus {name} disconnected", name=self.name)
        for watcher in list(self._watchers):
            try:
                watcher(connected)
            except Exception:
                self.log.failure("bus connection watcher failed")
        if connected and self._ever_connected is not None:
            waiting, self._ever_connected = self._ever_connected, None
            waiting.callback(None)

    def _log_error(self, format: str, **fields: Any) -> None:
        """Reactor thread: one line per interval (the rest are counted in ``errors``)."""
        suppressed = self._error_log.allow()
        if suppressed is not None:
            self.log.warn(format + " ({suppressed} similar before, not logged)", name=self.name,
                          suppressed=suppressed, **fields)

    def _log_violation(self, text: str) -> None:
        suppressed = self._violation_log.allow()
        if suppressed is not None:
            self.log.error("NATS refused bus {name}: {error} ({suppressed} refusals before, "
                           "not logged)", name=self.name, error=text, suppressed=suppressed)

    def _finished(self) -> None:
        """Reactor thread: the loop thread has ended."""
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._connected:
            self._connection_changed(False)
        with self._lock:
            left = [i for i in self._out if i.state == _QUEUED]
            self._out.clear()
            self._out_droppable.clear()
            self._out_bytes = 0
            self._out_dead = 0
        for item in left:
            if item.kind in ("publish", "request"):
                self.dropped += 1
            if item.kind == "request":
                self._settle(item, None, bus_unavailable(item.subject, "the bus stopped"))
        if self._stopped is not None and not self._stopped.called:
            self._stopped.callback(None)

    # -- the loop thread ---------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        self._wake = asyncio.Event()
        self._main = loop.create_task(self._run())
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()
            self.reactor.callFromThread(self._finished)

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        import nats  # nats-py: loaded only where a bus runs

        self._nc = nats.NATS()
        drainer = asyncio.get_running_loop().create_task(self._drainer())
        try:
            await self._nc.connect(
                servers=list(self.config.servers),
                tls=tls_context(self.config),
                name=self.name,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                connect_timeout=self.config.connect_timeout_seconds,
                reconnect_time_wait=self._reconnect_time_wait,
                ping_interval=self._ping_interval,
                max_outstanding_pings=self._max_outstanding_pings,
                pending_size=_CLIENT_PENDING_BYTES,
                dont_randomize=False,
            )
        except asyncio.CancelledError:
            drainer.cancel()
            raise
        self.reactor.callFromThread(self._connection_changed, True)
        self._kick()
        await drainer

    async def _drainer(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._nc is not None and self._nc.is_connected:
                batch = self._take_batch()
                if not batch:
                    break
                for item in batch:
                    await self._send(item)
                await asyncio.sleep(0)

    async def _send(self, item: _Out) -> None:
        nc = self._nc
        try:
            if item.kind == "publish":
                await nc.publish(item.subject, item.data, reply=item.reply)
                with self._lock:
                    self.published += 1
            elif item.kind == "request":
                asyncio.get_running_loop().create_task(self._request(item))
            elif item.kind == "subscribe":
                subscription = item.subscription
                assert subscription is not None
                if subscription.active:
                    subscription.nats_subscription = await nc.subscribe(
                        item.subject, cb=self._callback(subscription),
                        # nats-py's own queue before our callback: it only ever holds what
                        # one read parsed (the callback never waits), so this rarely binds
                        pending_msgs_limit=65536,
                        pending_bytes_limit=self._bound + 4 * MAX_PAYLOAD_BYTES)
            elif item.kind == "unsubscribe":
                subscription = item.subscription
                if subscription is not None and subscription.nats_subscription is not None:
                    await subscription.nats_subscription.unsubscribe()
                    subscription.nats_subscription = None
        except Exception as e:  # a closed connection, a bad subject, a full client buffer
            self._lost(item, str(e) or type(e).__name__)
            text = f"{type(e).__name__}: {e}"
            self.reactor.callFromThread(self._log_error, "bus {name}: {kind} on {subject} "
                                        "failed: {error}", kind=item.kind,
                                        subject=item.subject, error=text)

    def _callback(self, subscription: NatsSubscription) -> Callable[[Any], Any]:
        async def received(msg: Any) -> None:
            self._deliver(subscription, BusMessage(msg.subject, bytes(msg.data),
                                                   msg.reply or None))
        return received

    async def _request(self, item: _Out) -> None:
        from nats import errors

        if item.state == _DROPPED or item.deferred is None:
            return  # timed out or cancelled while queued
        try:
            msg = await self._nc.request(item.subject, item.data, timeout=item.timeout)
        except errors.NoRespondersError:
            result: tuple[bytes | None, Exception | None] = (
                None, bus_unavailable(item.subject, "no responders"))
        except (errors.TimeoutError, asyncio.TimeoutError):
            result = (None, bus_timeout(item.subject, item.timeout))
        except asyncio.CancelledError:
            self.reactor.callFromThread(self._settle, item, None,
                                        bus_unavailable(item.subject, "the bus stopped"))
            raise
        except Exception as e:
            result = (None, bus_unavailable(item.subject, f"{type(e).__name__}: {e}"))
        else:
            with self._lock:
                self.published += 1
            result = (bytes(msg.data), None)
        self.reactor.callFromThread(self._settle, item, *result)

    async def _on_error(self, error: Exception) -> None:
        text = f"{type(error).__name__}: {error}"
        violation = "permissions violation" in str(error).lower()
        slow = type(error).__name__ == "SlowConsumerError"  # nats-py dropped a delivery
        with self._lock:
            self.errors += 1
            if slow:
                self.dropped_incoming += 1
            self.last_error = text
            self.recent_errors.append(text)
            if violation:
                self.permission_violations += 1
        if violation:
            self.reactor.callFromThread(self._log_violation, str(error))
        else:
            self.reactor.callFromThread(self._log_error, "NATS bus {name}: {error}", error=text)

    async def _on_disconnected(self) -> None:
        with self._lock:
            self.disconnects += 1
        self.reactor.callFromThread(self._connection_changed, False)

    async def _on_reconnected(self) -> None:
        with self._lock:
            self.reconnects += 1
        self.reactor.callFromThread(self._connection_changed, True)
        self._kick()

    async def _on_closed(self) -> None:
        self.reactor.callFromThread(self._connection_changed, False)

    def _begin_shutdown(self) -> None:
        asyncio.get_running_loop().create_task(self._shutdown())

    async def _shutdown(self) -> None:
        """Loop thread: flush what is queued for up to a second, close, stop the loop."""
        nc = self._nc
        if self._main is not None:
            await cancel_until_done(self._main)  # the connection attempts, the drainer
        try:
            if nc is not None and nc.is_connected:
                deadline = time.monotonic() + 1.0
                while nc.is_connected and time.monotonic() < deadline:
                    batch = self._take_batch()
                    if not batch:
                        break
                    for item in batch:
                        await self._send(item)
                await asyncio.wait_for(nc.flush(timeout=1), 1.5)
        except Exception:
            pass
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except Exception:
                pass
        asyncio.get_running_loop().stop()


async def cancel_until_done(task: "asyncio.Task[Any]", recheck: float = 0.1) -> None:
    """Cancel ``task`` and wait for it to end, cancelling again while it goes on.

    On Python 3.11 ``asyncio.wait_for`` loses a cancellation that arrives as the awaited
    operation ends; nats-py's connection attempts run under it and retry on failure, so a
    single ``cancel()`` can leave them retrying for ever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=recheck)


class BusCollector(Collector):
    """A :class:`NatsBus`'s counters at each scrape, as ``fleet_bus_*`` metrics."""

    def __init__(self, bus: NatsBus) -> None:
        self._bus = bus

    def collect(self) -> Any:
        bus = self._bus
        yield GaugeMetricFamily("fleet_bus_connected", "1 while the NATS connection is up",
                                value=1 if bus.connected else 0)
        yield GaugeMetricFamily("fleet_bus_pending_bytes",
                                "bytes of outgoing messages not yet handed to NATS",
                                value=bus.pending_bytes)
        yield GaugeMetricFamily("fleet_bus_incoming_bytes",
                                "bytes of deliveries waiting for the reactor thread",
                                value=bus.incoming_bytes)
        yield CounterMetricFamily("fleet_bus_published", "messages handed to NATS",
                                  value=bus.published)
        dropped = CounterMetricFamily("fleet_bus_dropped", "messages lost, by why",
                                      labels=["why"])
        dropped.add_metric(["overflow"], bus.dropped_overflow)
        dropped.add_metric(["oversize"], bus.dropped_oversize)
        dropped.add_metric(["failed"], bus.dropped - bus.dropped_overflow - bus.dropped_oversize)
        dropped.add_metric(["incoming"], bus.dropped_incoming)
        yield dropped
        yield CounterMetricFamily("fleet_bus_permission_violations",
                                  "publishes or subscriptions the server refused",
                                  value=bus.permission_violations)
        yield CounterMetricFamily("fleet_bus_reconnects", "NATS reconnections",
                                  value=bus.reconnects)
        yield CounterMetricFamily("fleet_bus_errors", "errors the NATS client reported",
                                  value=bus.errors)
