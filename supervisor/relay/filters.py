"""Relay-side filtering of a session's event/log stream (``log_event_filter_conditions``).

Empty lists, nulls and an empty ``correlation_id`` mean "no restriction". The conditions
narrow the live event and log stream only, and always to a superset of what a client filter
with the same conditions shows: ``target_ids`` narrows events and logs to those targets but
never unbinds one (every registered target stays bound, its state, deltas, connection states,
command results and audit records keep flowing); ``child_paths`` match a path or anything
below it; ``lifecycle_states`` apply to events only (via ``payload.lifecycle_state`` when the
target provides it, else the state the event type implies); ``event_types`` to events only;
``severities``, ``sequence_min`` and ``correlation_id`` (a substring of the record's) to
events and logs. :meth:`FilterConditions.widens` tells when a change lets more through for a
target, so the session can be sent a fresh ``state`` that refills its history.
"""

from __future__ import annotations

from typing import Any

import attrs

from supervisor.wire.bounds import SEQUENCE_RANGE, describe, int_in
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
        if seq is not None and not int_in(seq, SEQUENCE_RANGE):
            raise _schema(describe("sequence_min", SEQUENCE_RANGE) + ", or null")
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

    def streams(self, target_id: str) -> bool:
        """Whether events and logs of ``target_id`` may pass at all."""
        return not self.target_ids or target_id in self.target_ids

    def widens(self, previous: "FilterConditions", target_id: str) -> bool:
        """Whether these conditions may let through an event or log of ``target_id`` that
        ``previous`` held back (a conservative test: True when unsure)."""
        if not self.streams(target_id):
            return False
        if not previous.streams(target_id):
            return True
        for key in ("lifecycle_states", "event_types", "severities"):
            before, now = getattr(previous, key), getattr(self, key)
            if before and (not now or not set(now) <= set(before)):
                return True
        if previous.child_paths and (not self.child_paths or not all(
                previous._path_ok(p) for p in self.child_paths)):
            return True
        if previous.sequence_min is not None and (
                self.sequence_min is None or self.sequence_min < previous.sequence_min):
            return True
        # every record containing ``now`` contains ``before`` exactly when before is in now
        before_corr, now_corr = previous.correlation_id or "", self.correlation_id or ""
        return before_corr not in now_corr

    def _common(self, record: dict[str, Any]) -> bool:
        if self.severities and record.get("severity") not in self.severities:
            return False
        if self.sequence_min is not None:
            seq = record.get("sequence")
            if not isinstance(seq, int) or seq < self.sequence_min:
                return False
        if self.correlation_id:
            correlation = record.get("correlation_id")
            if not isinstance(correlation, str) or self.correlation_id not in correlation:
                return False
        return True

    def _path_ok(self, path: Any) -> bool:
        if not self.child_paths:
            return True
        if not isinstance(path, str):
            return False
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.child_paths)

    def admits_event(self, event: Any, target_id: str | None = None) -> bool:
        """Whether an EventRecord of ``target_id`` (None: any target) passes."""
        if target_id is not None and not self.streams(target_id):
            return False
        if not isinstance(event, dict):
            return not (self.severities or self.sequence_min is not None
                        or self.correlation_id or self.child_paths
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

    def admits_log(self, log: Any, target_id: str | None = None) -> bool:
        """Whether a LogRecord of ``target_id`` (None: any target) passes."""
        if target_id is not None and not self.streams(target_id):
            return False
        if not isinstance(log, dict):
            return not (self.severities or self.sequence_min is not None
                        or self.correlation_id or self.child_paths)
        if not self._common(log):
            return False
        if self.child_paths:
            fields = log.get("fields")
            return self._path_ok(fields.get("child_path") if isinstance(fields, dict) else None)
        return True
