"""A process child's output split a pipe read at a time: the same lines, in order, however
the bytes were cut into reads."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.tree.children import _LineSplitter
from supervisor.tree.journal import plain_text


def split(reads: list[bytes], limit: int = 256) -> list[tuple[str, bool, bool]]:
    """``(message, truncated, plain)`` for every record the reads make."""
    out: list[tuple[str, bool, bool]] = []

    def emit(messages, plain):
        if plain is not None:  # the lines' text joined, as their bytes are
            assert isinstance(messages, str) and plain.decode("utf-8") == messages
            messages = messages.split("\n")
        out.extend((m, False, plain is not None) for m in messages)

    splitter = _LineSplitter(emit, lambda m: out.append((m, True, False)), limit)
    for data in reads:
        splitter.feed(data)
    splitter.flush()
    return out


def reference(data: bytes, limit: int = 256) -> list[tuple[str, bool]]:
    """The rule, one line at a time: cut at ``limit`` bytes, strip one trailing ``\\r``."""
    out = []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for line in lines:
        while len(line) > limit:
            out.append((line[:limit].rstrip(b"\r").decode("utf-8", "replace"), True))
            line = line[limit:]
        out.append((line.rstrip(b"\r").decode("utf-8", "replace"), False))
    return out


def test_a_read_of_plain_lines_is_one_batch_with_its_bytes():
    records = split([b"one\ntwo\nthr", b"ee\n"])
    assert records == [("one", False, True), ("two", False, True), ("three", False, True)]


def test_lines_that_need_escaping_or_are_not_utf8_take_the_slow_path():
    records = split([b'say "hi"\n\xff\xfe\ntab\there\r\n'])
    assert [(m, p) for m, _, p in records] == [('say "hi"', False), ("\ufffd\ufffd", False),
                                                ("tab\there", False)]
    assert plain_text(b"plain text, \xc3\xbc and 100%\nnext") and not plain_text(b'a"b')


def test_long_lines_are_cut_into_truncated_pieces():
    records = split([b"a" * 600 + b"\nshort\n"], limit=256)
    assert [(len(m), t) for m, t, _ in records] == [(256, True), (256, True), (88, False),
                                                     (5, False)]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000).map(lambda b: b.replace(b"\x00", b"\n")),
       st.lists(st.integers(min_value=1, max_value=300), max_size=20))
def test_any_cutting_into_reads_gives_the_one_line_at_a_time_records(data, cuts):
    reads, at = [], 0
    for size in cuts:
        reads.append(data[at:at + size])
        at += size
    reads.append(data[at:])
    assert [(m, t) for m, t, _ in split(reads)] == reference(data)
