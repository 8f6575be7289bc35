"""The on-disk history: segments, budget, restarts, torn lines, loss accounting, reading back."""

from __future__ import annotations

import errno
import json
import os
import pathlib

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from supervisor.history import store as store_module
from supervisor.history.query import END, CursorError, Filter, read_page
from supervisor.history.store import HistoryStore, list_segments
from supervisor.tree.journal import EventRecord, LogRecord, encode_log_lines, encode_record
from supervisor.tree.spec import HistoryConfig
from tests.waiting import wait_until

INSTANCE = "i" * 32


class FakeReactor(Clock):
    """A clock whose callFromThread runs at once (the tests call from one thread)."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


def config(path, **overrides) -> HistoryConfig:
    values = dict(enabled=True, path=str(path), max_bytes=4 * 1024 * 1024,
                  segment_bytes=64 * 1024, flush_interval_ms=50)
    values.update(overrides)
    return HistoryConfig(**values)


def log_line(sequence: int, message: str = None, child: str = "/root/w", **extra) -> bytes:
    record = LogRecord("t", sequence, None, extra.get("severity", "info"),
                       message if message is not None else f"line {sequence}",
                       {"stream": "stdout", "child_path": child}, extra.get("at", 1_764_000_000.0))
    return encode_record(record, INSTANCE)


def all_records(directory: str, **filters) -> list[dict]:
    records, cursor = [], None
    while True:
        page = read_page(directory, Filter("logs", **filters), after=cursor, limit=7)
        records += page.records
        if page.next_cursor is None:
            return records
        cursor = page.next_cursor


def test_records_come_back_in_order_with_their_instance(tmp_path):
    store = HistoryStore(config(tmp_path), FakeReactor())
    for sequence in range(1, 101):
        store.write("logs", log_line(sequence), 1)
    store.flush_now()
    records = all_records(store.directory("logs"))
    assert [r["sequence"] for r in records] == list(range(1, 101))
    assert {r["instance_id"] for r in records} == {INSTANCE}
    assert records[0]["fields"] == {"stream": "stdout", "child_path": "/root/w"}
    assert store.counts["logs"].written == 100 and store.lost("logs") == 0
    with open(list_segments(store.directory("logs"))[0][1], "rb") as f:
        assert json.loads(f.readline())["message"] == "line 1"  # plain NDJSON: grep and jq read it


def test_a_restart_continues_the_store_in_a_new_segment_and_skips_a_torn_line(tmp_path):
    first = HistoryStore(config(tmp_path), FakeReactor())
    for sequence in range(1, 4):
        first.write("logs", log_line(sequence), 1)
    first.flush_now()
    first.stop()
    [(number, path)] = list_segments(first.directory("logs"))
    with open(path, "ab") as f:  # the crash tore the last line
        f.write(log_line(4)[:30])
    second = HistoryStore(config(tmp_path), FakeReactor())
    second.write("logs", log_line(1, "after restart"), 1)
    second.flush_now()
    segments = list_segments(second.directory("logs"))
    assert [n for n, _ in segments] == [number, number + 1]
    messages = [r["message"] for r in all_records(second.directory("logs"))]
    assert messages == ["line 1", "line 2", "line 3", "after restart"]


def test_max_bytes_holds_the_store_to_its_budget_and_eviction_is_counted(tmp_path):
    cfg = config(tmp_path, max_bytes=256 * 1024, segment_bytes=64 * 1024)
    store = HistoryStore(cfg, FakeReactor())
    logs = store.directory("logs")
    budget = cfg.max_bytes - cfg.max_bytes // store_module.EVENTS_SHARE
    for batch in range(200):
        for sequence in range(batch * 50 + 1, batch * 50 + 51):
            store.write("logs", log_line(sequence, "x" * 100), 1)
        store.flush_now()
        on_disk = sum(os.path.getsize(p) for _, p in list_segments(logs))
        assert on_disk <= budget
        assert on_disk + sum(os.path.getsize(p) for _, p in
                             list_segments(store.directory("events"))) <= cfg.max_bytes
    counts = store.counts["logs"]
    assert counts.evicted_segments > 0 and counts.evicted_bytes > 0
    assert counts.written == 10_000 and store.lost("logs") == 0
    page = read_page(logs, Filter("logs"), limit=5)
    assert page.evicted
    # what is kept is the newest, contiguous and in order
    kept = [r["sequence"] for r in all_records(logs)]
    assert kept == list(range(kept[0], 10_001))


def test_eviction_is_reported_on_the_reactor(tmp_path):
    reactor = FakeReactor()
    store = HistoryStore(config(tmp_path, max_bytes=128 * 1024), reactor)
    reports = []
    store.report = lambda: reports.append(store.counts["logs"].evicted_segments)
    for sequence in range(1, 3000):
        store.write("logs", log_line(sequence, "y" * 100), 1)
        if sequence % 100 == 0:
            store.flush_now()
    reactor.advance(1)
    assert reports and reports[-1] == store.counts["logs"].evicted_segments > 0


def test_a_full_queue_drops_and_counts_instead_of_growing(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "MAX_QUEUED_BYTES", 10_000)
    reactor = FakeReactor()
    store = HistoryStore(config(tmp_path), reactor)
    reports = []
    store.report = lambda: reports.append(store.lost("logs"))
    line = log_line(1, "z" * 200)
    accepted = 10_000 // len(line)
    for _ in range(accepted + 25):
        store.write("logs", line, 1)
    assert store.counts["logs"].dropped == 25
    reactor.advance(1)
    assert reports == [25]
    store.flush_now()
    assert store.counts["logs"].written == accepted


def test_a_failing_disk_counts_the_loss_and_leaves_no_torn_line(tmp_path):
    failing = {"on": False, "partial": False}

    def write(fd, buffers, offset):
        if failing["partial"]:
            failing["partial"] = False
            failing["on"] = True
            # a torn line, then the disk is full
            return os.pwrite(fd, bytes(buffers[0][:17]), offset)
        if failing["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.pwritev(fd, buffers, offset)

    reactor = FakeReactor()
    store = HistoryStore(config(tmp_path), reactor, write=write)
    store.write("logs", log_line(1), 1)
    store.flush_now()
    failing["partial"] = True
    store.write("logs", log_line(2) + log_line(3), 2)
    store.flush_now()
    store.write("logs", log_line(4), 1)
    store.flush_now()
    assert store.counts["logs"].failed == 3 and store.lost("logs") == 3
    failing["on"] = False
    store.write("logs", log_line(5), 1)
    store.flush_now()
    assert [r["sequence"] for r in all_records(store.directory("logs"))] == [1, 5]
    for _, path in list_segments(store.directory("logs")):
        with open(path, "rb") as f:
            for raw in f:
                json.loads(raw)  # every line whole


def test_the_writer_thread_writes_within_the_flush_interval(tmp_path):
    store = HistoryStore(config(tmp_path, flush_interval_ms=20), FakeReactor())
    store.start()
    try:
        for sequence in range(1, 501):
            store.write("logs", log_line(sequence), 1)
        wait_until(lambda: store.counts["logs"].written == 500, what="writer flushed")
        assert len(all_records(store.directory("logs"))) == 500
    finally:
        store.stop()
    store.write("logs", log_line(501), 1)  # after stop: dropped, counted
    assert store.counts["logs"].dropped == 1


def test_stopping_writes_everything_queued(tmp_path):
    store = HistoryStore(config(tmp_path, flush_interval_ms=60_000), FakeReactor())
    store.start()
    for sequence in range(1, 11):
        store.write("logs", log_line(sequence), 1)
    store.stop()
    assert store.counts["logs"].written == 10


def test_paging_backwards_from_the_newest_meets_every_record_once(tmp_path):
    store = HistoryStore(config(tmp_path, segment_bytes=64 * 1024), FakeReactor())
    for sequence in range(1, 2001):
        store.write("logs", log_line(sequence, "m" * 60), 1)
    store.flush_now()
    logs = store.directory("logs")
    assert len(list_segments(logs)) > 2
    seen: list[int] = []
    cursor = END
    while cursor is not None:
        page = read_page(logs, Filter("logs"), before=cursor, limit=333)
        sequences = [r["sequence"] for r in page.records]
        assert sequences == sorted(sequences)
        seen = sequences + seen
        cursor = page.next_cursor
    assert seen == list(range(1, 2001))
    newest = read_page(logs, Filter("logs"), before=END, limit=3)
    assert [r["sequence"] for r in newest.records] == [1998, 1999, 2000]


def test_filters_child_subtree_severity_time_and_text(tmp_path):
    store = HistoryStore(config(tmp_path), FakeReactor())
    store.write("logs", log_line(1, "disk ok", child="/root/db", at=100.0), 1)
    store.write("logs", log_line(2, "disk full", child="/root/db/replica", severity="error",
                                 at=200.0), 1)
    store.write("logs", log_line(3, "disk \"quoted\" full", child="/root/dbx", at=300.0), 1)
    store.write("logs", log_line(4, "web up", child="/root/web", at=400.0), 1)
    store.flush_now()
    logs = store.directory("logs")

    def sequences(**filters):
        return [r["sequence"] for r in all_records(logs, **filters)]

    assert sequences(child_path="/root/db") == [1, 2]
    assert sequences(severities=frozenset({"error"})) == [2]
    assert sequences(since_nanos=200 * 10**9, until_nanos=400 * 10**9) == [2, 3]
    assert sequences(text="full") == [2, 3]
    assert sequences(text='"quoted"') == [3]
    assert sequences(text="nowhere") == []


def test_events_have_their_own_stream(tmp_path):
    store = HistoryStore(config(tmp_path), FakeReactor())
    event = EventRecord("t", 1, "incident-1", "child_failed", "error", "/root/w", "w", 5.0,
                        "cv", {"reason": "exit status 3"})
    store.write("events", encode_record(event, INSTANCE), 1)
    store.write("logs", log_line(1), 1)
    store.flush_now()
    page = read_page(store.directory("events"), Filter("events", text="exit status"), limit=10)
    assert [r["event_type"] for r in page.records] == ["child_failed"]
    assert page.records[0]["instance_id"] == INSTANCE and page.next_cursor is None


def test_a_bad_cursor_is_refused(tmp_path):
    with pytest.raises(CursorError):
        read_page(str(tmp_path), Filter("logs"), after="not-a-cursor")


@pytest.mark.parametrize("messages", [["plain", "two words", "", "100% ünïcödé ✓"],
                                      ["quote \" and \\", "tab\there", "ünïcödé ✓"]])
def test_batch_encoding_is_byte_for_byte_the_record_encoding(messages):
    fields = {"stream": "stderr", "child_path": "/root/p"}
    plain = "\n".join(messages).encode() if messages[0] == "plain" else None
    batch = encode_log_lines("t", INSTANCE, "incident-9", "warning", 41, messages, plain, fields,
                             1_764_000_000.25)
    single = b"".join(
        encode_record(LogRecord("t", 41 + i, "incident-9", "warning", m, fields, 1_764_000_000.25),
                      INSTANCE)
        for i, m in enumerate(messages))
    assert batch == single


def test_a_writer_behind_pauses_the_children_until_it_catches_up(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "HIGH_WATER_BYTES", 4000)
    monkeypatch.setattr(store_module, "LOW_WATER_BYTES", 1000)
    monkeypatch.setattr(store_module, "MAX_QUEUED_BYTES", 8000)
    reactor = FakeReactor()
    store = HistoryStore(config(tmp_path), reactor)
    gate = []
    store.congestion = gate.append
    line = log_line(1, "p" * 100)
    while store._queued_bytes < 4000:
        store.write("logs", line, 1)
    assert gate == [True] and store.pauses == 1
    store.flush_now()  # the writer caught up: reading resumes
    assert gate == [True, False] and not reactor.getDelayedCalls()
    # a writer that stays behind: the pause ends after MAX_PAUSE_SECONDS, then lines drop
    while store._queued_bytes < 4000:
        store.write("logs", line, 1)
    assert gate[-1] is True
    reactor.advance(store_module.MAX_PAUSE_SECONDS)
    assert gate[-1] is False and store.pauses_expired == 1
    for _ in range(100):
        store.write("logs", line, 1)
    assert gate.count(True) == 2, "no new pause until the queue drained"
    assert store.counts["logs"].dropped > 0
    store.flush_now()
    assert store.lost("logs") == store.counts["logs"].dropped


def direct(fd: int) -> bool:
    import fcntl

    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


class RecordingWrite:
    """``os.pwritev`` that notes each call (whether direct, offset, bytes, the file's size
    before it) and can fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, int, int, int]] = []
        self.fail_direct: int | None = None  # errno to raise on direct writes

    def __call__(self, fd, buffers, offset):
        is_direct = direct(fd)
        if is_direct and self.fail_direct is not None:
            raise OSError(self.fail_direct, os.strerror(self.fail_direct))
        size = os.fstat(fd).st_size
        wrote = os.pwritev(fd, buffers, offset)
        self.calls.append((is_direct, offset, wrote, size))
        return wrote


