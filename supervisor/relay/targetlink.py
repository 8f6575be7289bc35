"""One long-lived IPC connection per target, shared by every session bound to it.

The link exists only while at least one session is bound (registration never opens IPC).
Connecting runs ``hello`` (checks protocol and target id), ``state`` (delivered to every bound
session), then ``events.subscribe`` and ``logs.tail``; pushes are then fanned out. A session
that binds later gets its own fresh ``state`` and is attached to the stream when that answer
arrives, so everything it sees afterwards is newer than its state. Losing the connection (or
any IPC call missing its deadline) reports ``unavailable`` at once and reconnects with
capped, jittered exponential backoff; after reconnecting a fresh ``state`` precedes new events.
When the last session leaves, the connection (and so the subscriptions) is closed.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from supervisor.config.relay import LimitsConfig, TimeoutsConfig
from supervisor.relay.registry import TargetEntry
from supervisor.wire.client import NDJSONClientProtocol, connect_unix
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import dumps
from supervisor.wire.vocabulary import PROTOCOL_VERSION

__all__ = ["LinkSubscriber", "LinkObserver", "TargetLink", "Backoff"]

# logs replayed on subscribe: as many as a DashboardState carries; older ones are de-duplicated
RECENT_LOG_LINES = 128

# connection_state values of §3 that a link can be in
REGISTERED = "registered"
CONNECTING = "connecting"
CONNECTED = "connected"
UNAVAILABLE = "unavailable"
EXPIRED = "expired"


class LinkSubscriber(Protocol):
    """What a link needs from a session."""

    def deliver_state(self, target_id: str, state: dict[str, Any]) -> None: ...

    def deliver_push(self, target_id: str, push: dict[str, Any], text: str) -> None: ...

    def deliver_dropped(self, target_id: str, events: int, logs: int) -> None: ...


class LinkObserver(Protocol):
    """Told when a link's connection state changes (the hub tells the sessions)."""

    def link_state_changed(self, link: "TargetLink", state: str) -> None: ...


