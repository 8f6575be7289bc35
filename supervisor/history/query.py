"""Reading the history back: filtered pages with opaque cursors, forwards or backwards.

A cursor names a place between two records of one stream (``<segment>-<offset>``, opaque to
clients). ``after`` pages forwards from a cursor (from the oldest record kept when neither
cursor is given), ``before`` pages backwards from one (``"end"``: from the newest record
written); records in a page are always oldest first. A page ends at ``limit`` records, at
:data:`MAX_PAGE_BYTES` of records, or after :data:`MAX_SCAN_BYTES` read from the disk (a
rare filter over a large store), whichever comes first; ``next_cursor`` then continues it,
and is None once the reader reached the end (the newest record, or the oldest going back).

A line without its newline at the end of a segment (torn by a crash, or being written) and a
line that is not JSON are skipped. Runs on any thread: it only reads files, and a segment
removed by the budget meanwhile is skipped.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterator

import attrs

from supervisor.history.store import list_segments
from supervisor.wire.bounds import HISTORY_LIMIT_RANGE
from supervisor.wire.ndjson import dumps

MAX_PAGE_BYTES = 1024 * 1024
MAX_SCAN_BYTES = 32 * 1024 * 1024
MAX_LIMIT = HISTORY_LIMIT_RANGE[1]
END = "end"
_WINDOW = 4 * 1024 * 1024
_CURSOR = re.compile(r"^(\d{1,10})-(\d{1,15})$")
_NANOS = re.compile(rb'"occurred_at_unix_nanos":(\d+)')


class CursorError(ValueError):
    """A cursor this store did not hand out."""


def format_cursor(segment: int, offset: int) -> str:
    return f"{segment}-{offset}"


def parse_cursor(cursor: str) -> tuple[int, int]:
    match = _CURSOR.match(cursor)
    if match is None:
        raise CursorError(f"not a history cursor: {cursor[:60]!r}")
    return int(match.group(1)), int(match.group(2))


@attrs.frozen
class Filter:
    """Which records a page keeps; every condition left empty keeps everything."""

    stream: str  # "logs" or "events"
    child_path: str | None = None
    severities: frozenset[str] = frozenset()
    since_nanos: int | None = None  # inclusive
    until_nanos: int | None = None  # exclusive
    text: str | None = None

    def prefilter(self) -> Callable[[bytes], bool]:
        """A cheap test on the raw line that every match passes (no JSON parsing)."""
        needles: list[bytes] = []
        if self.text:
            needles.append(dumps(self.text)[1:-1].encode("utf-8"))
        if self.child_path:
            key = '"child_path":' if self.stream == "logs" else '"target_path":'
            needles.append((key + dumps(self.child_path)[:-1]).encode("utf-8"))
        since, until = self.since_nanos, self.until_nanos

        def test(line: bytes) -> bool:
            for needle in needles:
                if needle not in line:
                    return False
            if since is not None or until is not None:
                match = _NANOS.search(line)
                if match is None:
                    return False
                nanos = int(match.group(1))
                if (since is not None and nanos < since) or (until is not None and nanos >= until):
                    return False
            return True

        return test

    def matches(self, record: dict[str, Any]) -> bool:
        if self.severities and record.get("severity") not in self.severities:
            return False
        if self.child_path:
            if self.stream == "logs":
                fields = record.get("fields")
                path = fields.get("child_path") if isinstance(fields, dict) else None
            else:
                path = record.get("target_path")
            if not isinstance(path, str) or not (
                path == self.child_path or path.startswith(self.child_path.rstrip("/") + "/")
            ):
                return False
        if self.text:
            if self.stream == "logs":
                haystack = str(record.get("message", ""))
            else:
                haystack = str(record.get("event_type", "")) + " " + dumps(record.get("payload"))
            if self.text not in haystack:
                return False
        return True


@attrs.frozen
class Page:
    records: list[dict[str, Any]]
    next_cursor: str | None
    evicted: bool

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "next_cursor": self.next_cursor, "evicted": self.evicted}


def read_page(directory: str, where: Filter, *, after: str | None = None,
              before: str | None = None, limit: int = 100) -> Page:
    """One page of ``directory``'s records matching ``where`` (see the module docstring)."""
    if after is not None and before is not None:
        raise CursorError("give after or before, not both")
    segments = list_segments(directory)
    evicted = bool(segments) and segments[0][0] > 1
    if before is not None:
        return _backwards(segments, where, before, limit, evicted)
    return _forwards(segments, where, after, limit, evicted)


