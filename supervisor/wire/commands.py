"""The ControlCommandResult of CONTRACTS.md §3/§4: what a target answers a command with, and
what the relay forwards to the session that sent it.

The target builds one from its outcome; the relay reads the target's answer with
:meth:`CommandResult.from_json` given a *fallback* (the result it would report itself), which
makes the rules for an imperfect answer explicit: a field that is missing or of the wrong type
takes the fallback's value, a ``status`` outside the four is ``failed``, and ``accepted``
that is not a boolean follows the status. Keys outside the contract are not carried on, but for ``diff``
(``reload_config``'s report, docs/protocol.md).
"""

from __future__ import annotations

from typing import Any

import attrs

from supervisor.wire.errors import WireError

__all__ = ["CommandResult", "STATUSES"]

#: ``status`` values of a command result.
STATUSES: tuple[str, ...] = ("accepted", "rejected", "completed", "failed")


def _same_error(a: WireError | None, b: WireError | None) -> bool:
    """Errors are exceptions (equal only to themselves); results compare their wire form."""
    return (a.to_json() if a else None) == (b.to_json() if b else None)


def _invalid(message: str, target_id: Any = None) -> WireError:
    return WireError("invalid_command_result", "command_result", message,
                     target_id if isinstance(target_id, str) else None)


@attrs.frozen
class CommandResult:
    """One ControlCommandResult; ``completed_at`` is the wire's RFC 3339 string."""

    command_id: str
    correlation_id: str | None
    target_id: str
    accepted: bool
    status: str
    requested_by: str
    error: WireError | None = attrs.field(eq=attrs.cmp_using(eq=_same_error))
    state_delta: dict[str, Any] | None
    completed_at: str
    #: what ``reload_config`` changed (or would change, in a dry run); omitted when absent
    diff: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        body = {
            "command_id": self.command_id,
            "correlation_id": self.correlation_id,
            "target_id": self.target_id,
            "accepted": self.accepted,
            "status": self.status,
            "requested_by": self.requested_by,
            "error": self.error.to_json() if self.error is not None else None,
            "state_delta": self.state_delta,
            "completed_at": self.completed_at,
        }
        if self.diff is not None:
            body["diff"] = self.diff
        return body

    def to_message(self) -> dict[str, Any]:
        """``{type: command_result, target_id, result}``: the IPC result body of §1 and the
        session message of §3 have this one shape."""
        return {"type": "command_result", "target_id": self.target_id, "result": self.to_json()}

    @property
    def succeeded(self) -> bool:
        """Accepted and either done or under way: the audit's ``completed``."""
        return self.accepted and self.status in ("accepted", "completed")

    @classmethod
    def from_json(cls, obj: Any, fallback: CommandResult | None = None) -> CommandResult:
        """Read a result object. Without ``fallback`` every field must be present and well
        typed (``invalid_command_result`` otherwise); with one, see the module docstring."""
        if not isinstance(obj, dict):
            raise _invalid("a command result must be an object")
        target_id = obj.get("target_id")

        def pick(key: str, kind: type, nullable: bool = False) -> Any:
            value = obj.get(key)
            if key in obj and (isinstance(value, kind) or (nullable and value is None)):
                return value
            if fallback is None:
                raise _invalid(f"{key} is missing or has the wrong type", target_id)
            return getattr(fallback, key)

        status = obj.get("status")
        if status not in STATUSES:
            if fallback is None:
                raise _invalid(f"status must be one of {', '.join(STATUSES)}", target_id)
            status = "failed"
        accepted = obj.get("accepted")
        if not isinstance(accepted, bool):
            if fallback is None:
                raise _invalid("accepted must be true or false", target_id)
            accepted = status in ("accepted", "completed")
        error = pick("error", dict, nullable=True)
        return cls(
            command_id=pick("command_id", str),
            correlation_id=pick("correlation_id", str, nullable=True),
            target_id=pick("target_id", str),
            accepted=accepted,
            status=status,
            requested_by=pick("requested_by", str),
            error=WireError.from_json(error) if isinstance(error, dict) else error,
            state_delta=pick("state_delta", dict, nullable=True),
            completed_at=pick("completed_at", str),
            diff=obj["diff"] if isinstance(obj.get("diff"), dict) else None,
        )
