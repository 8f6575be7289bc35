"""NDJSON request/response client for the §1 IPC wire: per-call deadlines, bounded in-flight.

One connection carries any number of requests, each answered by exactly one response line
matched by ``request_id``; lines without ``request_id``/``ok`` are pushes handed to
``on_push``. Every request has a deadline (``ipc_timeout``), the number of requests awaiting
an answer is capped (``too_many_requests``), and a lost connection fails everything pending
(``connection_lost``). A late answer to a timed-out request is ignored.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable

from twisted.internet.defer import Deferred, CancelledError
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IReactorUNIX
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import NDJSONReceiver, decode, encode

__all__ = ["NDJSONClientProtocol", "RemoteError", "connect_unix"]


class RemoteError(WireError):
    """An error the peer answered with (``ok: false``), as opposed to a local failure."""

PushHandler = Callable[[dict[str, Any]], None]


class NDJSONClientProtocol(NDJSONReceiver):
    """Client side of one NDJSON request/response connection (see module docstring)."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        default_timeout: float,
        max_line_bytes: int = 16 * 1024 * 1024,
        max_in_flight: int = 256,
        on_push: PushHandler | None = None,
        stage: str = "ipc_request",
        target_id: str | None = None,
    ) -> None:
        super().__init__()
        self.max_line_bytes = max_line_bytes
        self._clock = clock
        self._default_timeout = default_timeout
        self._max_in_flight = max_in_flight
        self._stage = stage
        self._target_id = target_id
        self.on_push = on_push
        self._ids = itertools.count(1)
        self._pending: dict[str, tuple[Deferred[dict[str, Any]], IDelayedCall]] = {}
        self._lost_reason: WireError | None = None
        #: fires with the error that ended the connection (``connection_lost`` for a close)
        self.closed: Deferred[WireError] = Deferred()
        self.connected = False

    # connection lifecycle
    def connectionMade(self) -> None:
        self.connected = True

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.connected = False
        error = self._lost_reason or WireError(
            "connection_lost", self._stage, "IPC connection lost", self._target_id, True
        )
        pending, self._pending = self._pending, {}
        for d, call in pending.values():
            if call.active():
                call.cancel()
            d.errback(error)
        if not self.closed.called:
            self.closed.callback(error)

    def close(self, error: WireError | None = None) -> None:
        """Close the connection, failing pending requests with ``error`` if given."""
        if error is not None and self._lost_reason is None:
            self._lost_reason = error
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self, error: WireError | None = None) -> None:
        """Drop the connection immediately (no flushing of queued writes)."""
        if error is not None and self._lost_reason is None:
            self._lost_reason = error
        if self.transport is not None:
            self.transport.abortConnection()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # requests
    def request(self, method: str, params: Any, timeout: float | None = None
                ) -> Deferred[dict[str, Any]]:
        """Send one request; fires with the ``result`` object or fails with a WireError."""
        if not self.connected:
            return _failed(WireError("connection_lost", self._stage, "IPC connection is closed",
                                     self._target_id, True))
        if len(self._pending) >= self._max_in_flight:
            return _failed(WireError("too_many_requests", self._stage,
                                     f"more than {self._max_in_flight} IPC requests in flight",
                                     self._target_id, True))
        request_id = f"r{next(self._ids)}"
        deadline = self._default_timeout if timeout is None else timeout

        def cancel(d: Deferred[dict[str, Any]]) -> None:
            entry = self._pending.pop(request_id, None)
            if entry is not None and entry[1].active():
                entry[1].cancel()

        d: Deferred[dict[str, Any]] = Deferred(cancel)
        call = self._clock.callLater(deadline, self._timedOut, request_id, method, deadline)
        self._pending[request_id] = (d, call)
        self.transport.write(encode({"request_id": request_id, "method": method,
                                     "params": params}))
        return d

    def _timedOut(self, request_id: str, method: str, deadline: float) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is not None:
            entry[0].errback(WireError(
                "ipc_timeout", self._stage,
                f"no answer to {method} within {deadline:g} s", self._target_id, True))

    # responses and pushes
    def lineReceived(self, line: bytes) -> None:
        try:
            # a target's strings may carry "\ud800" escapes: made encodable here, on entry
            obj = decode(line, stage=self._stage, lone_surrogates="replace")
        except WireError as e:
            self.log.warn("bad line from IPC peer: {error}", error=str(e))
            self.close(WireError("invalid_ipc_response", self._stage,
                                 f"peer sent a line that is not JSON: {e.message}",
                                 self._target_id, True))
            return
        if not isinstance(obj, dict):
            self.close(WireError("invalid_ipc_response", self._stage,
                                 "peer sent a JSON value that is not an object",
                                 self._target_id, True))
            return
        if "request_id" in obj and "ok" in obj:
            self._response(obj)
        elif "type" in obj and "ok" not in obj:
            if self.on_push is not None:
                try:
                    self.on_push(obj)
                except Exception:
                    self.log.failure("push handler failed")
        else:
            self.close(WireError("invalid_ipc_response", self._stage,
                                 "peer sent neither a response nor a push",
                                 self._target_id, True))

    def _response(self, obj: dict[str, Any]) -> None:
        request_id = obj.get("request_id")
        entry = self._pending.pop(request_id, None) if isinstance(request_id, str) else None
        if entry is None and request_id == "invalid-request" and self._pending:
            # the peer could not read our request id: it answers the oldest request
            entry = self._pending.pop(next(iter(self._pending)))
        if entry is None:
            return  # late answer to a request that already timed out or was cancelled
        d, call = entry
        if call.active():
            call.cancel()
        if obj.get("ok") is True and isinstance(obj.get("result"), dict):
            d.callback(obj["result"])
            return
        error = obj.get("error")
        if obj.get("ok") is False and isinstance(error, dict):
            d.errback(RemoteError.from_json(error))
        else:
            d.errback(WireError("invalid_ipc_response", self._stage,
                                "response has neither a result object nor an error object",
                                self._target_id, False))

    def lineLengthExceeded(self) -> None:
        self.abort(WireError("ipc_response_too_large", self._stage,
                             f"peer sent a line over {self.max_line_bytes} bytes",
                             self._target_id, True))


def _failed(error: WireError) -> Deferred[dict[str, Any]]:
    d: Deferred[dict[str, Any]] = Deferred()
    d.errback(error)
    return d


def connect_unix(
    reactor: IReactorUNIX,
    path: str,
    protocol_factory: Callable[[], NDJSONClientProtocol],
    *,
    timeout: float,
) -> Deferred[NDJSONClientProtocol]:
    """Connect to a Unix socket with a deadline; fails with a retryable WireError."""
    endpoint = UNIXClientEndpoint(reactor, path, timeout=timeout)
    d = endpoint.connect(Factory.forProtocol(protocol_factory))

    def failed(f: Failure) -> Failure:
        if f.check(CancelledError, WireError):
            return f
        errno = f.value.osError if isinstance(f.value, ConnectError) else None
        why = os.strerror(errno) if isinstance(errno, int) else f.getErrorMessage()
        raise WireError("ipc_connect_failed", "ipc_connect", f"cannot connect to {path}: {why}",
                        None, True)

    d.addErrback(failed)
    return d
