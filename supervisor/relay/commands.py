"""Command handling (§4): ordered checks, audit before and after, forwarding to the target.

Checks run in the contract's order and the first failure wins; it is sent as ``error`` and
audited as ``rejected``. An accepted command is audited (``accepted``) before it is forwarded;
if that write fails the command is refused (``audit_unavailable``). The outcome is audited
(``completed``/``failed``), the requesting session gets ``command_result`` and then a fresh
``state_delta`` (from the result) or ``state``; every audit record is pushed as
``audit_event`` to all sessions bound to the target.

A relay that stops while commands are with their targets leaves their ``accepted`` records
without an outcome. At start-up (:meth:`CommandProcessor.recover`) each gets an
``interrupted`` record; when the relay next connects to the target, a ``command_completed``
event whose ``correlation_id`` is the command's id (in the first state's recent events, or
streamed later) settles it with a ``completed`` or ``failed`` record saying so. A command
the target never reports finishing (it is still running, the target restarted, or it emits
no command events) stays ``interrupted``.

Floods are bounded (``limits``): a reason longer than ``max_reason_chars`` is refused with
``reason_too_long`` and a manifest larger than ``max_manifest_bytes`` with
``manifest_too_large`` (after the contract's shape check); a refused command's record keeps
its manifest as size and SHA-256 only, its reason cut to ``max_reason_chars``, its ids and
``target`` fields to 256 and 1024 characters and its detail to 1024, so no refusal stores
more than a bounded row. A ``command_id`` already accepted for the same target
within ``command_id_window_seconds`` is refused with ``duplicate_command_id`` (the last check;
the window remembers at most ``command_id_window_size`` ids, the oldest forgotten first and
counted). Refused commands take from the session's ``rejected`` bucket; the one that finds it
empty closes the session (:meth:`CommandProcessor.rate_limited`) with one record for the
whole excess.
"""

from __future__ import annotations

import collections
import hashlib
import json
from typing import Any, Callable, Mapping, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from supervisor.config.relay import RelayConfig
from supervisor.relay.audit import AuditRecord, AuditStore
from supervisor.relay.auth import Authorizer, Identity
from supervisor.relay.registry import Registry
from supervisor.wire.client import RemoteError
from supervisor.wire.commands import CommandResult
from supervisor.wire.vocabulary import COMMANDS, DRY_RUN_COMMANDS, ipc_method, needs_confirmation
from supervisor.wire.errors import WireError
from supervisor.wire.timestamps import rfc3339, unix_nanos

__all__ = ["CommandProcessor", "COMMAND_KEYS"]

COMMAND_KEYS = frozenset({"type", "command_id", "correlation_id", "target_id", "command",
                          "target", "reason", "confirmed", "requested_by", "dry_run"})
TARGET_KEYS = frozenset({"child_path", "child_id", "child_manifest", "signal"})
#: Longest signal name a command may carry (``SIGRTMIN+15``).
MAX_SIGNAL_CHARS = 16
MAX_ID_CHARS = 256
#: interrupted commands a relay start takes up for reconciliation (oldest first)
MAX_RECONCILED = 4096
INTERRUPTED_DETAIL = "relay stopped before the target's answer arrived"


def _refusal(code: str, message: str, target_id: Any, retryable: bool = False) -> WireError:
    return WireError(code, "command_validate", message,
                     target_id if isinstance(target_id, str) else None, retryable)


def _schema_problem(message: dict[str, Any]) -> str | None:
    """The first shape defect of a command message (checked at the contract's 5th step)."""
    command_id = message.get("command_id")
    if not isinstance(command_id, str) or not command_id.strip():
        return "command_id must be a non-blank string"
    if len(command_id) > MAX_ID_CHARS:
        return f"command_id must be at most {MAX_ID_CHARS} characters"
    correlation = message.get("correlation_id")
    if correlation is not None and (not isinstance(correlation, str)
                                    or len(correlation) > MAX_ID_CHARS):
        return "correlation_id must be a string or null"
    target = message.get("target")
    if not isinstance(target, dict):
        return "target must be an object"
    if set(target) - TARGET_KEYS:
        return f"unsupported target field {sorted(set(target) - TARGET_KEYS)[0]!r}"
    if target.get("child_path") is not None and not isinstance(target.get("child_path"), str):
        return "target.child_path must be a string or null"
    if target.get("child_id") is not None and not isinstance(target.get("child_id"), str):
        return "target.child_id must be a string"
    manifest = target.get("child_manifest")
    if manifest is not None and not isinstance(manifest, (dict, str)):
        return "target.child_manifest must be an object, a YAML string or null"
    sig = target.get("signal")
    if sig is not None and (not isinstance(sig, str) or len(sig) > MAX_SIGNAL_CHARS):
        return f"target.signal must be a signal name of at most {MAX_SIGNAL_CHARS} characters"
    if "confirmed" in message and not isinstance(message["confirmed"], bool):
        return "confirmed must be true or false"
    if "dry_run" in message:
        if not isinstance(message["dry_run"], bool):
            return "dry_run must be true or false"
        if message["dry_run"] and message.get("command") not in DRY_RUN_COMMANDS:
            return f"{message.get('command')} has no dry run"
    return None