def _lines(data: bytes, base: int) -> Iterator[tuple[int, int, bytes]]:
    """``(start, end, line)`` of each whole line in ``data`` (offsets from ``base``)."""
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return
        yield base + start, base + end + 1, data[start:end]
        start = end + 1


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # torn or damaged: skipped
    return record if isinstance(record, dict) else None


def _forwards(segments: list[tuple[int, str]], where: Filter, after: str | None, limit: int,
              evicted: bool) -> Page:
    start_segment, start_offset = parse_cursor(after) if after is not None else (0, 0)
    prefilter = where.prefilter()
    records: list[dict[str, Any]] = []
    page_bytes = scanned = 0
    newest = segments[-1][0] if segments else 0
    for number, path in segments:
        if number < start_segment:
            continue
        offset = start_offset if number == start_segment else 0
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            continue  # removed by the budget meanwhile
        with f:
            f.seek(offset)
            while True:
                data = f.read(_WINDOW)
                if not data:
                    break
                consumed = 0
                for begin, end, line in _lines(data, offset):
                    consumed = end - offset
                    if prefilter(line):
                        record = _parse(line)
                        if record is not None and where.matches(record):
                            records.append(record)
                            page_bytes += len(line)
                            if len(records) >= limit or page_bytes >= MAX_PAGE_BYTES:
                                return Page(records, format_cursor(number, end), evicted)
                scanned += consumed
                if consumed == 0:
                    break  # an unfinished last line: torn, or being written
                offset += consumed
                f.seek(offset)
                if scanned >= MAX_SCAN_BYTES:
                    return Page(records, format_cursor(number, offset), evicted)
        if number == newest:
            break
    return Page(records, None, evicted)


def _backwards(segments: list[tuple[int, str]], where: Filter, before: str, limit: int,
               evicted: bool) -> Page:
    if before == END:
        start_segment, start_offset = (segments[-1][0], -1) if segments else (0, 0)
    else:
        start_segment, start_offset = parse_cursor(before)
    prefilter = where.prefilter()
    found: list[tuple[dict[str, Any], str]] = []
    page_bytes = scanned = 0
    for number, path in reversed(segments):
        if number > start_segment:
            continue
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            continue
        with f:
            size = f.seek(0, 2)
            end = size if number != start_segment or start_offset < 0 else min(start_offset, size)
            while end > 0:
                begin = max(0, end - _WINDOW)
                if begin >= end:
                    break
                f.seek(begin)
                data = f.read(end - begin)
                if begin > 0:
                    first = data.find(b"\n")
                    if first < 0 or begin + first + 1 >= end:
                        break  # a line longer than the window: not one we wrote
                    begin += first + 1
                    data = data[first + 1 :]
                # whole lines only: what follows the last newline is torn or being written
                last = data.rfind(b"\n")
                data = data[: last + 1]
                for start, _, line in reversed(list(_lines(data, begin))):
                    if prefilter(line):
                        record = _parse(line)
                        if record is not None and where.matches(record):
                            found.append((record, format_cursor(number, start)))
                            page_bytes += len(line)
                            if len(found) >= limit or page_bytes >= MAX_PAGE_BYTES:
                                return _reversed_page(found, found[-1][1], evicted)
                scanned += end - begin
                end = begin
                if scanned >= MAX_SCAN_BYTES:
                    return _reversed_page(found, format_cursor(number, begin), evicted)
    return _reversed_page(found, None, evicted)


def _reversed_page(found: list[tuple[dict[str, Any], str]], cursor: str | None,
                   evicted: bool) -> Page:
    return Page([record for record, _ in reversed(found)], cursor, evicted)
