"""The on-disk history: NDJSON segments written by one thread, under a disk budget.

Layout under ``observability.history.path``: ``logs/`` and ``events/``, each a series of
numbered segment files (``0000000001.ndjson``, ...), one record per line in the wire shape
of CONTRACTS.md §1 plus ``instance_id`` (so ``grep`` and ``jq`` read them). A target that
starts again continues the numbering in a new segment, so a line torn by a crash can only be
the last of a segment, and readers skip it.

Writing: the reactor thread hands over encoded lines (:meth:`HistoryStore.write`, a lock and
a deque append); one writer thread takes everything queued at least every
``flush_interval_ms``, sooner once :data:`BATCH_BYTES` wait or once nothing new arrived for
:data:`QUIET_SECONDS` (the end of a burst reaches the disk at once, a steady stream is still
written in batches).

Where the filesystem allows it, whole :data:`DIRECT_BLOCK_BYTES` blocks are written with
``O_DIRECT``: the disk takes them from one page-aligned buffer, and the bytes are not copied
into the page cache (that copy was most of the history's CPU; logs are written once and seldom
read). What follows the last whole block is written through the page cache at once, so no
record waits for more to come, and so is what fills that block up at the next write: a direct
write only ever extends a file that ends on a block boundary, so a reader (``tail -f``, a
query) only ever sees the file grow. Filesystems that refuse ``O_DIRECT`` or its alignment
(tmpfs on older kernels, some network and FUSE filesystems) get plain ``pwritev``.

Past :data:`HIGH_WATER_BYTES` waiting, the process children's pipes are not read until the
writer catches up (the children wait, as they would writing to a slow file; at most
:data:`MAX_PAUSE_SECONDS` at a time). The queue holds at most :data:`MAX_QUEUED_BYTES`:
records that would pass it (a stuck disk) are dropped and counted; a failed write (a full
disk) is counted as lost and the segment is cut back to its last whole line. Nothing blocks the
reactor and memory stays bounded.

Budget: events get one eighth of ``max_bytes`` (so a chatty child cannot push the events
that explain a crash off the disk), logs the rest; before a write would pass its share, the
oldest segments of that stream are removed, counted and reported.
"""

from __future__ import annotations

import collections
import errno
import mmap
import os
import re
import threading
import time
from typing import Any, Callable

import attrs
from twisted.logger import Logger

from supervisor.tree.spec import HistoryConfig

STREAMS = ("logs", "events")
#: Most bytes waiting for the writer; beyond it records are dropped (and counted).
MAX_QUEUED_BYTES = 16 * 1024 * 1024
#: Past this much waiting, process children's output is no longer read (they wait on their
#: pipes) until the writer is back under :data:`LOW_WATER_BYTES`...
HIGH_WATER_BYTES = 8 * 1024 * 1024
LOW_WATER_BYTES = 2 * 1024 * 1024
#: ...or for at most this long: a disk that stays stuck must not stall the children, so
#: reading resumes and what passes :data:`MAX_QUEUED_BYTES` is dropped until it recovers.
MAX_PAUSE_SECONDS = 5.0
#: The writer wakes before the flush interval once this much is waiting...
BATCH_BYTES = 1024 * 1024
#: ...or once records wait and nothing new was queued for this long. Longer than the
#: process children's read gathering (``supervisor.tree.spawn._GATHER_SECONDS``), so a chatty
#: child's reads keep filling one batch.
QUIET_SECONDS = 0.005
#: Events' share of ``max_bytes`` is ``1 / EVENTS_SHARE``.
EVENTS_SHARE = 8
#: Smallest segment of the events stream.
MIN_EVENT_SEGMENT_BYTES = 4096

#: Alignment of direct writes (offset, length and buffer address); a multiple of every common
#: logical block size.
DIRECT_BLOCK_BYTES = 4096
#: The aligned buffer direct writes go out of, one per stream.
DIRECT_CHUNK_BYTES = 1024 * 1024