def segment_bytes_on_disk(store) -> bytes:
    return b"".join(pathlib.Path(path).read_bytes()
                    for _, path in list_segments(store.directory("logs")))


def test_whole_blocks_go_out_direct_and_the_file_only_grows(tmp_path):
    """Every write appends; a direct one only to a file that ends on a block boundary (a
    direct write over a partly filled block could show a reader zeros for a moment)."""
    write = RecordingWrite()
    store = HistoryStore(config(tmp_path, segment_bytes=8 << 20, max_bytes=64 << 20), FakeReactor(),
                         write=write)
    sent = b""
    sequence = 0
    # small flushes (inside one block), a flush over several blocks, one over the chunk
    for lines, size in [(3, 10), (5, 40), (40, 200), (1, 5), (6000, 300), (2, 7), (300, 90)]:
        batch = b"".join(log_line(sequence + i, "w" * size) for i in range(1, lines + 1))
        sequence += lines
        before = segment_bytes_on_disk(store)
        store.write("logs", batch, lines)
        store.flush_now()
        sent += batch
        after = segment_bytes_on_disk(store)
        assert after == sent and after.startswith(before)
    assert store.counts["logs"].written == sequence and store.lost("logs") == 0
    assert all(offset == before for _, offset, _, before in write.calls), "appends only"
    direct_calls = [(offset, size) for is_direct, offset, size, _ in write.calls if is_direct]
    assert direct_calls, "the filesystem under tmp_path takes O_DIRECT"
    block = store_module.DIRECT_BLOCK_BYTES
    assert all(offset % block == 0 and size % block == 0 for offset, size in direct_calls)
    assert max(size for _, size in direct_calls) == store_module.DIRECT_CHUNK_BYTES
    through_cache = [size for is_direct, _, size, _ in write.calls if not is_direct]
    assert max(through_cache) < block, "only the open block's room and the rest are buffered"
    assert sum(size for _, size in direct_calls) > 0.9 * len(sent)


