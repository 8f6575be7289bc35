"""History pages for a dashboard session: ``history_request`` → ``history_page``.

A session asks for one page of a bound target's history (its ``history.logs`` or
``history.events`` IPC method) on the link the relay already holds to that target. Reads
are not commands: they need no role and are not audited. Each session has at most
:data:`MAX_IN_FLIGHT` requests outstanding; one more is refused with ``history_busy``
(retryable), so a client paging in a loop cannot pile up work on the relay or the target.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.logger import Logger
from twisted.python.failure import Failure

from supervisor.wire.bounds import HISTORY_LIMIT_RANGE, describe, int_in
from supervisor.wire.errors import WireError

MAX_IN_FLIGHT = 4
STREAMS = ("logs", "events")
PARAMS = ("after", "before", "limit", "child_path", "severities", "since", "until", "text")
KEYS = frozenset({"type", "request_id", "target_id", "stream", *PARAMS})


class HistoryLink(Protocol):
    def request(self, method: str, params: Any, timeout: float) -> Any: ...


class HistorySession(Protocol):
    session_id: str
    bound: set[str]
    history_in_flight: int

    @property
    def closed(self) -> bool: ...

    def send(self, obj: dict[str, Any], target_id: str | None = None) -> None: ...


class HistoryRequests:
    """Validates, bounds and forwards history requests; answers each exactly once."""

    log = Logger()

    def __init__(self, links: dict[str, Any], timeout_seconds: float) -> None:
        self._links = links
        self._timeout = timeout_seconds

    def handle(self, session: HistorySession, message: dict[str, Any]) -> None:
        request_id = message.get("request_id")
        if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 256:
            raise WireError("invalid_message_schema", "history",
                            "history_request needs a non-blank request_id")
        target_id = message.get("target_id")
        try:
            unknown = sorted(set(message) - KEYS)
            if unknown:
                raise WireError("unsupported_field", "history", f"unsupported field {unknown[0]!r}")
            stream = message.get("stream")
            if stream not in STREAMS:
                raise WireError("invalid_message_schema", "history",
                                "stream must be \"logs\" or \"events\"")
            if not isinstance(target_id, str) or target_id not in session.bound:
                raise WireError("target_not_bound", "history",
                                "this session has no such target bound", _text(target_id))
            link = self._links.get(target_id)
            if link is None:
                raise WireError("target_unavailable", "history", f"target {target_id} has no link",
                                target_id, True)
            if "limit" in message and not int_in(message["limit"], HISTORY_LIMIT_RANGE):
                # the target's own code for it: the answer does not depend on who checks
                raise WireError("validation_failed", "history",
                                describe("limit", HISTORY_LIMIT_RANGE), target_id)
            if session.history_in_flight >= MAX_IN_FLIGHT:
                raise WireError("history_busy", "history",
                                f"at most {MAX_IN_FLIGHT} history requests at a time", target_id,
                                True)
        except WireError as error:
            self._error(session, request_id, error)
            return
        params = {name: message.get(name) for name in PARAMS if name in message}
        params["target_id"] = target_id
        session.history_in_flight += 1
        d = link.request(f"history.{stream}", params, self._timeout)

        def answered(result: dict[str, Any]) -> None:
            session.send({"type": "history_page", "request_id": request_id,
                          "target_id": target_id, "stream": stream,
                          "records": result.get("records", []),
                          "next_cursor": result.get("next_cursor"),
                          "evicted": bool(result.get("evicted"))}, target_id)

        def failed(failure: Failure) -> None:
            if failure.check(WireError):
                self._error(session, request_id, failure.value)
            else:
                self.log.failure("history request failed", failure)
                self._error(session, request_id, WireError(
                    "internal_error", "history", "internal error", target_id))

        def done(_: object) -> None:
            session.history_in_flight -= 1

        d.addCallbacks(answered, failed)
        d.addBoth(done)

    @staticmethod
    def _error(session: HistorySession, request_id: str, error: WireError) -> None:
        if not session.closed:
            session.send({"type": "error", "command_id": None, "request_id": request_id,
                          "error": error.to_json()}, error.target_id)


def _text(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) else None