SEGMENT_NAME = re.compile(r"^(\d{10})\.ndjson$")

#: ``os.pwritev``: write a list of buffers at an offset without joining them first.
Write = Callable[[int, list[Any], int], int]
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16


#: glibc's ``mallopt`` parameter for how much free memory at the heap's top it keeps.
_M_TRIM_THRESHOLD = -1


def keep_freed_queue_memory() -> None:
    """Have glibc keep up to :data:`MAX_QUEUED_BYTES` of freed heap rather than hand it back.

    The writer frees each batch of encoded lines at once; by default glibc then returns the
    heap's top to the kernel and the next burst of a chatty child faults it back in page by
    page (30,000–60,000 page faults per million lines). Elsewhere than glibc, nothing."""
    import ctypes  # only a target with a history needs it

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_TRIM_THRESHOLD, MAX_QUEUED_BYTES)


def segment_name(number: int) -> str:
    return f"{number:010d}.ndjson"


def list_segments(directory: str) -> list[tuple[int, str]]:
    """The segments of one stream, oldest first: ``(number, path)``."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = SEGMENT_NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


@attrs.define
class StreamCounts:
    """What happened to one stream's records and segments (read from any thread)."""

    written: int = 0
    #: records refused because the writer's queue was full
    dropped: int = 0
    #: records whose write failed (a full disk, an I/O error)
    failed: int = 0
    evicted_segments: int = 0
    evicted_bytes: int = 0

    @property
    def lost(self) -> int:
        return self.dropped + self.failed


