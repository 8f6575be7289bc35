"""The target's ``dashboard-ipc.v1`` server (CONTRACTS.md §1) on a local Unix socket.

Each connection reads NDJSON requests (size-capped), answers each with exactly one line in
request order, and, once subscribed, streams pushes through a bounded queue: when a slow
reader lets more than ``max_pending_pushes`` lines or ``max_pending_push_bytes`` bytes pile
up, the oldest pushes are dropped, counted, and reported in a ``dropped_count`` push as soon
as the reader catches up.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Callable

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from supervisor.config.target import IpcConfig
from supervisor.history.query import END, MAX_LIMIT, CursorError, Filter, parse_cursor, read_page
from supervisor.history.store import HistoryStore
from supervisor.ipc.commands import run_command
from supervisor.tree.journal import EventRecord, LogRecord
from supervisor.tree.runtime import Supervisor
from supervisor.wire.bounds import SEQUENCE_RANGE, TAIL_LINES_RANGE, describe, int_in
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import NDJSONReceiver, OutboundQueue, decode, dumps, encode, quote
from supervisor.tree.descendants import start_time
from supervisor.wire.timestamps import parse_rfc3339
from supervisor.wire.turns import EndOfTurn
from supervisor.wire.unixsocket import peer_credentials
from supervisor.wire.vocabulary import COMMANDS, PROTOCOL_VERSION, ipc_method

INVALID_REQUEST_ID = "invalid-request"
#: ``status`` is an extension beside ``state``: the lean status read; ``history.*`` read the
#: on-disk history (docs/protocol.md).
HISTORY_METHODS = {"history.logs": "logs", "history.events": "events"}
METHODS = frozenset(
    {"hello", "state", "status", "events.subscribe", "logs.tail"}
    | {ipc_method(c) for c in COMMANDS}
    | set(HISTORY_METHODS)
)
SEVERITIES = frozenset({"trace", "debug", "info", "warning", "error"})


def _error(code: str, stage: str, message: str, target_id: str | None = None) -> WireError:
    return WireError(code, stage, message, target_id)


class IpcConnection(NDJSONReceiver, TimeoutMixin):
    """One client connection: requests in order, optional event/log subscriptions."""

    _log = Logger()

    def __init__(self, server: "IpcServer") -> None:
        super().__init__()
        self.server = server
        self.callLater = server.clock.callLater  # TimeoutMixin's timer, on the server's clock
        self.max_line_bytes = server.config.max_request_bytes
        self.out: OutboundQueue | None = None
        self._backlog: collections.deque[bytes] = collections.deque()
        self._busy = False
        self._reading_paused = False
        self._unsubscribe: list[Callable[[], None]] = []
        self.subscriptions: set[str] = set()
        self.dropped_events = 0
        self.dropped_logs = 0
        self._drop_unreported = False
        self.peer_pid: int | None = None
        self.peer_uid: int | None = None
        self.peer_started: str | None = None

    # ------------------------------------------------------------------ connection

    def connectionMade(self) -> None:
        config = self.server.config
        self.out = OutboundQueue(self.transport, config.max_pending_pushes, self._dropped,
                                 max_pending_bytes=config.max_pending_push_bytes,
                                 at_end_of_turn=self.server.end_of_turn.add)
        self.out.on_drained = self._report_drops
        creds = self._peer_credentials()
        uid = None if creds is None else creds[1]
        if creds is not None:
            self.peer_pid, self.peer_uid = creds[0], creds[1]
            self.peer_started = start_time(creds[0])
        if uid is None or uid not in self.server.allowed_uids:
            who = "an unidentifiable peer" if uid is None else f"uid {uid}"
            self._send_error(
                INVALID_REQUEST_ID,
                _error("peer_cred_uid_mismatch", "peer_check", f"{who} may not use this socket"),
            )
            self.close()
            return
        self.server.connections.add(self)
        self.setTimeout(self.server.config.idle_timeout_seconds)

    def _peer_credentials(self) -> tuple[int, int, int] | None:
        """The peer's ``(pid, uid, gid)`` from SO_PEERCRED; None (refused) when unreadable."""
        try:
            return peer_credentials(self.transport.getHandle())
        except OSError:
            return None

    def origin(self) -> tuple[str, dict[str, int] | None]:
        """``relay`` when the peer is the process of the relay this target registered with,
        else ``direct_ipc`` and who the peer is (asked per command: registration may come later)."""
        relay = self.server.relay_process()
        if relay is not None and self.peer_pid is not None and relay == (self.peer_pid, self.peer_started):
            return "relay", None
        return "direct_ipc", {"pid": self.peer_pid, "uid": self.peer_uid}

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.setTimeout(None)
        self.server.connections.discard(self)
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self._backlog.clear()

    def timeoutConnection(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection once what was sent to it is written."""
        assert self.out is not None  # made in connectionMade, before anything can close
        self.out.close()

    def lineLengthExceeded(self) -> None:
        self._send_error(
            INVALID_REQUEST_ID,
            _error("request_too_large", "protocol_parse",
                   f"request line exceeds {self.max_line_bytes} bytes"),
        )
        self.close()

    # ------------------------------------------------------------------ requests in order

    def lineReceived(self, line: bytes) -> None:
        if not self.subscriptions:
            self.resetTimeout()
        self._backlog.append(line)
        backlog_full = len(self._backlog) > self.server.config.max_backlog_lines
        if backlog_full and not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()
        self._next()

    def _next(self) -> None:
        while self._backlog and not self._busy and not self.transport.disconnecting:
            line = self._backlog.popleft()
            self._busy = True
            d = defer.maybeDeferred(self._handle, line)
            d.addErrback(self._internal_error)
            d.addCallback(self._finished)
        drained = len(self._backlog) <= self.server.config.max_backlog_lines // 2
        if self._reading_paused and drained:
            self._reading_paused = False
            self.transport.resumeProducing()

    def _finished(self, _: object) -> None:
        self._busy = False
        self._next()

    def _internal_error(self, failure: Failure) -> None:
        self._log.failure("IPC request handling failed", failure)
        self._send_error(
            INVALID_REQUEST_ID, _error("internal_error", "request", "internal error")
        )

    def _send_error(self, request_id: str, error: WireError) -> None:
        self._respond({"request_id": request_id, "ok": False, "error": error.to_json()})

    def _respond(self, obj: dict[str, Any]) -> None:
        if self.out is not None and not self.transport.disconnecting:
            self.out.send(encode(obj))

    def _handle(self, line: bytes) -> Any:
        try:
            # strings are made encodable on entry: a "\ud800" escape cannot break an answer
            request = decode(line, lone_surrogates="replace")
        except WireError as e:
            self._send_error(INVALID_REQUEST_ID, e)
            return None
        if not isinstance(request, dict):
            self._send_error(
                INVALID_REQUEST_ID,
                _error("invalid_json", "protocol_parse", "request line is not a JSON object"),
            )
            return None
        request_id = request.get("request_id")
        if not isinstance(request_id, str):
            self._send_error(
                INVALID_REQUEST_ID,
                _error("invalid_request", "protocol_parse", "request_id must be a string"),
            )
            return None
        method = request.get("method")
        if not isinstance(method, str) or method not in METHODS:
            shown = method if isinstance(method, str) else type(method).__name__
            self._send_error(
                request_id,
                _error("unsupported_method", "protocol_parse",
                       f"unsupported dashboard IPC method {shown[:100]}"),
            )
            return None
        params = request.get("params")
        if params is not None and not isinstance(params, dict) and method != "hello":
            stage = "command_validate" if method.startswith("command.") else "request"
            self._send_error(
                request_id, _error("invalid_params", stage, "params must be an object or null")
            )
            return None
        params = params if isinstance(params, dict) else {}
        try:
            result = self._dispatch(method, params)
        except WireError as e:
            self._send_error(request_id, e)
            return None
        if isinstance(result, defer.Deferred):
            return result.addCallbacks(self._succeed, self._failed, callbackArgs=(request_id,),
                                       errbackArgs=(request_id,))
        self._succeed(result, request_id)
        return None

    def _failed(self, failure: Failure, request_id: str) -> Failure | None:
        """A method that failed later with an error for the wire answers with it."""
        if failure.check(WireError):
            self._send_error(request_id, failure.value)
            return None
        return failure

    def _succeed(self, result: tuple[dict[str, Any] | bytes, Callable[[], None] | None],
                 request_id: str) -> None:
        body, after = result
        if isinstance(body, bytes):  # a result encoded once for many answers
            if self.out is not None and not self.transport.disconnecting:
                self.out.send(b'{"request_id":%s,"ok":true,"result":%s}\n'
                              % (dumps(request_id).encode("utf-8"), body))
        else:
            self._respond({"request_id": request_id, "ok": True, "result": body})
        if after is not None:
            after()

    # ------------------------------------------------------------------ methods

    def _dispatch(self, method: str, params: dict[str, Any]) -> Any:
        server = self.server
        target_id = server.target_id
        if method == "hello":
            return {
                "type": "hello",
                "protocol_version": PROTOCOL_VERSION,
                "target_id": target_id,
                "registration": server.registration_payload,
            }, None
        if method.startswith("command."):
            origin, peer = self.origin()
            return run_command(server, method, params, origin, peer).addCallback(
                lambda body: (body, None))
        if method in HISTORY_METHODS:
            return server.history_page(HISTORY_METHODS[method], params).addCallback(
                lambda body: (body, None))
        reads = method in ("state", "status")
        self._check_target(params, "state" if reads else "subscription")
        if reads:
            return server.encoded_result(method), None
        if params.get("session_established") is not True:
            raise _error(
                "session_required", "subscription",
                "subscriptions need session_established: true from a dashboard session",
                target_id,
            )
        since = params.get("since_sequence")
        if since is not None and not int_in(since, SEQUENCE_RANGE):
            raise _error("validation_failed", "subscription",
                         describe("since_sequence", SEQUENCE_RANGE), target_id)
        if method == "events.subscribe":
            kind = "events"
            after = lambda: self._subscribe_events(since or 0)  # noqa: E731
        else:
            lines = params.get("lines", 100)
            if not int_in(lines, TAIL_LINES_RANGE):
                raise _error("validation_failed", "subscription",
                             describe("lines", TAIL_LINES_RANGE), target_id)
            kind = "logs"
            after = lambda: self._subscribe_logs(lines, since)  # noqa: E731
        if kind in self.subscriptions:
            raise _error("already_subscribed", "subscription",
                         f"this connection already follows {kind}", target_id)
        return {"type": "subscription", "target_id": target_id, "subscription": kind}, after

    def _check_target(self, params: dict[str, Any], stage: str) -> None:
        given = params.get("target_id")
        if given is not None and given != self.server.target_id:
            raise _error("validation_failed", stage,
                         f"this is target {self.server.target_id}, not {str(given)[:100]}",
                         self.server.target_id)

    # ------------------------------------------------------------------ streaming

    def _mark_subscribed(self, kind: str) -> None:
        self.subscriptions.add(kind)
        self.setTimeout(None)

    def _subscribe_events(self, since: int) -> None:
        journal = self.server.supervisor.events
        self._mark_subscribed("events")
        replay = journal.after(since)
        first = replay[0].sequence if replay else journal.last_sequence + 1
        gap = first - since - 1
        if gap > 0:
            self.dropped_events += gap
            self._push_dropped_count()
        for record in replay:
            self._push_event(record)
        self._unsubscribe.append(journal.subscribe(self._push_event))
        self._unsubscribe.append(self.server.supervisor.subscribe_state(self._push_delta))

    def _subscribe_logs(self, lines: int, since: int | None) -> None:
        logs = self.server.supervisor.logs
        self._mark_subscribed("logs")
        replay = logs.after(since) if since is not None else logs.last(lines)
        for record in replay:
            self._push_log(record)
        self._unsubscribe.append(logs.subscribe(self._push_log))

    def _push(self, line: bytes, tag: str) -> None:
        if self.out is not None and not self.transport.disconnecting:
            self.out.send(line, tag)

    def _push_event(self, record: EventRecord) -> None:
        self._push(self.server.push_line("event", record), "event")

    def _push_log(self, record: LogRecord) -> None:
        self._push(self.server.push_line("log", record), "log")

    def _push_delta(self, delta: dict[str, Any]) -> None:
        line = encode({"type": "state_delta", "target_id": self.server.target_id, "delta": delta})
        self._push(line, "event")

    def _dropped(self, tag: str) -> None:
        if tag == "log":
            self.dropped_logs += 1
        else:
            self.dropped_events += 1
        self.server.dropped_pushes[tag] += 1
        self._drop_unreported = True

    def _report_drops(self) -> None:
        if self._drop_unreported:
            self._drop_unreported = False
            self._push_dropped_count()

    def _push_dropped_count(self) -> None:
        self._respond(
            {
                "type": "dropped_count",
                "target_id": self.server.target_id,
                "dropped_event_count": self.dropped_events,
                "dropped_log_count": self.dropped_logs,
            }
        )


class IpcServer(Factory):
    """Shared state of all IPC connections of one target."""

    _log = Logger()
    noisy = False  # the service logs where it listens

    def __init__(
        self,
        supervisor: Supervisor,
        config: IpcConfig,
        registration_payload: dict[str, Any] | None,
        clock: IReactorTime,
        relay_process: Callable[[], tuple[int, str | None] | None] = lambda: None,
        history: HistoryStore | None = None,
    ) -> None:
        self.supervisor = supervisor
        #: the on-disk history that ``history.*`` methods read, when the target keeps one
        self.history = history
        self.config = config
        self.clock = clock
        self.target_id = config.target_id
        self.display_name = (
            config.registration.display_name if config.registration.enabled else config.target_id
        )
        self.registration_payload = registration_payload
        #: ``(pid, start time)`` of the relay's process as the last registration ack saw it
        self.relay_process = relay_process
        self.allowed_uids = frozenset({os.getuid(), *config.allowed_uids})
        self.connections: set[IpcConnection] = set()
        #: pushes dropped from slow readers' queues, by tag (``event``: events and deltas)
        self.dropped_pushes = {"event": 0, "log": 0}
        self._encoded: dict[str, tuple[Any, bytes]] = {}
        #: flushes the pushes each connection holds at the end of the turn they were sent in
        self.end_of_turn = EndOfTurn(clock)
        #: ``encode({"type": kind, "target_id": ..., kind: record})`` up to the record's text
        self._push_openings = {kind: '{"type":%s,"target_id":%s,%s:' % (
            quote(kind), quote(self.target_id), quote(kind)) for kind in ("event", "log")}
        self._results: dict[str, tuple[tuple[Any, ...], bytes]] = {}
        #: how often a ``state``/``status`` result was encoded, and how often one was reused
        self.result_encodings = 0
        self.result_reuses = 0

    def encoded_result(self, method: str) -> bytes:
        """The encoded result of ``state`` or ``status``, built once and reused for every
        answer while nothing it shows has changed.

        ``status`` shows only what a new ``state_generation`` announces; ``state`` also holds
        the recent events and logs and the rings' eviction counts. One entry per method.
        """
        sup = self.supervisor
        tree = sup.tree
        if method == "status":
            key: tuple[Any, ...] = (tree.state_generation,)
        else:
            key = (tree.state_generation, tree.config_version, sup.events.last_sequence,
                   sup.events.evicted, sup.logs.last_sequence, sup.logs.evicted)
        cached = self._results.get(method)
        if cached is not None and cached[0] == key:
            self.result_reuses += 1
            return cached[1]
        if method == "status":
            result = {"type": "status", **sup.lean_status(self.display_name)}
        else:
            result = {"type": "state", "target_id": self.target_id,
                      "state": sup.state(self.display_name)}
        body = dumps(result).encode("utf-8")
        self._results[method] = (key, body)
        self.result_encodings += 1
        return body

    def push_line(self, kind: str, record: EventRecord | LogRecord) -> bytes:
        """The push line for ``record``, encoded once however many connections stream it."""
        cached = self._encoded.get(kind)
        if cached is not None and cached[0] is record:
            return cached[1]
        line = (self._push_openings[kind] + record.json_text() + "}\n").encode("utf-8")
        self._encoded[kind] = (record, line)
        return line

    def history_page(self, stream: str, params: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        """One page of the history (``history.logs`` / ``history.events``), read off the reactor."""
        kwargs = self._history_params(stream, params)  # a WireError answers at once
        assert self.history is not None
        directory = self.history.directory(stream)
        pool = getattr(self.clock, "getThreadPool", None)
        if pool is None:  # a fake clock in tests: read here
            d = defer.maybeDeferred(read_page, directory, **kwargs)
        else:
            d = threads.deferToThreadPool(self.clock, pool(), read_page, directory, **kwargs)

        def done(page: Any) -> dict[str, Any]:
            return {"type": "history_page", "target_id": self.target_id, **page.to_json()}

        def failed(failure: Failure) -> None:
            if failure.check(CursorError):
                raise _error("validation_failed", "history", str(failure.value), self.target_id)
            self._log.failure("history read failed", failure)
            raise _error("history_unavailable", "history", "the history could not be read",
                         self.target_id)

        return d.addCallbacks(done, failed)

    def _history_params(self, stream: str, params: dict[str, Any]) -> dict[str, Any]:
        target_id = self.target_id

        def bad(message: str) -> WireError:
            return _error("validation_failed", "history", message, target_id)

        given = params.get("target_id")
        if given is not None and given != target_id:
            raise bad(f"this is target {target_id}, not {str(given)[:100]}")
        if self.history is None:
            raise _error("history_disabled", "history",
                         "this target keeps no history (observability.history.enabled)", target_id)
        after, before = params.get("after"), params.get("before")
        for name, cursor in (("after", after), ("before", before)):
            if cursor is not None and not isinstance(cursor, str):
                raise bad(f"{name} must be a cursor string or null")
        if after is not None and before is not None:
            raise bad("give after or before, not both")
        try:
            if after is not None:
                parse_cursor(after)
            if before is not None and before != END:
                parse_cursor(before)
        except CursorError as e:
            raise bad(str(e)) from None
        limit = params.get("limit", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise bad(f"limit must be an integer from 1 to {MAX_LIMIT}")
        child_path = params.get("child_path")
        if child_path is not None and (not isinstance(child_path, str) or not child_path.startswith("/")):
            raise bad("child_path must be a supervisor path such as /root/worker, or null")
        severities = params.get("severities") or []
        if not isinstance(severities, list) or not set(severities) <= SEVERITIES:
            raise bad("severities must be a list of " + ", ".join(sorted(SEVERITIES)))
        bounds: dict[str, int | None] = {}
        for name in ("since", "until"):
            value = params.get(name)
            try:
                bounds[name] = None if value is None else parse_rfc3339(value)
            except (TypeError, ValueError) as e:
                raise bad(f"{name}: {e}") from None
        text = params.get("text")
        if text is not None and (not isinstance(text, str) or len(text) > 1000):
            raise bad("text must be a string of at most 1000 characters, or null")
        where = Filter(stream=stream, child_path=child_path, severities=frozenset(severities),
                       since_nanos=bounds["since"], until_nanos=bounds["until"], text=text or None)
        return {"where": where, "after": after, "before": before, "limit": limit}

    def buildProtocol(self, addr: Any) -> IpcConnection:
        protocol = IpcConnection(self)
        protocol.factory = self
        return protocol
