"""Bounded, sequenced records of what happened: the event journal and the log ring.

Both are rings: when full, the oldest record is evicted and counted in ``evicted``. Sequence
numbers start at 1 and are never reused while the process lives, so a reader that asks for
records after a sequence it has seen can tell from the first sequence it gets whether
anything was lost in between.
"""

from __future__ import annotations

import collections
from itertools import chain, repeat
from typing import Any, Callable, Generic, Iterator, Protocol, Sequence, TypeVar

import attrs
from twisted.logger import Logger

from supervisor.wire.ndjson import dumps, quote
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
    _text: str | None = attrs.field(default=None, init=False, eq=False, repr=False)

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

    def json_text(self) -> str:
        """``dumps(self.to_json())``, built once from pieces: every push and history line of
        the record holds this text, and a generic encoding of the whole dict costs twice as
        much."""
        text = self._text
        if text is None:
            child_id = self.child_id
            text = (
                '{"target_id":%s,"sequence":%d,"correlation_id":%s,"event_type":%s,'
                '"severity":%s,"target_path":%s,"child_id":%s,"occurred_at":"%s",'
                '"occurred_at_unix_nanos":%d,"config_version":%s,"payload":%s}'
            ) % (quote(self.target_id), self.sequence, quote(self.correlation_id),
                 quote(self.event_type), quote(self.severity), quote(self.target_path),
                 "null" if child_id is None else quote(child_id), rfc3339(self.occurred_at),
                 unix_nanos(self.occurred_at), quote(self.config_version), dumps(self.payload))
            object.__setattr__(self, "_text", text)  # a cache of what the fields say
        return text


@attrs.frozen
class LogRecord:
    target_id: str
    sequence: int
    correlation_id: str | None
    severity: str
    message: str
    fields: dict[str, Any]
    occurred_at: float
    _text: str | None = attrs.field(default=None, init=False, eq=False, repr=False)

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

    def json_text(self) -> str:
        """``dumps(self.to_json())``, built once from pieces (see :meth:`EventRecord.json_text`)."""
        text = self._text
        if text is None:
            correlation_id = self.correlation_id
            text = (
                '{"target_id":%s,"sequence":%d,"correlation_id":%s,"severity":%s,"message":%s,'
                '"fields":%s,"occurred_at":"%s","occurred_at_unix_nanos":%d}'
            ) % (quote(self.target_id), self.sequence,
                 "null" if correlation_id is None else quote(correlation_id),
                 quote(self.severity), quote(self.message), dumps(self.fields),
                 rfc3339(self.occurred_at), unix_nanos(self.occurred_at))
            object.__setattr__(self, "_text", text)
        return text


T = TypeVar("T", EventRecord, LogRecord)


class Ring(Generic[T]):
    """A bounded ring of sequenced records with synchronous subscribers."""

    _log = Logger()

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: collections.deque[T] = collections.deque(maxlen=capacity)
        #: a tuple, replaced on (un)subscribe: a subscriber may unsubscribe while told
        self._subscribers: tuple[Callable[[T], None], ...] = ()
        self.last_sequence = 0
        self.evicted = 0

    def append(self, build: Callable[[int], T]) -> T:
        """Create the next record with ``build(sequence)``, store it and tell subscribers."""
        self.last_sequence += 1
        record = build(self.last_sequence)
        if len(self._records) == self.capacity:
            self.evicted += 1
        self._records.append(record)
        for subscriber in self._subscribers:
            try:
                subscriber(record)
            except Exception:
                self._log.failure("journal subscriber failed")
        return record

    def subscribe(self, callback: Callable[[T], None]) -> Callable[[], None]:
        """Call ``callback`` with every new record until the returned function is called."""
        self._subscribers += (callback,)

        def unsubscribe() -> None:
            subscribers = list(self._subscribers)
            if callback in subscribers:
                subscribers.remove(callback)
                self._subscribers = tuple(subscribers)

        return unsubscribe

    def after(self, sequence: int) -> list[T]:
        """Records still held whose sequence is greater than ``sequence``, oldest first."""
        if sequence >= self.last_sequence:
            return []
        held = len(self._records)
        wanted = min(held, self.last_sequence - sequence)
        return self._view(list(self._records)[held - wanted :])

    def last(self, count: int) -> list[T]:
        """The newest ``count`` records, oldest first."""
        if count <= 0:
            return []
        return self._view(list(self._records)[-count:])

    def __iter__(self) -> Iterator[T]:
        return iter(self._view(list(self._records)))

    def _view(self, held: list[Any]) -> list[T]:
        return held

    def __len__(self) -> int:
        return len(self._records)


