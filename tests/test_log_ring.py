"""The log ring keeps a pipe read's lines as one batch: what readers see is the same as one
record per line, across evictions inside a batch and mixed single records."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.tree.journal import LogRecord, LogRing

FIELDS = {"stream": "stdout", "child_path": "/w"}


def single(sequence: int, message: str) -> LogRecord:
    return LogRecord("t", sequence, None, "info", message, FIELDS, 1.0)


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 12),
       batches=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 9)), min_size=1, max_size=12),
       since=st.integers(0, 60), last=st.integers(-1, 20))
def test_batches_read_as_one_record_per_line(capacity, batches, since, last):
    ring = LogRing(capacity)
    expected: list[LogRecord] = []
    for kind, count in batches:
        first = ring.last_sequence + 1
        messages = [f"line {first + i}" for i in range(count)]
        if kind == 0:
            record = ring.append(lambda sequence: single(sequence, f"line {sequence}"))
            expected.append(record)
            continue
        ring.extend_lines("t", None, "info", "\n".join(messages) if kind == 1 else messages,
                          FIELDS, 1.0, count)
        expected.extend(single(first + i, m) for i, m in enumerate(messages))
    kept = expected[-capacity:]
    assert list(ring) == kept and len(ring) == len(kept)
    assert ring.evicted == len(expected) - len(kept)
    assert ring.after(since) == [r for r in kept if r.sequence > since]
    assert ring.last(last) == (kept[-last:] if last > 0 else [])


def test_a_subscriber_gets_every_line_of_a_joined_batch():
    ring = LogRing(4)
    seen: list[LogRecord] = []
    ring.subscribe(seen.append)
    first = ring.extend_lines("t", None, "info", "a\nb\nc", FIELDS, 1.0, 3)
    assert first == 1 and [r.message for r in seen] == ["a", "b", "c"]
    assert [r.sequence for r in seen] == [1, 2, 3] and list(ring) == seen
