"""Bounded, sequenced records of what happened: the event journal and the log ring.

Both are rings: when full, the oldest record is evicted and counted in ``evicted``. Sequence
numbers start at 1 and are never reused while the process lives, so a reader that asks for
records after a sequence it has seen can tell from the first sequence it gets whether
anything was lost in between.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Generic, Iterator, TypeVar

import attrs
from twisted.logger import Logger

from supervisor.wire.timestamps import rfc3339, unix_nanos


@attrs.frozen
class EventRecord:
    target_id: str
    sequence: int
    correlation_id: str
    event_type: str
    severity: str
    target_path: str
    child_id: str | None
    occurred_at: float
    config_version: str
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "target_id": self.target_id,
            "sequence": self.sequence,
            "correlation_id": self.correlation_id,
            "event_type": self.event_type,
            "severity": self.severity,
            "target_path": self.target_path,
            "child_id": self.child_id,
            "occurred_at": rfc3339(self.occurred_at),
            "occurred_at_unix_nanos": unix_nanos(self.occurred_at),
            "config_version": self.config_version,
            "payload": self.payload,
        }


@attrs.frozen
class LogRecord:
    target_id: str
    sequence: int
    correlation_id: str | None
    severity: str
    message: str
    fields: dict[str, Any]
    occurred_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "target_id": self.target_id,
            "sequence": self.sequence,
            "correlation_id": self.correlation_id,
            "severity": self.severity,
            "message": self.message,
            "fields": self.fields,
            "occurred_at": rfc3339(self.occurred_at),
            "occurred_at_unix_nanos": unix_nanos(self.occurred_at),
        }


T = TypeVar("T", EventRecord, LogRecord)


class Ring(Generic[T]):
    """A bounded ring of sequenced records with synchronous subscribers."""

    _log = Logger()

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: collections.deque[T] = collections.deque(maxlen=capacity)
        self._subscribers: list[Callable[[T], None]] = []
        self.last_sequence = 0
        self.evicted = 0

    def append(self, build: Callable[[int], T]) -> T:
        """Create the next record with ``build(sequence)``, store it and tell subscribers."""
        self.last_sequence += 1
        record = build(self.last_sequence)
        if len(self._records) == self.capacity:
            self.evicted += 1
        self._records.append(record)
        for subscriber in list(self._subscribers):
            try:
                subscriber(record)
            except Exception:
                self._log.failure("journal subscriber failed")
        return record

    def subscribe(self, callback: Callable[[T], None]) -> Callable[[], None]:
        """Call ``callback`` with every new record until the returned function is called."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def after(self, sequence: int) -> list[T]:
        """Records still held whose sequence is greater than ``sequence``, oldest first."""
        if sequence >= self.last_sequence:
            return []
        held = len(self._records)
        wanted = min(held, self.last_sequence - sequence)
        return list(self._records)[held - wanted :]

    def last(self, count: int) -> list[T]:
        """The newest ``count`` records, oldest first."""
        if count <= 0:
            return []
        return list(self._records)[-count:]

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._records))

    def __len__(self) -> int:
        return len(self._records)