def test_a_failed_direct_write_counts_the_loss_and_the_next_write_continues_the_file(tmp_path):
    write = RecordingWrite()
    store = HistoryStore(config(tmp_path), FakeReactor(), write=write)
    store.write("logs", b"".join(log_line(s) for s in range(1, 4)), 3)
    store.flush_now()
    write.fail_direct = errno.EIO
    store.write("logs", b"".join(log_line(s, "f" * 200) for s in range(4, 104)), 100)
    store.flush_now()
    assert store.counts["logs"].failed == 100
    write.fail_direct = None
    store.write("logs", b"".join(log_line(s, "g" * 200) for s in range(104, 204)), 100)
    store.flush_now()
    assert [r["sequence"] for r in all_records(store.directory("logs"))] == (
        [1, 2, 3] + list(range(104, 204)))
    assert store._streams["logs"].direct


def test_a_filesystem_refusing_the_alignment_gets_buffered_writes(tmp_path):
    write = RecordingWrite()
    write.fail_direct = errno.EINVAL
    store = HistoryStore(config(tmp_path), FakeReactor(), write=write)
    lines = b"".join(log_line(s, "a" * 300) for s in range(1, 201))
    store.write("logs", lines, 200)
    store.flush_now()
    store.write("logs", log_line(201), 1)
    store.flush_now()
    assert segment_bytes_on_disk(store) == lines + log_line(201)
    assert not store._streams["logs"].direct and store.lost("logs") == 0


