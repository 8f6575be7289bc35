"""One dashboard session (§3), independent of the WebSocket library carrying it.

Order rule: ``server_hello`` on open; nothing else until a valid ``client_hello`` (a first
message that is anything else, including one that is not JSON or a malformed
``client_hello``, gets one ``protocol_error`` and a close); then ``target_list`` and one
``state`` per bound target, then live traffic. Every outgoing message goes through the
session's bounded :class:`~supervisor.relay.outbox.Outbox`.

Its lifecycle is an Automat machine: ``awaiting_hello`` → ``established`` (a valid
``client_hello``) → ``closed`` (the transport went away); ``closed`` is final. A move the
machine does not list raises ``NoTransition``; one asked for while another is under way (a
session closed while its ``client_hello`` is being handled) runs after it.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Protocol

from automat import TypeMachineBuilder
from twisted.logger import Logger

from supervisor.relay.auth import Identity
from supervisor.relay.filters import FilterConditions
from supervisor.relay.outbox import Outbox
from supervisor.relay.ratelimit import SessionRates
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import dumps, loads, surrogate_escaped

__all__ = ["SessionTransport", "SessionHost", "Session", "CLOSE_SLOW_CONSUMER",
           "CLOSE_PROTOCOL_ERROR", "CLOSE_RATE_LIMITED", "AWAITING_HELLO", "ESTABLISHED",
           "CLOSED"]

CLOSE_PROTOCOL_ERROR = 4002
CLOSE_SLOW_CONSUMER = 4008
CLOSE_RATE_LIMITED = 4029
CLIENT_HELLO_KEYS = frozenset({"type", "client_store_id", "resume_cursor"})

# the phases of a session
AWAITING_HELLO = "awaiting_hello"
ESTABLISHED = "established"
CLOSED = "closed"




def _encodable(message: Any) -> bool:
    try:
        dumps(message).encode("utf-8")
    except (UnicodeEncodeError, RecursionError, ValueError):
        return False
    return True


class SessionTransport(Protocol):
    """What a session needs from its WebSocket connection."""

    def send_text(self, text: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class SessionCommands(Protocol):
    """Where a session's commands go (the relay's CommandProcessor)."""

    def handle(self, session: "Session", message: dict[str, Any]) -> Any: ...

    def audit_unestablished(self, session: "Session", message: dict[str, Any],
                            error: WireError) -> None: ...

    def rate_limited(self, session: "Session", message: dict[str, Any],
                     error: WireError) -> None: ...


class SessionHistory(Protocol):
    """Where a session's history requests go (the relay's HistoryRequests)."""

    def handle(self, session: Any, message: dict[str, Any]) -> None: ...


class SessionHost(Protocol):
    """What a session needs from the relay (the hub): binding, commands, history and audit."""

    commands: SessionCommands
    history: SessionHistory

    def session_established(self, session: "Session") -> None: ...

    def session_closed(self, session: "Session") -> None: ...

    def filter_changed(self, session: "Session", previous: FilterConditions) -> None: ...

    def session_rate_limited(self, session: "Session", limit: str) -> None: ...

    def permitted_commands(self, identity: Identity) -> list[str]: ...


class Session:
    """Session state and message handling; the hub does binding, commands and audit."""

    log = Logger()

    def __init__(self, hub: SessionHost, identity: Identity, transport: SessionTransport,
                 *, session_id: str, queue_limit: int, queue_bytes: int,
                 pre_state_cap: int = 200, rates: SessionRates | None = None) -> None:
        self.hub = hub
        self.identity = identity
        self.transport = transport
        self.session_id = session_id
        self.phase = AWAITING_HELLO  # the machine's state, kept by its transitions
        self.client_store_id: str | None = None
        self.filter = FilterConditions()
        self.filter_version = 0
        self.bound: set[str] = set()
        # targets whose first state this session has received; until then only the
        # target_list speaks for them, and audit records wait (order rule of §3)
        self.stated: set[str] = set()
        self._pre_state: dict[str, collections.deque[str]] = {}
        self._pre_state_cap = pre_state_cap
        self.commands_in_flight = 0
        self._refused = False  # the first message was not a valid client_hello
        #: per-session rate limits (None: unlimited); an empty bucket closes the session
        self.rates = rates
        self._limited = False  # closed for exceeding a rate: nothing more is read
        self.history_in_flight = 0
        # target-reported drops (per target, cumulative) merged into our own drop counts
        self._target_dropped: dict[str, tuple[int, int]] = {}
        self.outbox = Outbox(transport.send_text, queue_limit,
                             render_dropped=self._render_dropped,
                             on_overflow=self._overflowed, byte_limit=queue_bytes)
        self._machine = _SESSION_MACHINE(self)

    @property
    def established(self) -> bool:
        """A valid ``client_hello`` arrived and the session is not closed."""
        return self.phase == ESTABLISHED

    @property
    def closed(self) -> bool:
        return self.phase == CLOSED

    # outgoing
    def send(self, obj: dict[str, Any], target_id: str | None = None) -> None:
        """Queue one message object."""
        self.send_text(str(obj["type"]), target_id, dumps(obj))

    def send_text(self, kind: str, target_id: str | None, text: str) -> None:
        self.outbox.put(kind, target_id, text)  # a closed session's outbox takes nothing

    def send_error(self, error: WireError, command_id: str | None = None) -> None:
        """An ``error``; ``command_id`` names the command it answers (null otherwise)."""
        self.send({"type": "error", "command_id": command_id, "error": error.to_json()})

    def _render_dropped(self, target_id: str) -> str:
        events, logs = self.dropped_counts(target_id)
        return dumps({"type": "dropped_count", "target_id": target_id,
                      "dropped_event_count": events, "dropped_log_count": logs})

    def dropped_counts(self, target_id: str) -> tuple[int, int]:
        """Drops on the way to this session: reported by the target plus our own queue."""
        remote = self._target_dropped.get(target_id, (0, 0))
        local = self.outbox.dropped.get(target_id, [0, 0])
        return remote[0] + local[0], remote[1] + local[1]

    def _overflowed(self) -> None:
        self.log.warn("session {session_id} closed: outbound queue overflow",
                      session_id=self.session_id)
        self.transport.close(CLOSE_SLOW_CONSUMER, "session queue overflow")

    # lifecycle
    def open(self) -> None:
        """Send ``server_hello``."""
        self.send({
            "type": "server_hello",
            "session_id": self.session_id,
            "client_identity": self.identity.client_identity,
            "log_event_filter_mode": "remote",
            "log_event_filter_conditions": self.filter.to_json(),
            "filter_config_version": self.filter_version,
            "principal": self.identity.principal,
            "permitted_commands": self.hub.permitted_commands(self.identity),
        })

    def lost(self) -> None:
        """The WebSocket closed (or the relay closes the session): unbind everything."""
        self._machine.lost()

    # incoming
    def receive(self, payload: bytes, is_binary: bool) -> None:
        """Handle one complete client message."""
        if self.closed or self._refused or self._limited:
            return  # after a refused first message or a rate limit nothing more is read
        if not self.established:
            self._first(payload, is_binary)
            return
        try:
            self._dispatch(self._parse(payload, is_binary))
        except WireError as error:
            self.send_error(error)

    def _parse(self, payload: bytes, is_binary: bool) -> dict[str, Any]:
        """One client message as a JSON object with a string ``type``, else WireError."""
        if is_binary:
            raise WireError("invalid_message_json", "session",
                            "binary messages are not JSON text")
        try:
            message = loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise WireError("invalid_message_json", "session",
                            f"message is not valid JSON: {str(e)[:120]}") from None
        if surrogate_escaped(payload) and not _encodable(message):
            # "\ud800" escapes decode to strings no UTF-8 reply, log or audit row can hold
            raise WireError("invalid_message_json", "session",
                            "message is not valid JSON: lone surrogate escape")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise WireError("invalid_message_schema", "session",
                            "a message must be a JSON object with a string type")
        return message

    def _first(self, payload: bytes, is_binary: bool) -> None:
        """The first client message: a valid ``client_hello``, or one ``protocol_error``
        (stage ``session``) and a close, whatever else it was; a command sent first is
        still audited as rejected."""
        message: dict[str, Any] | None = None
        try:
            message = self._parse(payload, is_binary)
            kind = message["type"]
            if kind != "client_hello":
                raise WireError("protocol_error", "session",
                                f"expected client_hello, got {kind[:64]!r}")
            self._client_hello(message)
            return
        except WireError as error:
            problem = error.message if error.code == "protocol_error" else \
                f"expected a valid client_hello: {error.code}: {error.message}"
            refusal = WireError("protocol_error", "session", problem)
        self.send_error(refusal)
        if message is not None and message.get("type") == "command":
            self.hub.commands.audit_unestablished(self, message, refusal)
        self.log.info("session {session_id} closed: {problem}", session_id=self.session_id,
                      problem=refusal.message)
        self._refused = True
        self.transport.close(CLOSE_PROTOCOL_ERROR, "expected client_hello")

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        rates = self.rates
        if kind == "command":
            if rates is not None and not rates.commands.take():
                self.rate_limited("commands", rates.commands.exceeded("commands"), message)
                return
            self.hub.commands.handle(self, message)
        elif kind == "history_request":
            self.hub.history.handle(self, message)
        elif kind == "log_event_filter_conditions":
            if rates is not None and not rates.filter_changes.take():
                self.rate_limited("filter_changes", rates.filter_changes.exceeded("filter changes"))
                return
            self._filter(message)
        elif kind == "client_hello":
            raise WireError("protocol_error", "session", "session is already established")
        else:
            raise WireError("unsupported_message_type", "session",
                            f"unsupported message type {kind!r}")

    @property
    def limited(self) -> bool:
        """The session exceeded a rate limit and is closing."""
        return self._limited

    def rate_limited(self, limit: str, problem: str,
                     command: dict[str, Any] | None = None) -> None:
        """Close the session for exceeding the rate ``limit`` (``commands``, ``rejected``,
        ``filter_changes``): one ``rate_limited`` error (answering ``command`` when a command
        tripped it, which is then audited once as ``rejected`` for the whole excess);
        nothing the session sends afterwards is read."""
        if self._limited or self.closed:
            return
        self._limited = True
        self.hub.session_rate_limited(self, limit)
        error = WireError("rate_limited", "session", f"session closed: {problem}")
        if command is not None:
            self.hub.commands.rate_limited(self, command, error)
        else:
            self.send_error(error)
        self.log.warn("session {session_id} of {principal} closed: {problem}",
                      session_id=self.session_id, principal=self.identity.principal,
                      problem=problem)
        self.transport.close(CLOSE_RATE_LIMITED, "rate limited")

    def _client_hello(self, message: dict[str, Any]) -> None:
        unknown = sorted(set(message) - CLIENT_HELLO_KEYS)
        if unknown:
            raise WireError("unsupported_field", "session", f"unsupported field {unknown[0]!r}")
        store_id = message.get("client_store_id")
        if not isinstance(store_id, str) or not store_id.strip() or len(store_id) > 256:
            raise WireError("invalid_message_schema", "session",
                            "client_store_id must be a non-blank string")
        cursor = message.get("resume_cursor")
        if cursor is not None and not isinstance(cursor, dict):
            raise WireError("invalid_message_schema", "session",
                            "resume_cursor must be an object")
        self.client_store_id = store_id
        self._machine.hello()

    def _filter(self, message: dict[str, Any]) -> None:
        conditions = FilterConditions.from_message(message)
        previous, self.filter = self.filter, conditions
        self.filter_version += 1
        self.hub.filter_changed(self, previous)

    # deliveries from links and the hub
    def forget(self, target_id: str) -> None:
        """The target is no longer bound."""
        self.bound.discard(target_id)
        self.stated.discard(target_id)
        self._pre_state.pop(target_id, None)

    def deliver_state(self, target_id: str, state: dict[str, Any]) -> None:
        if target_id not in self.bound:
            return
        self.send({"type": "state", "target_id": target_id, "state": state}, target_id)
        self.stated.add(target_id)
        for text in self._pre_state.pop(target_id, ()):
            self.send_text("audit_event", target_id, text)

    def deliver_audit(self, target_id: str, text: str) -> None:
        """An ``audit_event``; held (newest ``pre_state_cap`` kept) until the first state."""
        if target_id not in self.bound:
            return
        if target_id in self.stated:
            self.send_text("audit_event", target_id, text)
            return
        held = self._pre_state.get(target_id)
        if held is None:
            held = self._pre_state[target_id] = collections.deque(maxlen=self._pre_state_cap)
        held.append(text)

    def deliver_push(self, target_id: str, push: dict[str, Any], text: str) -> None:
        if target_id not in self.bound:
            return
        kind = push["type"]  # event, log or state_delta: the link passes nothing else
        if kind == "event":
            if not self.filter.admits_event(push.get("event"), target_id):
                return
        elif kind == "log" and not self.filter.admits_log(push.get("log"), target_id):
            return
        self.outbox.put(kind, target_id, text)  # once per message and session: kept short

    def deliver_dropped(self, target_id: str, events: int, logs: int) -> None:
        if target_id in self.bound:
            self._target_dropped[target_id] = (events, logs)
            self.outbox.note_dropped(target_id)

    def deliver_connection_state(self, target_id: str, state: str, *,
                                 force: bool = False) -> None:
        """A change of the target's link; only after its first state unless ``force``."""
        if not force and target_id not in self.stated:
            return
        self.send({"type": "connection_state", "target_id": target_id, "state": state},
                  target_id)


class _SessionInputs(Protocol):
    """What can happen to a session (the inputs of its machine)."""

    def hello(self) -> None:
        """A valid ``client_hello`` arrived."""

    def lost(self) -> None:
        """The transport closed, or the relay closes the session."""


def _build_session_machine() -> Callable[[Session], _SessionInputs]:
    m = TypeMachineBuilder(_SessionInputs, Session)
    awaiting_hello = m.state(AWAITING_HELLO)
    established = m.state(ESTABLISHED)
    closed = m.state(CLOSED)

    @awaiting_hello.upon(_SessionInputs.hello).to(established)
    def establish(machine: _SessionInputs, session: Session) -> None:
        session.phase = ESTABLISHED
        session.hub.session_established(session)

    @awaiting_hello.upon(_SessionInputs.lost).to(closed)
    @established.upon(_SessionInputs.lost).to(closed)
    def close(machine: _SessionInputs, session: Session) -> None:
        session.phase = CLOSED
        session.outbox.stopProducing()
        session.hub.session_closed(session)

    # the relay closing a session hears from its transport again afterwards
    closed.upon(_SessionInputs.lost).loop().returns(None)
    return m.build()


_SESSION_MACHINE = _build_session_machine()