class Backoff:
    """Capped exponential backoff with symmetric jitter; ``reset()`` after a success."""

    def __init__(self, initial: float, maximum: float, jitter_ratio: float,
                 rng: Callable[[], float] = random.random) -> None:
        self._initial = initial
        self._maximum = maximum
        self._jitter = jitter_ratio
        self._rng = rng
        self.attempt = 0

    def next_delay(self) -> float:
        base = min(self._maximum, self._initial * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        jittered = base * (1 + self._jitter * (2 * self._rng() - 1))
        return max(0.0, min(self._maximum, jittered))

    def reset(self) -> None:
        self.attempt = 0


class TargetLink:
    """The relay's single IPC connection to one target (see module docstring)."""

    log = Logger()

    def __init__(
        self,
        entry: TargetEntry,
        *,
        reactor: Any,
        timeouts: TimeoutsConfig,
        limits: LimitsConfig,
        observer: LinkObserver,
        rng: Callable[[], float] = random.random,
        connector: Callable[..., Deferred[NDJSONClientProtocol]] = connect_unix,
    ) -> None:
        self.entry = entry
        self._reactor = reactor
        self._timeouts = timeouts
        self._limits = limits
        self._observer = observer
        self._connector = connector
        self._backoff = Backoff(timeouts.reconnect_initial_ms / 1000.0,
                                timeouts.reconnect_max_ms / 1000.0,
                                timeouts.reconnect_jitter_ratio, rng)
        self.state = REGISTERED
        self.attached: set[LinkSubscriber] = set()
        self.waiting: set[LinkSubscriber] = set()
        self._client: NDJSONClientProtocol | None = None
        self._connecting: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._state_fetch: Deferred[Any] | None = None
        self._epoch = 0
        self._last_event_seq = 0
        self._last_log_seq = 0
        # dropped counts reported by the target, cumulative over reconnects
        self._dropped_base = (0, 0)
        self._dropped_current = (0, 0)
        self._keepalive: IDelayedCall | None = None
        self._had_state = False  # a first state is the baseline; later ones may leave gaps
        self.closed = False

    @property
    def target_id(self) -> str:
        return self.entry.target_id

    @property
    def dropped(self) -> tuple[int, int]:
        """(events, logs) the target reported dropping towards this relay, cumulative."""
        return (self._dropped_base[0] + self._dropped_current[0],
                self._dropped_base[1] + self._dropped_current[1])

    @property
    def sessions(self) -> set[LinkSubscriber]:
        return self.attached | self.waiting

    # binding
    def bind(self, session: LinkSubscriber) -> None:
        """Bind a session: it gets a fresh state, then live pushes."""
        if session in self.attached or session in self.waiting:
            return
        self.waiting.add(session)
        if self.state == CONNECTED:
            self._fetch_state_for_waiting()
        elif self._connecting is None and self._retry is None:
            self._start_connect()

    def unbind(self, session: LinkSubscriber) -> bool:
        """Unbind a session; returns True when no session is left (the link closed)."""
        self.attached.discard(session)
        self.waiting.discard(session)
        if not self.sessions:
            self.close(REGISTERED)
            return True
        return False

    def update(self, entry: TargetEntry) -> None:
        """A re-registration changed the target: reconnect if its socket path moved."""
        moved = entry.registration.ipc_path != self.entry.registration.ipc_path
        self.entry = entry
        if moved and self.sessions:
            self.log.info("target {target_id} moved to {path}; reconnecting",
                          target_id=self.target_id, path=entry.registration.ipc_path)
            self._drop_connection()
            self._backoff.reset()
            self._cancel_retry()
            self._start_connect()

    def close(self, final_state: str = REGISTERED) -> None:
        """Close the connection and stop reconnecting (last session gone, or expired)."""
        self._cancel_retry()
        self._drop_connection()
        self.closed = final_state == EXPIRED
        self._set_state(final_state)

    # commands and state
    def request(self, method: str, params: Any, timeout: float) -> Deferred[dict[str, Any]]:
        """Send one IPC request on the shared connection (fails fast when not connected)."""
        client = self._client
        if self.state != CONNECTED or client is None:
            d: Deferred[dict[str, Any]] = Deferred()
            d.errback(WireError("target_unavailable", "command_forward",
                                f"target {self.target_id} is {self.state}", self.target_id,
                                True))
            return d
        return client.request(method, params, timeout)

    def fetch_state(self) -> Deferred[dict[str, Any]]:
        """A fresh ``state`` of the target (the DashboardState object)."""
        d = self.request("state", {"target_id": self.target_id},
                         self._timeouts.ipc_request_seconds)
        d.addCallback(self._check_state)
        return d

    def _check_state(self, result: dict[str, Any]) -> dict[str, Any]:
        state = result.get("state")
        if result.get("type") != "state" or not isinstance(state, dict):
            raise WireError("invalid_ipc_response", "state", "state answer has no state object",
                            self.target_id, True)
        return state

    # connection management
    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._observer.link_state_changed(self, state)

    def _start_connect(self) -> None:
        self._retry = None
        self._epoch += 1
        epoch = self._epoch
        if self.state != UNAVAILABLE:
            self._set_state(CONNECTING)
        d = self._connect(epoch)
        self._connecting = d

        def done(result: Any) -> None:
            if self._epoch == epoch:
                self._connecting = None

        def failed(f: Failure) -> None:
            if self._epoch != epoch:
                return
            error = f.value if isinstance(f.value, WireError) else None
            self.log.info("IPC link to {target_id} failed: {error}", target_id=self.target_id,
                          error=str(error) if error else f.getErrorMessage())
            self._connection_failed(epoch)

        d.addCallbacks(done, failed)
        d.addErrback(lambda f: self.log.failure("link bookkeeping failed", f))

    @inlineCallbacks
    def _connect(self, epoch: int) -> Any:
        path = self.entry.registration.ipc_path
        timeouts = self._timeouts

        def build() -> NDJSONClientProtocol:
            return NDJSONClientProtocol(
                self._reactor,
                default_timeout=timeouts.ipc_request_seconds,
                max_line_bytes=self._limits.max_ipc_line_bytes,
                max_in_flight=self._limits.max_ipc_in_flight,
                on_push=lambda push: self._on_push(epoch, push),
                target_id=self.target_id,
            )

        client = yield self._connector(self._reactor, path, build,
                                       timeout=timeouts.ipc_connect_seconds)
        if self._epoch != epoch:
            client.close()
            return
        self._client = client
        client.closed.addCallback(lambda _: self._connection_lost(epoch))
        hello = yield client.request("hello", None, timeouts.ipc_request_seconds)
        if hello.get("protocol_version") != PROTOCOL_VERSION:
            raise WireError("protocol_mismatch", "hello",
                            f"target speaks {hello.get('protocol_version')!r}", self.target_id,
                            False)
        if hello.get("target_id") != self.target_id:
            raise WireError("target_id_mismatch", "hello",
                            f"socket {path} answers as {hello.get('target_id')!r}",
                            self.target_id, False)
        state = yield client.request("state", {"target_id": self.target_id},
                                     timeouts.ipc_request_seconds)
        state = self._check_state(state)
        if self._epoch != epoch:
            return
        gap = self._gap(state) if self._had_state else (0, 0)
        self._had_state = True
        self._reset_sequences(state)
        base = self.dropped
        self._dropped_base = (base[0] + gap[0], base[1] + gap[1])
        self._dropped_current = (0, 0)
        self._backoff.reset()
        self._set_state(CONNECTED)
        self._hand_out_state(state)
        if gap != (0, 0):
            self.log.info("{target_id}: {events} events and {logs} logs happened while the "
                          "link was down and are not in the fresh state; counted as dropped",
                          target_id=self.target_id, events=gap[0], logs=gap[1])
            total_events, total_logs = self.dropped
            for session in list(self.attached):
                session.deliver_dropped(self.target_id, total_events, total_logs)
        yield client.request("events.subscribe", {
            "target_id": self.target_id, "session_established": True,
            "since_sequence": self._last_event_seq,
        }, timeouts.ipc_request_seconds)
        yield client.request("logs.tail", {
            "target_id": self.target_id, "session_established": True,
            "lines": RECENT_LOG_LINES,
            "since_sequence": self._last_log_seq,
        }, timeouts.ipc_request_seconds)
        if self._epoch == epoch:
            self._schedule_keepalive(epoch)

    def _schedule_keepalive(self, epoch: int) -> None:
        """A frozen target (SIGSTOP, a blocked reactor) keeps its socket open and answers
        nothing; with no request pending the link would look connected forever. Every
        ``timeouts.ipc_keepalive_seconds`` a ``hello`` must be answered within the request
        deadline, or the link is reported unavailable and reconnected."""
        self._cancel_keepalive()
        self._keepalive = self._reactor.callLater(self._timeouts.ipc_keepalive_seconds,
                                                  self._ping, epoch)

    def _ping(self, epoch: int) -> None:
        self._keepalive = None
        client = self._client
        if self._epoch != epoch or client is None:
            return
        d = client.request("hello", None, self._timeouts.ipc_request_seconds)

        def answered(_: Any) -> None:
            if self._epoch == epoch:
                self._schedule_keepalive(epoch)

        def failed(f: Failure) -> None:
            if self._epoch == epoch:
                self.log.info("{target_id} did not answer the keepalive: {error}",
                              target_id=self.target_id, error=f.getErrorMessage())
                self._connection_failed(epoch)

        d.addCallbacks(answered, failed)

    def _cancel_keepalive(self) -> None:
        call, self._keepalive = self._keepalive, None
        if call is not None and call.active():
            call.cancel()

    def _gap(self, state: dict[str, Any]) -> tuple[int, int]:
        """Records sessions can no longer see after a reconnect: newer than the last one
        delivered, older than the oldest the fresh state holds. A restarted target starts
        its sequences again at 1, so its state overlaps and no gap is counted."""
        def missing(last: int, records: Any) -> int:
            oldest = _min_sequence(records)
            return oldest - last - 1 if oldest is not None and oldest > last + 1 else 0

        return (missing(self._last_event_seq, state.get("recent_events")),
                missing(self._last_log_seq, state.get("recent_logs")))

    def _reset_sequences(self, state: dict[str, Any]) -> None:
        self._last_event_seq = _max_sequence(state.get("recent_events"))
        self._last_log_seq = _max_sequence(state.get("recent_logs"))

    def _hand_out_state(self, state: dict[str, Any]) -> None:
        for session in list(self.waiting) + list(self.attached):
            session.deliver_state(self.target_id, state)
        self.attached |= self.waiting
        self.waiting.clear()

    def _fetch_state_for_waiting(self) -> None:
        if self._state_fetch is not None:
            return  # the answer in flight serves every session waiting when it arrives
        epoch = self._epoch
        d = self.fetch_state()
        self._state_fetch = d

        def got(state: dict[str, Any]) -> None:
            self._state_fetch = None
            if self._epoch != epoch:
                return
            for session in list(self.waiting):
                session.deliver_state(self.target_id, state)
            self.attached |= self.waiting
            self.waiting.clear()

        def failed(f: Failure) -> None:
            self._state_fetch = None
            if self._epoch == epoch and self.state == CONNECTED:
                self.log.info("state fetch from {target_id} failed: {error}",
                              target_id=self.target_id, error=f.getErrorMessage())
                self._connection_failed(epoch)

        d.addCallbacks(got, failed)

    def _connection_lost(self, epoch: int) -> None:
        if self._epoch == epoch:
            self.log.info("IPC connection to {target_id} lost", target_id=self.target_id)
            self._connection_failed(epoch)

    def _connection_failed(self, epoch: int) -> None:
        """Report unavailable now and schedule a reconnect (if anyone still cares)."""
        if self._epoch != epoch:
            return
        self._epoch += 1  # late callbacks of the failed attempt are ignored from now on
        self._connecting = None
        self._drop_connection()
        self.waiting |= self.attached
        self.attached.clear()
        if not self.sessions or self.state in (EXPIRED,):
            return
        self._set_state(UNAVAILABLE)
        self._cancel_retry()
        delay = self._backoff.next_delay()
        self._retry = self._reactor.callLater(delay, self._start_connect)

    def _drop_connection(self) -> None:
        self._cancel_keepalive()
        client, self._client = self._client, None
        self._epoch += 1
        self._state_fetch = None
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        if client is not None:
            client.abort()

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    # pushes
    def _on_push(self, epoch: int, push: dict[str, Any]) -> None:
        if self._epoch != epoch:
            return
        kind = push.get("type")
        if kind == "event":
            seq = _sequence(push.get("event"))
            if seq is not None:
                if seq <= self._last_event_seq:
                    return  # already in the state the sessions got, or replayed twice
                self._last_event_seq = seq
        elif kind == "log":
            seq = _sequence(push.get("log"))
            if seq is not None:
                if seq <= self._last_log_seq:
                    return
                self._last_log_seq = seq
        elif kind == "dropped_count":
            events, logs = push.get("dropped_event_count"), push.get("dropped_log_count")
            if isinstance(events, int) and isinstance(logs, int):
                self._dropped_current = (events, logs)
            total_events, total_logs = self.dropped
            for session in list(self.attached):
                session.deliver_dropped(self.target_id, total_events, total_logs)
            return
        elif kind != "state_delta":
            self.log.debug("ignoring push of type {kind}", kind=kind)
            return
        if not self.attached:
            return
        text = dumps(push)  # once, not per session
        for session in list(self.attached):
            session.deliver_push(self.target_id, push, text)


def _sequence(record: Any) -> int | None:
    if isinstance(record, dict):
        seq = record.get("sequence")
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return None


def _min_sequence(records: Any) -> int | None:
    if not isinstance(records, list):
        return None
    return min((s for s in (_sequence(r) for r in records) if s is not None), default=None)


def _max_sequence(records: Any) -> int:
    if not isinstance(records, list):
        return 0
    return max((s for s in (_sequence(r) for r in records) if s is not None), default=0)