def _command_id(message: dict[str, Any]) -> str | None:
    """The id of the command ``message``, for the ``command_id`` beside an error answering
    it; null when it has none a client could match."""
    value = message.get("command_id")
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID_CHARS:
        return value
    return None


def _manifest_bytes(manifest: Any) -> int:
    """The size of a ``child_manifest`` in UTF-8 bytes (as compact JSON when an object)."""
    if manifest is None:
        return 0
    return len(_manifest_text(manifest).encode("utf-8", "surrogatepass"))


def _manifest_text(manifest: Any) -> str:
    if isinstance(manifest, str):
        return manifest
    return json.dumps(manifest, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _refused_target(target: Any) -> dict[str, Any] | None:
    """A refused command's ``target`` as audited: the manifest as its size and SHA-256, the
    other known fields cut to a bounded length, unknown fields left out."""
    if not isinstance(target, dict):
        return None
    kept: dict[str, Any] = {}
    for key in sorted(TARGET_KEYS & set(target)):
        value = target[key]
        if key == "child_manifest":
            if value is not None:
                raw = _manifest_text(value).encode("utf-8", "surrogatepass")
                kept["child_manifest_bytes"] = len(raw)
                kept["child_manifest_sha256"] = hashlib.sha256(raw).hexdigest()
        elif isinstance(value, str):
            kept[key] = value[:MAX_ID_CHARS * 4]
        elif value is None or isinstance(value, (bool, int, float)):
            kept[key] = value
    return kept


class Session(Protocol):
    """What command handling needs from a dashboard session."""

    session_id: str
    identity: Identity
    established: bool
    closed: bool
    bound: set[str]
    commands_in_flight: int
    rates: Any

    def rate_limited(self, limit: str, problem: str,
                     command: dict[str, Any] | None = None) -> None: ...

    def send(self, obj: dict[str, Any], target_id: str | None = None) -> None: ...

    def send_error(self, error: WireError, command_id: str | None = None) -> None: ...

    def deliver_state(self, target_id: str, state: dict[str, Any]) -> None: ...


class Link(Protocol):
    """What command handling needs from a target's IPC link."""

    state: str

    def request(self, method: str, params: Any, timeout: float) -> Deferred[dict[str, Any]]: ...

    def fetch_state(self) -> Deferred[dict[str, Any]]: ...


class Hub(Protocol):
    """What command handling needs from the session hub."""

    @property
    def config(self) -> RelayConfig: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def links(self) -> Mapping[str, Link]: ...

    def publish_audit(self, record: AuditRecord) -> None: ...


class CommandProcessor:
    """Validates, audits and forwards commands on behalf of sessions."""

    log = Logger()

    def __init__(self, hub: Hub, audit: AuditStore, authorizer: Authorizer,
                 clock: Any, count: Callable[[str], None] | None = None) -> None:
        self._hub = hub
        self._audit = audit
        self._authorizer = authorizer
        self._clock = clock
        #: told each command's result once: rejected, audit_unavailable, completed or failed
        self._count = count or (lambda result: None)
        # target_id → command_id → its interrupted record, awaiting the target's word
        self._interrupted: dict[str, dict[str, AuditRecord]] = {}
        # (target_id, command_id) → when it was accepted, oldest first (the replay window)
        self._seen: collections.OrderedDict[tuple[str, str], float] = \
            collections.OrderedDict()
        #: ids forgotten before their window ended because the window was full
        self.command_ids_evicted = 0

    # after a relay crash
    async def recover(self) -> None:
        """Mark commands a previous run left unanswered ``interrupted`` and remember every
        interrupted command for :meth:`reconcile` (see module docstring)."""
        pending = await self._audit.interrupt_unsettled(INTERRUPTED_DETAIL,
                                                        self._clock.seconds(), MAX_RECONCILED)
        for record in pending:
            if record.target_id is not None and record.command_id is not None:
                self._interrupted.setdefault(record.target_id, {})[record.command_id] = record
        if pending:
            self.log.warn("{count} commands were interrupted by a relay stop; they are settled "
                          "from their targets' events when those connect", count=len(pending))

    @property
    def interrupted(self) -> dict[str, dict[str, AuditRecord]]:
        """Interrupted commands not yet settled, by target and command id."""
        return self._interrupted

    def reconcile(self, target_id: str, events: list[Any]) -> None:
        """Settle interrupted commands of ``target_id`` that these events report finished."""
        pending = self._interrupted.get(target_id)
        if not pending:
            return
        for event in events:
            if not isinstance(event, dict) or event.get("event_type") != "command_completed":
                continue
            record = pending.pop(str(event.get("correlation_id")), None)
            if record is None:
                continue
            payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
            status, error = payload.get("status"), payload.get("error")
            detail = (f"settled from the target's command_completed event (sequence "
                      f"{event.get('sequence')}): {status}" + (f": {error}" if error else ""))
            final = attrs.evolve(record, audit_id=None,
                                 result="completed" if status == "completed" else "failed",
                                 detail=detail[:MAX_ID_CHARS * 4],
                                 occurred_at=self._clock.seconds())
            self._settle(target_id, record, final)
        if not pending:
            self._interrupted.pop(target_id, None)

    def _settle(self, target_id: str, record: AuditRecord, final: AuditRecord) -> None:
        def failed(f: Any) -> None:
            self.log.error("cannot audit the outcome of interrupted {command_id}: {error}; "
                           "tried again on the next event", command_id=record.command_id,
                           error=f.getErrorMessage())
            self._interrupted.setdefault(target_id, {})[str(record.command_id)] = record

        self._audit.append(final).addCallbacks(self._hub.publish_audit, failed)

    def permitted(self, identity: Identity) -> list[str]:
        """The commands ``identity`` is granted, in the contract's order."""
        return self._authorizer.permitted(identity)

    # validation
    def check(self, session: Session, message: dict[str, Any]) -> WireError | None:
        """The §4 checks in order; None when the command may go ahead."""
        target_id = message.get("target_id")
        if not session.established:
            return _refusal("session_not_established",
                            "send client_hello before commands", target_id)
        if not isinstance(target_id, str) or target_id not in session.bound:
            return _refusal("target_not_bound",
                            f"target {target_id!r} is not bound to this session", target_id)
        link = self._hub.links.get(target_id)
        entry = self._hub.registry.get(target_id)
        if link is None or entry is None or link.state != "connected":
            state = link.state if link is not None else "unavailable"
            return _refusal("target_unavailable", f"target {target_id} is {state}", target_id,
                            True)
        command = message.get("command")
        if (not isinstance(command, str) or command not in COMMANDS
                or entry.registration.command(command) is None):
            return _refusal("unsupported_command",
                            f"target {target_id} does not support command {command!r}",
                            target_id)
        unknown = sorted(set(message) - COMMAND_KEYS)
        if unknown:
            return _refusal("unsupported_field", f"unsupported field {unknown[0]!r}", target_id)
        problem = _schema_problem(message)
        if problem is not None:
            return WireError("invalid_message_schema", "command_validate", problem, target_id)
        limits = self._hub.config.limits
        reason = message.get("reason")
        if isinstance(reason, str) and len(reason) > limits.max_reason_chars:
            return _refusal("reason_too_long",
                            f"reason has {len(reason)} characters, at most "
                            f"{limits.max_reason_chars} are accepted", target_id)
        size = _manifest_bytes(message["target"].get("child_manifest"))
        if size > limits.max_manifest_bytes:
            return _refusal("manifest_too_large",
                            f"child_manifest has {size} bytes, at most "
                            f"{limits.max_manifest_bytes} are accepted", target_id)
        if message.get("requested_by") is not None:
            return _refusal("requested_by_override",
                            "requested_by is set by the relay from the session identity",
                            target_id)
        reason = message.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            return _refusal("empty_reason", "every command needs a non-blank reason", target_id)
        if (needs_confirmation(command, message.get("dry_run") is True)
                and message.get("confirmed") is not True):
            return _refusal("confirmation_required",
                            "dangerous command requires confirmed=true", target_id)
        if not self._authorizer.permits(session.identity, command):
            return _refusal("command_not_permitted",
                            f"{session.identity.principal} may not run {command}", target_id)
        limit = limits.max_commands_in_flight
        if session.commands_in_flight >= limit:
            return _refusal("too_many_commands",
                            f"at most {limit} commands may be in flight per session",
                            target_id, True)
        if (target_id, message["command_id"]) in self._window():
            return _refusal("duplicate_command_id",
                            f"command {message['command_id']!r} was already accepted for "
                            f"{target_id} within {limits.command_id_window_seconds:g} s",
                            target_id)
        return None

    def _window(self) -> collections.OrderedDict[tuple[str, str], float]:
        """The accepted command ids still inside the replay window."""
        horizon = self._clock.seconds() - self._hub.config.limits.command_id_window_seconds
        seen = self._seen
        while seen:
            key, at = next(iter(seen.items()))
            if at > horizon:
                break
            del seen[key]
        return seen

    def _remember(self, target_id: str, command_id: str) -> None:
        seen = self._window()
        seen[(target_id, command_id)] = self._clock.seconds()
        if len(seen) > self._hub.config.limits.command_id_window_size:
            seen.popitem(last=False)
            self.command_ids_evicted += 1
            if self.command_ids_evicted in (1, 10, 100) or self.command_ids_evicted % 1000 == 0:
                self.log.warn("the command id window is full; the oldest ids are forgotten "
                              "before their window ends ({count} so far)",
                              count=self.command_ids_evicted)

    def _forget(self, target_id: str, command_id: str) -> None:
        self._seen.pop((target_id, command_id), None)

    # entry points
    def audit_unestablished(self, session: Session, message: dict[str, Any],
                            error: WireError) -> None:
        """A command sent before ``client_hello``: the session answered it with ``error``
        and closes; the command is audited as rejected like every refused one."""
        self._audit_rejected(session, message, error)

    def rate_limited(self, session: Session, message: dict[str, Any],
                     error: WireError) -> None:
        """``message`` tripped a rate limit of ``session`` (which closes): answered with
        ``error`` and audited once as ``rejected``, standing for the whole excess."""
        self._count("rejected")
        session.send_error(error, _command_id(message))
        self._audit_rejected(session, message, error)

    def handle(self, session: Session, message: dict[str, Any]) -> Deferred[None]:
        """Process one command message from an established session."""
        error = self.check(session, message)
        if error is not None:
            self._refuse(session, message, error)
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        self._remember(message["target_id"], message["command_id"])
        session.commands_in_flight += 1
        d = Deferred.fromCoroutine(self._run(session, message))

        def done(result: Any) -> Any:
            session.commands_in_flight -= 1
            return result

        d.addBoth(done)
        d.addErrback(lambda f: self.log.failure("command handling failed", f))
        return d

    # helpers
    def _record(self, session: Session, message: dict[str, Any], result: str,
                detail: str) -> AuditRecord:
        refused = result == "rejected"
        # a refused command may carry anything: its row keeps a bounded part of each field
        id_limit = MAX_ID_CHARS if refused else MAX_ID_CHARS * 16

        def text(key: str, limit: int = id_limit) -> str | None:
            value = message.get(key)
            return value[:limit] if isinstance(value, str) else None

        target = message.get("target")
        if refused:
            target = _refused_target(target)
            detail = detail[:MAX_ID_CHARS * 4]
        return AuditRecord(
            session_id=session.session_id,
            identity=session.identity,
            target_id=text("target_id"),
            command_id=text("command_id"),
            command=text("command"),
            target=target if isinstance(target, dict) else None,
            reason=text("reason", self._hub.config.limits.max_reason_chars),
            confirmed=message.get("confirmed") is True,
            result=result,
            detail=detail,
            occurred_at=self._clock.seconds(),
        )

    def _refuse(self, session: Session, message: dict[str, Any], error: WireError) -> None:
        rates = session.rates
        if rates is not None and not rates.rejected.take():
            session.rate_limited("rejected", f"{rates.rejected.exceeded('refused commands')} "
                                 f"(the last: {error.code})", message)
            return
        self._count("rejected")
        session.send_error(error, _command_id(message))
        self._audit_rejected(session, message, error)

    def _audit_rejected(self, session: Session, message: dict[str, Any],
                        error: WireError) -> None:
        record = self._record(session, message, "rejected", f"{error.code}: {error.message}")
        d = self._audit.append(record)
        d.addCallbacks(self._hub.publish_audit,
                       lambda f: self.log.error("cannot audit rejected command {command_id}: "
                                                "{error}", command_id=record.command_id,
                                                error=f.getErrorMessage()))

    async def _run(self, session: Session, message: dict[str, Any]) -> None:
        target_id: str = message["target_id"]
        command: str = message["command"]
        command_id: str = message["command_id"]
        correlation_id = message.get("correlation_id") or command_id
        entry = self._hub.registry.get(target_id)
        spec = entry.registration.command(command) if entry is not None else None
        dry_run = message.get("dry_run") is True
        note = " (dry run)" if dry_run else ""
        try:
            accepted = await self._audit.append(
                self._record(session, message, "accepted", "forwarded to target" + note))
        except Exception as e:
            self._count("audit_unavailable")
            self.log.error("audit write failed; refusing {command_id}: {error}",
                           command_id=command_id, error=str(e))
            self._forget(target_id, command_id)  # never run: the client may send it again
            session.send_error(WireError(
                "audit_unavailable", "audit",
                "command refused: its audit record could not be written", target_id, True),
                command_id)
            return
        self._hub.publish_audit(accepted)

        target = message["target"]
        child_path = target.get("child_path")
        if child_path is None and isinstance(target.get("child_id"), str):
            child_path = f"/root/{target['child_id']}"
        now = self._clock.seconds()
        params = {
            "command_id": command_id,
            "correlation_id": correlation_id,
            "target_id": target_id,
            "command": command,
            "target": {"child_path": child_path, "child_manifest": target.get("child_manifest"),
                       **({"signal": target["signal"]} if target.get("signal") is not None else {})},
            "reason": message["reason"],
            "requested_by": session.identity.principal,
            "confirmed": message.get("confirmed") is True,
            "requested_at": rfc3339(now),
            "requested_at_unix_nanos": unix_nanos(now),
        }
        if dry_run:
            params["dry_run"] = True
        link = self._hub.links.get(target_id)
        timeout = float(spec.timeout_seconds) if spec is not None else 30.0
        result = await self.outcome(link, session, command, params, timeout)

        audit_result = "completed" if result.succeeded else "failed"
        self._count(audit_result)
        error = result.error
        detail = (result.status if error is None
                  else f"{result.status}: {error.code}: {error.message}") + note
        final = attrs.evolve(accepted, audit_id=None, result=audit_result, detail=detail,
                             occurred_at=self._clock.seconds())
        stored: AuditRecord | None
        try:
            stored = await self._audit.append(final)
        except Exception as e:
            stored = None
            self.log.error("cannot audit outcome of {command_id}: {error}",
                           command_id=command_id, error=str(e))
        session.send(result.to_message(), target_id)
        if stored is not None:
            self._hub.publish_audit(stored)
        await self._refresh(session, target_id, result)

    def forward(self, link: Link, session: Session | None, method: str, params: dict[str, Any],
                timeout: float) -> Deferred[dict[str, Any]]:
        """Send one command request on ``link`` (an IPC method and its params); a subclass
        may carry more of ``session`` (a gateway forwards the operator's identity)."""
        return link.request(method, params, timeout)

    async def outcome(self, link: Link | None, session: Session | None, command: str,
                      params: dict[str, Any], timeout: float) -> CommandResult:
        """Send the command (``session`` is for :meth:`forward`; a fleet host passes None);
        the target's answer read against what the relay would report itself (see
        :class:`CommandResult`), or that report when there is no usable answer."""
        target_id = params["target_id"]

        def own(error: WireError | None, status: str = "failed") -> CommandResult:
            return CommandResult(
                command_id=params["command_id"],
                correlation_id=params["correlation_id"],
                target_id=target_id,
                accepted=False,
                status=status,
                requested_by=params["requested_by"],
                error=error,
                state_delta=None,
                completed_at=rfc3339(self._clock.seconds()),
            )

        if link is None:
            return own(WireError("target_unavailable", "command_forward",
                                 f"target {target_id} is not connected", target_id, True))
        try:
            answer = await self.forward(link, session, ipc_method(command), params, timeout)
        except RemoteError as e:
            return own(e, "rejected")
        except WireError as e:
            if e.code == "ipc_timeout":
                e = WireError("command_timeout", "command_forward",
                              f"no result from target within {timeout:g} s", target_id, True)
            return own(e)
        result = answer.get("result")
        if answer.get("type") != "command_result" or not isinstance(result, dict):
            return own(WireError("invalid_ipc_response", "command_forward",
                                 "target answered without a command_result", target_id, False))
        return CommandResult.from_json(result, own(None))

    async def _refresh(self, session: Session, target_id: str, result: CommandResult) -> None:
        """After ``command_result``: the result's delta, else a freshly fetched state."""
        if session.closed or target_id not in session.bound:
            return
        delta = result.state_delta
        if delta is not None:
            session.send({"type": "state_delta", "target_id": target_id, "delta": delta},
                         target_id)
            return
        link = self._hub.links.get(target_id)
        if link is None or link.state != "connected":
            return
        try:
            state = await link.fetch_state()
        except WireError as e:
            self.log.info("no fresh state after command: {error}", error=str(e))
            return
        session.deliver_state(target_id, state)
