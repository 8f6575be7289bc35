"""One long-lived IPC connection per target, shared by every session bound to it.

The link exists only while at least one session is bound (registration never opens IPC).
Connecting runs ``hello`` (checks protocol and target id), ``state`` (delivered to every bound
session), then ``events.subscribe`` and ``logs.tail``; pushes are then fanned out. A session
that binds later gets its own fresh ``state`` and is attached to the stream when that answer
arrives, so everything it sees afterwards is newer than its state. Losing the connection (or
any IPC call missing its deadline) reports ``unavailable`` at once and reconnects with
capped, jittered exponential backoff; after reconnecting a fresh ``state`` precedes new events.
When the last session leaves, the connection (and so the subscriptions) is closed.

How: a ``twisted.application.internet.ClientService`` keeps the connection, retrying with
:func:`supervisor._backoff.retry_policy` over ``timeouts.reconnect_*``. Its endpoint
(:class:`_TargetEndpoint`) hands a connection over only once ``hello`` and the first ``state``
were answered, so a target that accepts but does not answer, or answers as someone else, is
a failed attempt and the delays grow.

Every attempt first checks the socket path again as registration did (resolved now, under an
allowed prefix, no final symlink: a folder swapped for a symlink since registration must not
lead the relay elsewhere) and, once connected, that the process serving the socket runs as
the uid that registered the target (SO_PEERCRED). A failed check is a failed attempt
(``unavailable``) with the reason logged at error level, kept in :attr:`TargetLink.refusal`
and counted by :attr:`LinkObserver.ipc_connect_refused`. The link's own lifecycle is an Automat machine whose
states are the ``connection_state`` values of CONTRACTS.md §3 (see :data:`TargetLink.state`).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Protocol

from automat import TypeMachineBuilder
from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor._backoff import retry_policy
from supervisor.config.relay import LimitsConfig, RegistrationConfig, TimeoutsConfig
from supervisor.relay.registration import check_ipc_path
from supervisor.relay.registry import TargetEntry
from supervisor.wire.bounds import DROPPED_COUNT_RANGE, SEQUENCE_RANGE, int_in
from supervisor.wire.client import NDJSONClientProtocol
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import dumps
from supervisor.wire.registration import Registration, RegistrationRefused
from supervisor.wire.unixsocket import peer_uid
from supervisor.wire.vocabulary import PROTOCOL_VERSION

__all__ = ["LinkSubscriber", "LinkObserver", "TargetLink"]

# logs replayed on subscribe: as many as a DashboardState carries; older ones are de-duplicated
RECENT_LOG_LINES = 128

# connection_state values of §3 that a link can be in
REGISTERED = "registered"
CONNECTING = "connecting"
CONNECTED = "connected"
UNAVAILABLE = "unavailable"
EXPIRED = "expired"

#: the connect checks that refuse a socket (see the module docstring)
_REFUSALS = frozenset({"ipc_path_not_allowed", "invalid_ipc_path", "ipc_peer_uid_mismatch"})

#: ``connector(ipc_path)`` → the endpoint a link connects through (Unix sockets by default)
Connector = Callable[[str], IStreamClientEndpoint]


class LinkSubscriber(Protocol):
    """What a link needs from a session."""

    def deliver_state(self, target_id: str, state: dict[str, Any]) -> None: ...

    def deliver_push(self, target_id: str, push: dict[str, Any], text: str) -> None: ...

    def deliver_dropped(self, target_id: str, events: int, logs: int) -> None: ...


class LinkObserver(Protocol):
    """Told when a link's connection state changes (the hub tells the sessions), shown the
    target's events (those of each new connection's first state, then each new one) and told
    how long each IPC request took to be answered (for the relay's metrics)."""

    def link_state_changed(self, link: "TargetLink", state: str) -> None: ...

    def link_events(self, link: "TargetLink", events: list[Any]) -> None: ...

    def ipc_round_trip(self, method: str, seconds: float) -> None: ...

    def ipc_connect_refused(self, link: "TargetLink", code: str) -> None: ...


class _Sequences:
    """What sessions have seen of a target's event and log streams, across reconnects.

    Pushes at or below the last delivered sequence are duplicates (already in the state the
    sessions got, or replayed twice). After a reconnect, records newer than the last one
    delivered but older than the oldest the fresh state holds can no longer be seen: they are
    counted into the dropped counts. A restarted target starts its sequences again at 1, so its
    state overlaps and no gap is counted.
    """

    def __init__(self) -> None:
        self.last_event = 0
        self.last_log = 0
        self._had_state = False  # a first state is the baseline; later ones may leave gaps
        self._dropped_base = (0, 0)  # gaps and the counts of earlier connections
        self._dropped_current = (0, 0)  # what this connection's target reported

    @property
    def dropped(self) -> tuple[int, int]:
        """(events, logs) dropped on the way from the target, cumulative."""
        return (self._dropped_base[0] + self._dropped_current[0],
                self._dropped_base[1] + self._dropped_current[1])

    def baseline(self, state: dict[str, Any]) -> tuple[int, int]:
        """Take a connection's first state as the new baseline; returns the gap it leaves."""
        def missing(last: int, records: Any) -> int:
            oldest = _min_sequence(records)
            return oldest - last - 1 if oldest is not None and oldest > last + 1 else 0

        gap = ((missing(self.last_event, state.get("recent_events")),
                missing(self.last_log, state.get("recent_logs")))
               if self._had_state else (0, 0))
        self._had_state = True
        self.last_event = _max_sequence(state.get("recent_events"))
        self.last_log = _max_sequence(state.get("recent_logs"))
        events, logs = self.dropped
        self._dropped_base = (events + gap[0], logs + gap[1])
        self._dropped_current = (0, 0)
        return gap

    def admit(self, kind: str, record: Any) -> bool:
        """Whether an ``event``/``log`` push is new (and remember it)."""
        seq = _sequence(record)
        if seq is None:
            return True
        if kind == "event":
            if seq <= self.last_event:
                return False
            self.last_event = seq
        else:
            if seq <= self.last_log:
                return False
            self.last_log = seq
        return True

    def reported(self, events: Any, logs: Any) -> None:
        """The connected target's own ``dropped_count`` totals."""
        if int_in(events, DROPPED_COUNT_RANGE) and int_in(logs, DROPPED_COUNT_RANGE):
            self._dropped_current = (events, logs)


class _Connection:
    """One IPC connection that answered ``hello`` and a first ``state``.

    Pushes and the loss of the connection go to the link only while it is attached; a
    connection the link let go of says nothing more. Every request has a deadline; a missed
    one (or a failed subscription or keepalive) ends the connection.
    """

    log = Logger()

    def __init__(self, client: NDJSONClientProtocol, *, target_id: str, clock: Any,
                 timeouts: TimeoutsConfig) -> None:
        self.client = client
        self._target_id = target_id
        self._timeouts = timeouts
        self._clock = clock
        #: told ``(method, seconds)`` for every answered request
        self.on_round_trip: Callable[[str, float], None] | None = None
        self._on_push: Callable[[dict[str, Any]], None] | None = None
        self._on_lost: Callable[[], None] | None = None
        self.fetching = False
        self._keepalive = LoopingCall(self._ping)
        self._keepalive.clock = clock
        client.on_push = self._pushed
        client.closed.addCallback(lambda _: self._report_lost("IPC connection lost"))

    def attach(self, on_push: Callable[[dict[str, Any]], None],
               on_lost: Callable[[], None]) -> None:
        self._on_push, self._on_lost = on_push, on_lost

    def detach(self) -> None:
        """Let go: no more pushes or loss reports; the connection is closed."""
        self._on_push = self._on_lost = None
        if self._keepalive.running:
            self._keepalive.stop()
        self.client.abort()

    def fail(self, why: str) -> None:
        """End the connection because a request failed; the link hears of it now."""
        self._report_lost(why)
        self.client.abort()

    def request(self, method: str, params: Any, timeout: float) -> Deferred[dict[str, Any]]:
        d = self.client.request(method, params, timeout)
        if self.on_round_trip is not None:
            started = self._clock.seconds()
            observe = self.on_round_trip

            def answered(result: dict[str, Any]) -> dict[str, Any]:
                observe(method, self._clock.seconds() - started)
                return result

            d.addCallback(answered)
        return d

    def subscribe(self, since_event: int, since_log: int) -> None:
        """Subscribe to events and logs after the given sequences, then keep alive."""
        request = self._timeouts.ipc_request_seconds
        common = {"target_id": self._target_id, "session_established": True}
        events = self.request("events.subscribe", {**common, "since_sequence": since_event},
                              request)
        logs = self.request("logs.tail", {**common, "lines": RECENT_LOG_LINES,
                                          "since_sequence": since_log}, request)
        logs.addCallback(lambda _: self._keep_alive())
        for d in (events, logs):
            d.addErrback(lambda f: self.fail(f"subscription failed: {f.getErrorMessage()}"))

    def _keep_alive(self) -> None:
        """A frozen target (SIGSTOP, a blocked reactor) keeps its socket open and answers
        nothing; with no request pending the link would look connected forever. Every
        ``timeouts.ipc_keepalive_seconds`` a ``hello`` must be answered within the request
        deadline, or the connection ends."""
        if self._on_lost is not None:
            self._keepalive.start(self._timeouts.ipc_keepalive_seconds, now=False).addErrback(
                lambda f: self.fail(f"no answer to the keepalive: {f.getErrorMessage()}"))

    def _ping(self) -> Deferred[dict[str, Any]]:
        return self.request("hello", None, self._timeouts.ipc_request_seconds)

    def _pushed(self, push: dict[str, Any]) -> None:
        if self._on_push is not None:
            self._on_push(push)

    def _report_lost(self, why: str) -> None:
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            self.log.info("IPC link to {target_id} ended: {why}", target_id=self._target_id,
                          why=why)
            self._on_push = None
            on_lost()


@implementer(IStreamClientEndpoint)
class _TargetEndpoint:
    """The link's endpoint for its ClientService: connect to the target's current socket
    path, say ``hello`` (protocol version and target id must match) and read a first
    ``state``; only then is the connection handed over.

    The ClientService sees a plain protocol of the ``factory`` it passes; it is made when the
    handshake is done and lost when the IPC connection is, so failures during the handshake
    are failed attempts (they back off) and never a lost connection.
    """

    def __init__(self, link: "TargetLink") -> None:
        self._link = link

    def __repr__(self) -> str:
        return f"<IPC endpoint of target {self._link.target_id}>"

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        handshake = Deferred.fromCoroutine(self._handshake())
        stopped: list[bool] = []  # the ClientService cancelled this attempt (it stops)

        def stop(_: Deferred[IProtocol]) -> None:
            stopped.append(True)
            handshake.cancel()

        result: Deferred[IProtocol] = Deferred(stop)

        def done(outcome: tuple[_Connection, dict[str, Any]]) -> None:
            connection, state = outcome
            transport = connection.client.transport
            stand_in = factory.buildProtocol(transport.getPeer())
            assert stand_in is not None
            stand_in.makeConnection(transport)
            connection.client.closed.addCallback(
                lambda _: stand_in.connectionLost(Failure(ConnectionDone())))
            result.callback(stand_in)  # the ClientService is connected ...
            self._link._ready(connection, state)  # ... before the link acts on it

        def failed(f: Failure) -> None:
            if not result.called:
                result.errback(f)
            if not stopped:
                self._link._attempt_failed(f)

        handshake.addCallbacks(done, failed)
        return result

    async def _handshake(self) -> tuple[_Connection, dict[str, Any]]:
        link = self._link
        timeouts, target_id = link._timeouts, link.target_id
        path = link.entry.registration.ipc_path

        def build() -> NDJSONClientProtocol:
            return NDJSONClientProtocol(
                link._reactor, default_timeout=timeouts.ipc_request_seconds,
                max_line_bytes=link._limits.max_ipc_line_bytes,
                max_in_flight=link._limits.max_ipc_in_flight, target_id=target_id)

        if link._registration is not None:
            try:
                check_ipc_path(path, link._registration)
            except RegistrationRefused as refused:
                raise _refused(link, refused.code, f"{refused.message} (checked before "
                               "connecting; it was allowed at registration)") from None
        connecting = link._connector(path).connect(Factory.forProtocol(build))
        connecting.addTimeout(timeouts.ipc_connect_seconds, link._reactor)
        client = await connecting
        try:
            _check_peer(link, client, path)
        except BaseException:
            client.abort()
            raise
        connection = _Connection(client, target_id=target_id, clock=link._reactor,
                                 timeouts=timeouts)
        connection.on_round_trip = getattr(link._observer, "ipc_round_trip", None)
        try:
            hello = await connection.request("hello", None, timeouts.ipc_request_seconds)
            if hello.get("protocol_version") != PROTOCOL_VERSION:
                raise WireError("protocol_mismatch", "hello",
                                f"target speaks {hello.get('protocol_version')!r}", target_id)
            if hello.get("target_id") != target_id:
                raise WireError("target_id_mismatch", "hello",
                                f"socket {path} answers as {hello.get('target_id')!r}",
                                target_id)
            state = _state_of(await connection.request("state", {"target_id": target_id},
                                                       timeouts.ipc_request_seconds), target_id)
        except BaseException:
            client.abort()
            raise
        return connection, state


def _refused(link: "TargetLink", code: str, message: str) -> WireError:
    """A connect check failed: the error that fails this attempt, told to the observer."""
    link.refusal = (code, message)
    counted = getattr(link._observer, "ipc_connect_refused", None)
    if counted is not None:
        counted(link, code)
    return WireError(code, "connect", message, link.target_id, True)


def _owner_uid(owner: str) -> int | None:
    prefix, _, uid = owner.partition(":")
    return int(uid) if prefix == "unix_uid" and uid.isdigit() else None


def _check_peer(link: "TargetLink", client: NDJSONClientProtocol, path: str) -> None:
    """The process serving the socket must run as the uid that registered the target."""
    handle = getattr(client.transport, "getHandle", None)
    if handle is None:
        return  # not a socket (an in-memory transport)
    expected = _owner_uid(link.entry.owner)
    try:
        actual = peer_uid(handle())
    except OSError as e:
        raise _refused(link, "ipc_peer_uid_mismatch",
                       f"cannot read the credentials of the process serving {path}: {e}") \
            from None
    if actual is None and expected is None:
        return  # no SO_PEERCRED here: registration could not read an owner either
    if actual != expected:
        raise _refused(link, "ipc_peer_uid_mismatch",
                       f"socket {path} is served by uid {actual}, but the target was "
                       f"registered by {link.entry.owner}")


class TargetLink:
    """The relay's single IPC connection to one target (see module docstring).

    ``state`` is the link's ``connection_state``: ``registered`` (no session), ``connecting``
    (first attempts), ``connected``, ``unavailable`` (lost or failing; retrying) or
    ``expired`` (the registration ended; the link is done).
    """

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
        connector: Connector | None = None,
        registration: RegistrationConfig | None = None,
    ) -> None:
        self.entry = entry
        #: the path rules re-checked before every connect (None: not checked)
        self._registration = registration
        #: ``(code, message)`` of the last connect check that failed (None after a success)
        self.refusal: tuple[str, str] | None = None
        self._reactor = reactor
        self._timeouts = timeouts
        self._limits = limits
        self._observer = observer
        self._connector: Connector = connector or (
            lambda path: UNIXClientEndpoint(reactor, path, timeout=timeouts.ipc_connect_seconds))
        self._service = ClientService(
            _TargetEndpoint(self), Factory.forProtocol(TwistedProtocol),
            retryPolicy=retry_policy(timeouts.reconnect_initial_ms / 1000.0,
                                     timeouts.reconnect_max_ms / 1000.0,
                                     timeouts.reconnect_jitter_ratio, rand=rng),
            clock=reactor)
        self.state = REGISTERED
        #: ``target.instance_id`` of the current connection's first state (None before one)
        self.instance_id: str | None = None
        self.attached: set[LinkSubscriber] = set()
        self.waiting: set[LinkSubscriber] = set()
        self._sequences = _Sequences()
        self._connection: _Connection | None = None  # set exactly while connected
        self._machine = _LINK_MACHINE(self)

    @property
    def target_id(self) -> str:
        return self.entry.target_id

    @property
    def dropped(self) -> tuple[int, int]:
        """(events, logs) the target reported dropping towards this relay, cumulative."""
        return self._sequences.dropped

    @property
    def sessions(self) -> set[LinkSubscriber]:
        return self.attached | self.waiting

    # binding
    def bind(self, session: LinkSubscriber) -> None:
        """Bind a session: it gets a fresh state, then live pushes."""
        if session in self.attached or session in self.waiting:
            return
        self.waiting.add(session)
        self._machine.bind()

    def unbind(self, session: LinkSubscriber) -> bool:
        """Unbind a session; returns True when no session is left (the link closed)."""
        self.attached.discard(session)
        self.waiting.discard(session)
        if not self.sessions:
            self._machine.idle()
            return True
        return False

    def update(self, entry: TargetEntry, previous: Registration) -> None:
        """A re-registration changed the target: reconnect if its socket path moved."""
        self.entry = entry
        if entry.registration.ipc_path != previous.ipc_path:
            self.log.info("target {target_id} moved to {path}; reconnecting",
                          target_id=self.target_id, path=entry.registration.ipc_path)
            self._machine.moved()

    def close(self) -> None:
        """Close the connection and stop reconnecting (relay shutdown)."""
        self._machine.idle()

    def expire(self) -> None:
        """The registration expired: close for good."""
        self._machine.expire()

    # commands and state
    def request(self, method: str, params: Any, timeout: float) -> Deferred[dict[str, Any]]:
        """Send one IPC request on the shared connection (fails fast when not connected)."""
        if self._connection is None:
            d: Deferred[dict[str, Any]] = Deferred()
            d.errback(WireError("target_unavailable", "command_forward",
                                f"target {self.target_id} is {self.state}", self.target_id,
                                True))
            return d
        return self._connection.request(method, params, timeout)

    def fetch_state(self) -> Deferred[dict[str, Any]]:
        """A fresh ``state`` of the target (the DashboardState object)."""
        d = self.request("state", {"target_id": self.target_id},
                         self._timeouts.ipc_request_seconds)
        d.addCallback(_state_of, self.target_id)
        return d

    # from the endpoint
    def _ready(self, connection: _Connection, state: dict[str, Any]) -> None:
        self._machine.ready(connection, state)

    def _attempt_failed(self, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, WireError) and error.code in _REFUSALS:
            self.log.error("IPC link to {target_id} refused: {code}: {error}",
                           target_id=self.target_id, code=error.code, error=error.message)
        else:
            self.log.info("IPC link to {target_id} failed: {error}", target_id=self.target_id,
                          error=failure.getErrorMessage())
        self._machine.attempt_failed()

    # outputs of the machine
    def _enter(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._observer.link_state_changed(self, state)

    def _use(self, connection: _Connection, state: dict[str, Any]) -> None:
        """A new connection: its first state to every session, then the live stream."""
        self._connection = connection
        self.refusal = None
        connection.attach(self._on_push, self._machine.lost)
        gap = self._sequences.baseline(state)
        target = state.get("target")
        instance = target.get("instance_id") if isinstance(target, dict) else None
        self.instance_id = instance if isinstance(instance, str) else None
        events = state.get("recent_events")
        if isinstance(events, list) and events:
            self._observer.link_events(self, events)
        self._enter(CONNECTED)
        self._hand_out_state(state)
        if gap != (0, 0):
            self.log.info("{target_id}: {events} events and {logs} logs happened while the "
                          "link was down and are not in the fresh state; counted as dropped",
                          target_id=self.target_id, events=gap[0], logs=gap[1])
            self._tell_dropped()
        connection.subscribe(self._sequences.last_event, self._sequences.last_log)

    def _let_go(self) -> None:
        """Leave the connection (lost, moved, closing); bound sessions wait for the next."""
        connection, self._connection = self._connection, None
        assert connection is not None
        connection.detach()
        self.waiting |= self.attached
        self.attached.clear()

    def _stop(self, final: str) -> None:
        """Stop connecting (and retrying)."""
        self._service.stopService()
        self._enter(final)

    def _restart(self) -> None:
        """Reconnect now (to a new path), without waiting for a backoff delay."""
        self._service.stopService()
        self._service.startService()

    def _hand_out_state(self, state: dict[str, Any]) -> None:
        """The sessions waiting for a state get this one and then the live stream."""
        heard = getattr(self._observer, "link_state", None)
        if heard is not None:
            heard(self.target_id, state)
        for session in list(self.waiting):
            session.deliver_state(self.target_id, state)
        self.attached |= self.waiting
        self.waiting.clear()

    def _fetch_state_for_waiting(self) -> None:
        connection = self._connection
        assert connection is not None
        if connection.fetching:
            return  # the answer in flight serves every session waiting when it arrives
        connection.fetching = True

        def got(state: dict[str, Any]) -> None:
            connection.fetching = False
            if self._connection is connection:
                self._hand_out_state(state)

        def failed(f: Failure) -> None:
            connection.fetching = False
            connection.fail(f"state fetch failed: {f.getErrorMessage()}")

        connection.request("state", {"target_id": self.target_id},
                           self._timeouts.ipc_request_seconds).addCallback(
            _state_of, self.target_id).addCallbacks(got, failed)

    def _tell_dropped(self) -> None:
        events, logs = self.dropped
        for session in list(self.attached):
            session.deliver_dropped(self.target_id, events, logs)

    def _on_push(self, push: dict[str, Any]) -> None:
        kind = push.get("type")
        if kind == "dropped_count":
            self._sequences.reported(push.get("dropped_event_count"),
                                     push.get("dropped_log_count"))
            self._tell_dropped()
            return
        if kind in ("event", "log"):
            if not self._sequences.admit(kind, push.get(kind)):
                return
            if kind == "event":
                self._observer.link_events(self, [push.get("event")])
        elif kind != "state_delta":
            self.log.debug("ignoring push of type {kind}", kind=kind)
            return
        heard = getattr(self._observer, "link_pushed", None)
        if heard is not None:
            heard(self.target_id, push)
        if not self.attached:
            return
        text = dumps(push)  # once, not per session
        target_id = self.target_id
        for session in list(self.attached):
            session.deliver_push(target_id, push, text)


class _LinkInputs(Protocol):
    """What can happen to a link (the inputs of its machine)."""

    def bind(self) -> None:
        """A session was bound (the first one opens the link)."""

    def ready(self, connection: _Connection, state: dict[str, Any]) -> None:
        """A connection answered ``hello`` and a first ``state``."""

    def attempt_failed(self) -> None:
        """A connection attempt failed; the ClientService tries again after its backoff."""

    def lost(self) -> None:
        """The connection ended (closed by the target, or a request missed its deadline)."""

    def moved(self) -> None:
        """A re-registration moved the target's socket."""

    def idle(self) -> None:
        """The last session left (or the relay stops)."""

    def expire(self) -> None:
        """The registration expired."""


def _build_link_machine() -> Callable[[TargetLink], _LinkInputs]:
    """The link's lifecycle; an input a state does not list raises ``NoTransition``."""
    m = TypeMachineBuilder(_LinkInputs, TargetLink)
    registered = m.state(REGISTERED)
    connecting = m.state(CONNECTING)
    connected = m.state(CONNECTED)
    unavailable = m.state(UNAVAILABLE)
    expired = m.state(EXPIRED)  # final: every input raises NoTransition

    @registered.upon(_LinkInputs.bind).to(connecting)
    def open_link(machine: _LinkInputs, link: TargetLink) -> None:
        link._enter(CONNECTING)
        link._service.startService()

    # sessions bound while no connection is usable get the next connection's first state
    connecting.upon(_LinkInputs.bind).loop().returns(None)
    unavailable.upon(_LinkInputs.bind).loop().returns(None)

    @connected.upon(_LinkInputs.bind).loop()
    def serve_waiting(machine: _LinkInputs, link: TargetLink) -> None:
        link._fetch_state_for_waiting()

    @connecting.upon(_LinkInputs.ready).to(connected)
    @unavailable.upon(_LinkInputs.ready).to(connected)
    def use(machine: _LinkInputs, link: TargetLink, connection: _Connection,
            state: dict[str, Any]) -> None:
        link._use(connection, state)

    @connecting.upon(_LinkInputs.attempt_failed).to(unavailable)
    def first_attempt_failed(machine: _LinkInputs, link: TargetLink) -> None:
        link._enter(UNAVAILABLE)

    unavailable.upon(_LinkInputs.attempt_failed).loop().returns(None)

    @connected.upon(_LinkInputs.lost).to(unavailable)
    def lose(machine: _LinkInputs, link: TargetLink) -> None:
        link._let_go()
        link._enter(UNAVAILABLE)

    registered.upon(_LinkInputs.moved).loop().returns(None)  # nothing to reconnect

    @connecting.upon(_LinkInputs.moved).loop()
    @unavailable.upon(_LinkInputs.moved).loop()
    def reconnect(machine: _LinkInputs, link: TargetLink) -> None:
        link._restart()

    @connected.upon(_LinkInputs.moved).to(connecting)
    def reconnect_elsewhere(machine: _LinkInputs, link: TargetLink) -> None:
        link._let_go()
        link._enter(CONNECTING)
        link._restart()

    @connecting.upon(_LinkInputs.idle).to(registered)
    @unavailable.upon(_LinkInputs.idle).to(registered)
    def stop_trying(machine: _LinkInputs, link: TargetLink) -> None:
        link._stop(REGISTERED)

    @connected.upon(_LinkInputs.idle).to(registered)
    def close_connection(machine: _LinkInputs, link: TargetLink) -> None:
        link._let_go()
        link._stop(REGISTERED)

    @connecting.upon(_LinkInputs.expire).to(expired)
    @unavailable.upon(_LinkInputs.expire).to(expired)
    def expire_trying(machine: _LinkInputs, link: TargetLink) -> None:
        link._stop(EXPIRED)

    @connected.upon(_LinkInputs.expire).to(expired)
    def expire_connected(machine: _LinkInputs, link: TargetLink) -> None:
        link._let_go()
        link._stop(EXPIRED)

    @registered.upon(_LinkInputs.expire).to(expired)
    def expire_unused(machine: _LinkInputs, link: TargetLink) -> None:
        link._enter(EXPIRED)

    return m.build()


_LINK_MACHINE = _build_link_machine()


def _state_of(answer: dict[str, Any], target_id: str) -> dict[str, Any]:
    """The DashboardState object of a ``state`` answer."""
    state = answer.get("state")
    if answer.get("type") != "state" or not isinstance(state, dict):
        raise WireError("invalid_ipc_response", "state", "state answer has no state object",
                        target_id, True)
    return state


def _sequence(record: Any) -> int | None:
    """A record's sequence; one outside ``SEQUENCE_RANGE`` counts as none (it could not be
    asked for again in ``since_sequence``)."""
    if isinstance(record, dict):
        seq = record.get("sequence")
        if int_in(seq, SEQUENCE_RANGE):
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