class _Stream:
    """One stream's segment files, used by the writer thread only."""

    def __init__(self, directory: str, budget: int, segment_bytes: int, counts: StreamCounts,
                 write: Write) -> None:
        self.directory = directory
        self.budget = budget
        self.segment_bytes = segment_bytes
        self.counts = counts
        self._write = write
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.segments: collections.deque[list[Any]] = collections.deque(
            [number, path, os.path.getsize(path)] for number, path in list_segments(directory)
        )
        self._next_number = self.segments[-1][0] + 1 if self.segments else 1
        self._fd = -1
        #: whether whole blocks still go out with O_DIRECT (False once the filesystem refused)
        self.direct = hasattr(os, "O_DIRECT")
        self._direct_fd = -1
        self._buffer: mmap.mmap | None = None
        self.problem: str | None = None

    @property
    def total(self) -> int:
        return sum(segment[2] for segment in self.segments)

    def append(self, pieces: list[tuple[bytes, int]]) -> None:
        """Write ``(data, count)`` pieces in order, rotating and evicting as needed."""
        buffer: list[bytes] = []
        size = 0
        count = 0
        for data, records in pieces:
            if self._fd < 0 or (self.segments[-1][2] + size + len(data) > self.segment_bytes
                                and self.segments[-1][2] + size > 0):
                if buffer:
                    self._flush(buffer, size, count)
                    buffer, size, count = [], 0, 0
                self._rotate()
                if self._fd < 0:
                    self.counts.failed += records
                    continue
            buffer.append(data)
            size += len(data)
            count += records
        if buffer:
            self._flush(buffer, size, count)

    def _rotate(self) -> None:
        self.close()
        number = self._next_number
        path = os.path.join(self.directory, segment_name(number))
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            self.problem = f"cannot create {path}: {e.strerror or e}"
            return
        self._next_number += 1
        self.segments.append([number, path, 0])
        if self.direct:
            try:
                self._direct_fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
            except OSError:
                self.direct = False  # refused by the filesystem: the page cache it is
            else:
                if self._buffer is None:
                    self._buffer = mmap.mmap(-1, DIRECT_CHUNK_BYTES)

    def _flush(self, buffer: list[bytes], size: int, count: int) -> None:
        self._make_room(size)
        current = self.segments[-1]
        try:
            if self._direct_fd >= 0:
                self._put_direct(buffer, current[2])
            else:
                self._put(self._fd, buffer, current[2])
        except OSError as e:
            self.counts.failed += count
            self.problem = f"writing {current[1]} failed: {e.strerror or e}"
            self._cut_back(current)
            return
        current[2] += size
        self.counts.written += count
        self.problem = None

    def _put(self, fd: int, buffer: list[Any], offset: int) -> None:
        """Write all of ``buffer`` at ``offset``, continuing after short writes."""
        for start in range(0, len(buffer), _IOV_MAX):
            group = buffer[start : start + _IOV_MAX]
            wanted = sum(map(len, group))
            wrote = self._write(fd, group, offset)
            offset += wrote
            if wrote < wanted:  # a short write: the rest, one piece at a time
                rest = memoryview(b"".join(group))[wrote:]
                while rest:
                    wrote = self._write(fd, [rest], offset)
                    offset += wrote
                    rest = rest[wrote:]

    def _put_direct(self, buffer: list[bytes], offset: int) -> None:
        """Write ``buffer`` at ``offset`` (the segment's end): through the page cache up to
        the next block boundary and after the last whole block, the whole blocks between with
        O_DIRECT out of the aligned buffer.

        A direct write only ever extends a file that ends on a block boundary: one that
        rewrote a partly filled block could leave a reader's cached copy of it, zeros past the
        old end, visible under the new size for a moment."""
        views = [memoryview(data) for data in buffer]
        room = -offset % DIRECT_BLOCK_BYTES
        first = 0
        head: list[memoryview] = []
        while room and first < len(views):  # the open block's room
            piece = views[first]
            head.append(piece[:room])
            if len(piece) > room:
                views[first] = piece[room:]
                break
            room -= len(piece)
            first += 1
        if head:
            self._put(self._fd, head, offset)
            offset += sum(map(len, head))
        aligned = self._buffer
        assert aligned is not None
        held = 0
        with memoryview(aligned) as out:
            for piece in views[first:]:
                while piece:
                    n = min(len(piece), DIRECT_CHUNK_BYTES - held)
                    out[held : held + n] = piece[:n]
                    held += n
                    piece = piece[n:]
                    if held == DIRECT_CHUNK_BYTES:
                        self._put_blocks(out, offset)
                        offset += held
                        held = 0
            whole = held - held % DIRECT_BLOCK_BYTES
            if whole:
                self._put_blocks(out[:whole], offset)
                offset += whole
            if held > whole:
                self._put(self._fd, [out[whole:held]], offset)

    def _put_blocks(self, blocks: memoryview, offset: int) -> None:
        wrote = 0
        if self._direct_fd >= 0:
            try:
                wrote = self._write(self._direct_fd, [blocks], offset)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                # the filesystem wants another alignment: the page cache from now on
                self.direct = False
                os.close(self._direct_fd)
                self._direct_fd = -1
        if wrote < len(blocks):
            self._put(self._fd, [blocks[wrote:]], offset + wrote)

    def _cut_back(self, current: list[Any]) -> None:
        """After a failed write: drop the torn bytes, or leave the segment for a new one."""
        try:
            os.ftruncate(self._fd, current[2])
        except OSError:
            current[2] = os.fstat(self._fd).st_size
            self.close()  # the next write starts a new segment; readers skip the torn line

    def _make_room(self, incoming: int) -> None:
        total = self.total
        while total + incoming > self.budget and len(self.segments) > 1:
            number, path, size = self.segments.popleft()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                self.segments.appendleft([number, path, size])
                self.problem = f"cannot remove {path}: {e.strerror or e}"
                return
            total -= size
            self.counts.evicted_segments += 1
            self.counts.evicted_bytes += size

    def close(self) -> None:
        for fd in (self._fd, self._direct_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._direct_fd = -1


@attrs.frozen
class _Reported:
    """What the reactor last told about a stream."""

    failed: int = 0
    evicted_segments: int = 0
    evicted_bytes: int = 0
    problem: str | None = None
    #: whether it still writes with O_DIRECT
    direct: bool = True

    @classmethod
    def of(cls, stream: _Stream) -> _Reported:
        counts = stream.counts
        return cls(counts.failed, counts.evicted_segments, counts.evicted_bytes, stream.problem,
                   stream.direct)


_NOTHING_REPORTED = _Reported()


class HistoryStore:
    """The target's history: :meth:`write` from the reactor, one writer thread to the disk.

    ``report`` is called on the reactor thread (through ``reactor.callFromThread``) after the
    writer evicted segments or met a failure, and after records were dropped, at most once
    per flush interval: the target logs it and publishes the new loss counts.
    """

    _log = Logger()

    def __init__(self, config: HistoryConfig, reactor: Any, write: Write = os.pwritev) -> None:
        assert config.path is not None
        self.config = config
        self.path = config.path
        self._reactor = reactor
        self._interval = config.flush_interval_ms / 1000
        self.counts = {stream: StreamCounts() for stream in STREAMS}
        events_budget = config.max_bytes // EVENTS_SHARE
        events_segment = max(MIN_EVENT_SEGMENT_BYTES, min(config.segment_bytes, events_budget // 4))
        self._streams = {
            "logs": _Stream(os.path.join(self.path, "logs"), config.max_bytes - events_budget,
                            config.segment_bytes, self.counts["logs"], write),
            "events": _Stream(os.path.join(self.path, "events"), events_budget, events_segment,
                              self.counts["events"], write),
        }
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[tuple[str, bytes, int]] = collections.deque()
        self._queued_bytes = 0
        self._first_queued_at = 0.0
        self._arrivals = 0  # write() calls so far: the writer tells a pause from a stream
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._report_due = False
        self._reported: dict[str, _Reported] = {}
        self.report: Callable[[], None] | None = None
        #: called on the reactor with True when the writer falls behind, False once it caught up
        self.congestion: Callable[[bool], None] | None = None
        self._congested = False
        self._gave_up = False  # paused for MAX_PAUSE_SECONDS: no pause until the queue drains
        self._pause_timer: Any = None
        #: how often reading was paused for the writer, and how often a pause ran out
        self.pauses = 0
        self.pauses_expired = 0

    def directory(self, stream: str) -> str:
        return self._streams[stream].directory

    # ------------------------------------------------------------------ reactor side

    def write(self, stream: str, data: bytes, count: int) -> None:
        """Queue ``count`` encoded records of ``stream``; over the bound they are dropped."""
        size = len(data)
        with self._lock:
            if self._queued_bytes + size > MAX_QUEUED_BYTES or self._stopping:
                self.counts[stream].dropped += count
                dropped = True
            else:
                dropped = False
                was_empty = not self._queue
                if was_empty:
                    self._first_queued_at = time.monotonic()
                self._queue.append((stream, data, count))
                self._queued_bytes += size
                self._arrivals += 1
                if was_empty or self._queued_bytes >= BATCH_BYTES:
                    self._wake.notify()  # start the flush-interval clock, or write a full batch
        if dropped:
            self._report_soon()
        elif (self._queued_bytes >= HIGH_WATER_BYTES and not self._congested
              and not self._gave_up and self.congestion is not None):
            self._congested = True
            self.pauses += 1
            self._pause_timer = self._reactor.callLater(MAX_PAUSE_SECONDS, self._pause_expired)
            self.congestion(True)

    def _pause_expired(self) -> None:
        self._pause_timer = None
        if self._congested:
            self.pauses_expired += 1
            self._gave_up = True
            self._end_congestion()

    def _caught_up(self) -> None:
        """The writer is back under the low-water mark (called on the reactor)."""
        self._gave_up = False
        if self._congested:
            if self._pause_timer is not None and self._pause_timer.active():
                self._pause_timer.cancel()
            self._pause_timer = None
            self._end_congestion()

    def _end_congestion(self) -> None:
        self._congested = False
        if self.congestion is not None:
            self.congestion(False)

    def lost(self, stream: str) -> int:
        """Records of ``stream`` that never reached the disk (dropped or failed)."""
        return self.counts[stream].lost

    def start(self) -> None:
        """Start the writer thread."""
        keep_freed_queue_memory()
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="supervisor-history",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the writer thread (waits at most ``timeout``)."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for stream in self._streams.values():
            stream.close()
        if self._pause_timer is not None and self._pause_timer.active():
            self._pause_timer.cancel()
        self._pause_timer = None
        if self._congested:
            self._end_congestion()

    def flush_now(self) -> None:
        """Write everything queued on the calling thread (tests and a stopped writer)."""
        self._write_batch(self._take())

    # ------------------------------------------------------------------ writer thread

    def _take(self) -> list[tuple[str, bytes, int]]:
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
        return batch

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and self._queued_bytes < BATCH_BYTES:
                    if self._queue:
                        left = self._first_queued_at + self._interval - time.monotonic()
                        if left <= 0:
                            break
                        seen = self._arrivals
                        self._wake.wait(min(left, QUIET_SECONDS))
                        if self._arrivals == seen and self._queue:
                            break  # the output paused: write what waits now
                    else:
                        self._wake.wait()
                stopping = self._stopping
            self._write_batch(self._take())
            if stopping:
                self._write_batch(self._take())
                return

    def _write_batch(self, batch: list[tuple[str, bytes, int]]) -> None:
        if not batch:
            return
        pieces: dict[str, list[tuple[bytes, int]]] = {stream: [] for stream in STREAMS}
        for stream, data, count in batch:
            pieces[stream].append((data, count))
        for name, stream in self._streams.items():
            if pieces[name]:
                try:
                    stream.append(pieces[name])
                except Exception as e:  # never let the writer thread die
                    stream.counts.failed += sum(count for _, count in pieces[name])
                    stream.problem = f"history writer failed: {e!r}"
        if (self._congested or self._gave_up) and self._queued_bytes < LOW_WATER_BYTES:
            self._call_reactor(self._caught_up)
        if self._changed():
            self._call_reactor(self._report_soon)

    def _changed(self) -> bool:
        return any(self._reported.get(name, _NOTHING_REPORTED) != _Reported.of(stream)
                   for name, stream in self._streams.items())

    def _call_reactor(self, f: Callable[[], None]) -> None:
        try:
            self._reactor.callFromThread(f)
        except Exception:
            pass  # the reactor is gone (process exit): nobody is left to tell

    # ------------------------------------------------------------------ reporting (reactor)

    def _report_soon(self) -> None:
        if not self._report_due:
            self._report_due = True
            self._reactor.callLater(self._interval, self._report_now)

    def _report_now(self) -> None:
        self._report_due = False
        for name, stream in self._streams.items():
            before = self._reported.get(name, _NOTHING_REPORTED)
            now = self._reported[name] = _Reported.of(stream)
            if now.evicted_segments > before.evicted_segments:
                self._log.info(
                    "history {stream}: removed {segments} oldest segment(s), {size} bytes, "
                    "to stay within max_bytes", stream=name,
                    segments=now.evicted_segments - before.evicted_segments,
                    size=now.evicted_bytes - before.evicted_bytes)
            if now.problem and now.problem != before.problem:  # once per problem, not per record
                self._log.error("history {stream}: {failed} record(s) lost so far: {problem}",
                                stream=name, failed=now.failed, problem=now.problem)
            if before.direct and not now.direct:
                self._log.info("history {stream}: {directory} does not take O_DIRECT, so its "
                               "segments are written through the page cache",
                               stream=name, directory=stream.directory)
        if self.report is not None:
            self.report()