class LogRing(Ring[LogRecord]):
    """The log ring; the lines of one pipe read are kept as one text until somebody reads them.

    A process child's lines arrive a pipe read at a time (hundreds per read): building a
    :class:`LogRecord`, or even a string, for each, only for the ring to evict it a moment
    later, is most of the cost of a chatty child. The ring holds batches
    ``[first_sequence, count, skip, lines, head]`` (``lines``: a record, a list of messages, or
    the messages joined by newlines; ``skip``: its oldest lines already evicted) and builds
    records on read, or at once when a live subscriber wants each of them.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._batches: collections.deque[list[Any]] = collections.deque()
        self._held = 0

    def append(self, build: Callable[[int], LogRecord]) -> LogRecord:
        self.last_sequence += 1
        record = build(self.last_sequence)
        self._keep([self.last_sequence, 1, 0, record, None])
        self._tell([record])
        return record

    def extend_lines(
        self,
        target_id: str,
        correlation_id: str | None,
        severity: str,
        messages: Sequence[str] | str,
        fields: dict[str, Any],
        occurred_at: float,
        count: int | None = None,
    ) -> int:
        """Append one record per message (sharing ``fields``); return the first sequence.

        ``messages`` may be the messages joined by newlines, with their ``count``."""
        if count is None:
            count = len(messages)
        first = self.last_sequence + 1
        self.last_sequence += count
        head = (target_id, correlation_id, severity, fields, occurred_at)
        entry = [first, count, 0, messages, head]
        if self._subscribers:
            records = self._build(entry)
            self._keep(entry)
            self._tell(records)
        else:
            self._keep(entry)
        return first

    def _keep(self, entry: list[Any]) -> None:
        self._batches.append(entry)
        self._held += entry[1]
        overflow = self._held - self.capacity
        if overflow <= 0:
            return
        self.evicted += overflow
        self._held -= overflow
        batches = self._batches
        while overflow:
            oldest = batches[0]
            live = oldest[1] - oldest[2]
            if live <= overflow:
                batches.popleft()
                overflow -= live
            else:
                oldest[2] += overflow
                overflow = 0

    def _tell(self, records: list[LogRecord]) -> None:
        for record in records:
            for subscriber in self._subscribers:
                try:
                    subscriber(record)
                except Exception:
                    self._log.failure("journal subscriber failed")

    @staticmethod
    def _build(entry: list[Any]) -> list[LogRecord]:
        """The records of one batch's lines still held, oldest first."""
        first, count, skip, lines, head = entry
        if type(lines) is LogRecord:
            return [lines]
        if isinstance(lines, str):
            lines = entry[3] = lines.split("\n")  # split once, on the first read
        target_id, correlation_id, severity, fields, occurred_at = head
        return [LogRecord(target_id, first + i, correlation_id, severity, lines[i], fields,
                          occurred_at) for i in range(skip, count)]

    def _newest(self, wanted: int) -> list[LogRecord]:
        pieces: list[list[LogRecord]] = []
        for entry in reversed(self._batches):
            if wanted <= 0:
                break
            records = self._build(entry)
            if len(records) > wanted:
                records = records[-wanted:]
            pieces.append(records)
            wanted -= len(records)
        return list(chain.from_iterable(reversed(pieces)))

    def after(self, sequence: int) -> list[LogRecord]:
        if sequence >= self.last_sequence:
            return []
        return self._newest(min(self._held, self.last_sequence - sequence))

    def last(self, count: int) -> list[LogRecord]:
        if count <= 0:
            return []
        return self._newest(min(count, self._held))

    def __iter__(self) -> Iterator[LogRecord]:
        return iter(self._newest(self._held))

    def __len__(self) -> int:
        return self._held


class RecordSink(Protocol):
    """Where every record goes besides the rings (the on-disk history): NDJSON lines."""

    def write(self, stream: str, data: bytes, count: int) -> None:
        """Take ``count`` records of ``stream`` (``"logs"`` or ``"events"``), encoded."""

    def lost(self, stream: str) -> int:
        """How many records of ``stream`` it could not keep."""


#: Every byte JSON leaves as it is inside a string, and ``\n`` (which separates lines).
_PLAIN_BYTES = bytes(b for b in range(256) if b >= 0x20 and b not in b'"\\') + b"\n"


def plain_text(data: bytes) -> bool:
    """Whether ``data`` (valid UTF-8) can sit between JSON quotes as it is, line by line.

    ``translate`` deleting the plain bytes is one C pass (a regex is ten times slower)."""
    return not data.translate(None, _PLAIN_BYTES)


def encode_record(record: EventRecord | LogRecord, instance_id: str) -> bytes:
    """One history line: the record's wire shape plus the target's ``instance_id`` (last)."""
    text = record.json_text()[:-1] + ',"instance_id":' + quote(instance_id) + "}\n"
    return text.encode("utf-8")


def encode_log_lines(
    target_id: str,
    instance_id: str,
    correlation_id: str | None,
    severity: str,
    first_sequence: int,
    messages: Sequence[str] | str,
    plain: bytes | None,
    fields: dict[str, Any],
    occurred_at: float,
    count: int | None = None,
) -> bytes:
    """History lines for a batch of log records, byte for byte what :func:`encode_record`
    writes for each.

    ``plain`` is the messages' UTF-8 joined by newlines, when :func:`plain_text` says it needs
    no escaping: then the batch is three C-level passes (each newline becomes the end of one
    record and the start of the next, and one ``%`` fills in the sequences) rather than a
    JSON encoding per line.
    """
    head = ('{"target_id":' + dumps(target_id) + ',"sequence":').encode("utf-8")
    middle = (',"correlation_id":' + dumps(correlation_id) + ',"severity":' + dumps(severity)
              + ',"message":').encode("utf-8")
    tail = (',"fields":' + dumps(fields) + ',"occurred_at":"' + rfc3339(occurred_at)
            + '","occurred_at_unix_nanos":' + str(unix_nanos(occurred_at))
            + ',"instance_id":' + dumps(instance_id) + "}\n").encode("utf-8")
    if count is None:
        count = len(messages)
    if plain is not None:
        opening = head.replace(b"%", b"%%") + b'%d' + middle.replace(b"%", b"%%") + b'"'
        closing = b'"' + tail.replace(b"%", b"%%")
        template = opening + plain.replace(b"%", b"%%").replace(b"\n", closing + opening) + closing
        return template % tuple(range(first_sequence, first_sequence + count))
    if isinstance(messages, str):
        messages = messages.split("\n")
    sequences = map(b"%d".__mod__, range(first_sequence, first_sequence + count))
    texts = (dumps(m).encode("utf-8") for m in messages)
    return b"".join(chain.from_iterable(zip(repeat(head), sequences, repeat(middle), texts,
                                            repeat(tail))))
