"""Relay-side filtering of a session's event/log stream (``log_event_filter_conditions``).

Empty lists and nulls mean "no restriction". ``target_ids`` also decides which registered
targets a session binds (all of them when empty). ``child_paths`` match a path or anything
below it. ``lifecycle_states`` apply to events only (via ``payload.lifecycle_state`` when the
target provides it, else the state the event type implies); ``event_types`` to events only;
``severities``, ``sequence_min`` and ``correlation_id`` to events and logs. State, deltas,
connection states, results and audit records are never filtered (only unbound targets are
not sent).
"""

from __future__ import annotations

from typing import Any

import attrs

from supervisor.wire.errors import WireError
from supervisor.wire.vocabulary import EVENT_LIFECYCLE

__all__ = ["FilterConditions"]

MAX_FILTER_ITEMS = 1000
_LIST_KEYS = ("target_ids", "child_paths", "lifecycle_states", "event_types", "severities")
FILTER_KEYS = frozenset(_LIST_KEYS + ("sequence_min", "correlation_id"))


def _schema(message: str) -> WireError:
    return WireError("invalid_message_schema", "filter", message)


@attrs.frozen
class FilterConditions:
    """The conditions of one session (see module docstring)."""

    target_ids: tuple[str, ...] = ()
    child_paths: tuple[str, ...] = ()
    lifecycle_states: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    sequence_min: int | None = None
    correlation_id: str | None = None

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> "FilterConditions":
        """Parse a client message; unknown keys are ``unsupported_field``, bad shapes schema."""
        unknown = sorted(set(message) - FILTER_KEYS - {"type"})
        if unknown:
            raise WireError("unsupported_field", "filter", f"unsupported field {unknown[0]!r}")
        values: dict[str, Any] = {}
        for key in _LIST_KEYS:
            raw = message.get(key)
            if raw is None:
                raw = []
            if (not isinstance(raw, list) or len(raw) > MAX_FILTER_ITEMS
                    or not all(isinstance(v, str) for v in raw)):
                raise _schema(f"{key} must be a list of at most {MAX_FILTER_ITEMS} strings")
            values[key] = tuple(raw)
        seq = message.get("sequence_min")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
            raise _schema("sequence_min must be an integer or null")
        corr = message.get("correlation_id")
        if corr is not None and not isinstance(corr, str):
            raise _schema("correlation_id must be a string or null")
        return cls(sequence_min=seq, correlation_id=corr, **values)

    def to_json(self) -> dict[str, Any]:
        return {
            "target_ids": list(self.target_ids),
            "child_paths": list(self.child_paths),
            "lifecycle_states": list(self.lifecycle_states),
            "event_types": list(self.event_types),
            "severities": list(self.severities),
            "sequence_min": self.sequence_min,
            "correlation_id": self.correlation_id,
        }

    def binds(self, target_id: str) -> bool:
        """Whether a session with these conditions binds ``target_id``."""
        return not self.target_ids or target_id in self.target_ids

    def _common(self, record: dict[str, Any]) -> bool:
        if self.severities and record.get("severity") not in self.severities:
            return False
        if self.sequence_min is not None:
            seq = record.get("sequence")
            if not isinstance(seq, int) or seq < self.sequence_min:
                return False
        if self.correlation_id is not None and record.get("correlation_id") != \
                self.correlation_id:
            return False
        return True

    def _path_ok(self, path: Any) -> bool:
        if not self.child_paths:
            return True
        if not isinstance(path, str):
            return False
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.child_paths)

    def admits_event(self, event: Any) -> bool:
        if not isinstance(event, dict):
            return not (self.severities or self.sequence_min is not None
                        or self.correlation_id is not None or self.child_paths
                        or self.event_types or self.lifecycle_states)
        if not self._common(event) or not self._path_ok(event.get("target_path")):
            return False
        if self.event_types and event.get("event_type") not in self.event_types:
            return False
        if self.lifecycle_states:
            payload = event.get("payload")
            state = payload.get("lifecycle_state") if isinstance(payload, dict) else None
            if not isinstance(state, str):
                state = EVENT_LIFECYCLE.get(str(event.get("event_type")))
            if state not in self.lifecycle_states:
                return False
        return True

    def admits_log(self, log: Any) -> bool:
        if not isinstance(log, dict):
            return not (self.severities or self.sequence_min is not None
                        or self.correlation_id is not None or self.child_paths)
        if not self._common(log):
            return False
        if self.child_paths:
            fields = log.get("fields")
            return self._path_ok(fields.get("child_path") if isinstance(fields, dict) else None)
        return True