def test_a_filesystem_without_o_direct_gets_buffered_writes(tmp_path, monkeypatch):
    real_open = os.open

    def refusing_open(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(store_module.os, "open", refusing_open)
    reactor = FakeReactor()
    store = HistoryStore(config(tmp_path), reactor)
    lines = b"".join(log_line(s, "b" * 300) for s in range(1, 201))
    with capturedLogs() as logged:
        store.write("logs", lines, 200)
        store.flush_now()
        reactor.advance(1)
        store.write("logs", log_line(201), 1)
        store.flush_now()
        reactor.advance(1)
    assert segment_bytes_on_disk(store) == lines + log_line(201)
    assert not store._streams["logs"].direct
    told = [e for e in logged if "O_DIRECT" in e["log_format"]]
    assert [e["stream"] for e in told] == ["logs"], "said once, for the stream that fell back"


FILE_SIZE_LIMIT = r"""
import json, resource, sys
from twisted.internet.task import Clock
from supervisor.history.store import HistoryStore
from supervisor.tree.journal import LogRecord, encode_record
from supervisor.tree.spec import HistoryConfig

class Reactor(Clock):
    def callFromThread(self, f, *args):
        f(*args)

resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
store = HistoryStore(HistoryConfig(enabled=True, path=sys.argv[1], max_bytes=64 << 20,
                                   segment_bytes=16 << 20, flush_interval_ms=50), Reactor())
for batch in range(40):
    first = batch * 50 + 1
    data = b"".join(encode_record(LogRecord("t", s, None, "info", "q" * 250,
                                            {"child_path": "/w", "stream": "stdout"}, 1.0), "i")
                    for s in range(first, first + 50))
    store.write("logs", data, 50)
    store.flush_now()
counts = store.counts["logs"]
print(json.dumps({"written": counts.written, "failed": counts.failed,
                  "problem": store._streams["logs"].problem}))
"""


def test_a_file_size_limit_keeps_whole_lines_and_counts_the_rest(tmp_path):
    """A real write failure: the kernel refuses bytes past RLIMIT_FSIZE (EFBIG), in the
    middle of a direct write."""
    import subprocess
    import sys

    limit = 150_001
    result = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(tmp_path), str(limit)],
                            capture_output=True, text=True, timeout=60, check=True)
    counts = json.loads(result.stdout)
    assert counts["written"] + counts["failed"] == 2000
    assert counts["failed"] > 0 and "File too large" in counts["problem"]
    segments = list_segments(str(tmp_path / "logs"))
    kept = []
    for _, path in segments:
        assert os.path.getsize(path) <= limit
        with open(path, "rb") as f:
            kept += [json.loads(raw)["sequence"] for raw in f]
    assert kept == list(range(1, counts["written"] + 1))
