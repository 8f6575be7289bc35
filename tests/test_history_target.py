"""The history of a real ``twistd supervisor-target``: every line of a fast child, read back
through IPC pages, and what a SIGKILL leaves for the next instance."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from typing import Any

import pytest

from supervisor.history.store import list_segments
from tests.sequences import difference
from tests.waiting import wait_until

VENV_BIN = pathlib.Path(sys.executable).parent
TWISTD = str(VENV_BIN / "twistd")
LINES = 200_000
FAST_CHILD = (
    "import os, sys, time\n"
    "parent = os.getppid()\n"
    "w = sys.stdout.write\n"
    f"for i in range({LINES}):\n"
    "    w('line %07d ' % i + 'x' * 80 + '\\n')\n"
    "sys.stdout.flush()\n"
    "while os.getppid() == parent: time.sleep(0.2)\n"  # until the target is gone
)
#: writes until a file named ``quiet`` exists in its folder, then sleeps
ENDLESS_CHILD = (
    "import itertools, os, sys, time\n"
    "for i in itertools.count():\n"
    "    sys.stdout.write('tick %d\\n' % i)\n"
    "    if i % 1000 == 999:\n"
    "        sys.stdout.flush()\n"
    "        while os.path.exists('quiet'): time.sleep(0.2)\n"
)


@pytest.fixture
def workdir():
    folder = tempfile.mkdtemp(prefix="hist", dir="/tmp")
    yield pathlib.Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def write_config(folder: pathlib.Path, program: str, flush_interval_ms: int = 50) -> pathlib.Path:
    config = folder / "target.yaml"
    config.write_text(textwrap.dedent(f"""\
        observability:
          history: {{enabled: true, path: {folder}/history, max_bytes: 1073741824,
                     segment_bytes: 8388608, flush_interval_ms: {flush_interval_ms}}}
        ipc: {{enabled: true, target_id: hist-target, path: {folder}/t.sock,
              bind_mode: replace_stale}}
        children:
          - name: chatty
            kind: process
            restart_policy: temporary
            command: {json.dumps([sys.executable, "-c", program])}
    """))
    return config


def stop_target(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def start_target(folder: pathlib.Path, config: pathlib.Path) -> subprocess.Popen:
    sock = folder / "t.sock"
    if sock.exists():
        sock.unlink()
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "supervisor-target", "--config",
                             str(config)], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_until(lambda: sock.exists(), 20, "IPC socket")
    return proc


class Ipc:
    """A blocking NDJSON client: one request, one answer."""

    def __init__(self, path: pathlib.Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        self.counter = 0

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.counter += 1
        request = {"request_id": f"r{self.counter}", "method": method, "params": params}
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        answer = json.loads(self.file.readline())
        assert answer["request_id"] == request["request_id"]
        return answer

    def page(self, **params: Any) -> dict[str, Any]:
        answer = self.call("history.logs", {"target_id": "hist-target", **params})
        assert answer["ok"], answer
        return answer["result"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def read_all(ipc: Ipc, **params: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = ipc.page(after=cursor, limit=1000, **params)
        assert page["type"] == "history_page" and not page["evicted"]
        records += page["records"]
        cursor = page["next_cursor"]
        if cursor is None:
            return records


def test_every_line_of_a_fast_child_is_in_history_in_order_once(workdir):
    proc = start_target(workdir, write_config(workdir, FAST_CHILD))
    ipc = Ipc(workdir / "t.sock")
    try:
        wait_until(lambda: ipc.page(before="end", limit=1, child_path="/root/chatty")["records"]
                   and ipc.page(before="end", limit=1, child_path="/root/chatty")["records"][0]
                   ["message"].startswith(f"line {LINES - 1:07d}"), 120, "the last line on disk")
        records = read_all(ipc, child_path="/root/chatty")
        expected = [f"line {i:07d} " + "x" * 80 for i in range(LINES)]
        differs = difference([r["message"] for r in records], expected)
        assert differs is None, differs
        sequences = [r["sequence"] for r in records]
        assert sequences == sorted(set(sequences))
        assert {r["instance_id"] for r in records} == {records[0]["instance_id"]}
        assert all(r["fields"] == {"stream": "stdout", "child_path": "/root/chatty"}
                   for r in records)
        # backwards from the newest, a page at a time, meets the same lines
        backwards: list[str] = []
        cursor = "end"
        while cursor is not None and len(backwards) < 5000:
            page = ipc.page(before=cursor, limit=1000, child_path="/root/chatty")
            backwards = [r["message"] for r in page["records"]] + backwards
            cursor = page["next_cursor"]
        assert backwards == expected[-len(backwards):]
        # a search scans a bounded stretch per page; its cursor continues the scan
        assert read_all(ipc, text="line 0123456")[0]["message"] == expected[123456]
        assert [r["message"][:12] for r in read_all(ipc, text="line 0123456")] == ["line 0123456"]
        printed = ctl(workdir, "--json", "logs", "--child", "/root/chatty", "--since", "1h")
        assert printed.returncode == 0, printed.stderr
        differs = difference([json.loads(l)["log"]["message"] for l in printed.stdout.splitlines()],
                             expected)
        assert differs is None, differs
        grep = ctl(workdir, "logs", "--grep", "line 0199999")
        assert grep.stdout.count("line 0199999") == 1 and len(grep.stdout.splitlines()) == 1
        events = ipc.call("history.events", {"target_id": "hist-target", "limit": 100})
        assert "child_started" in [e["event_type"] for e in events["result"]["records"]]
        state = ipc.call("state", {"target_id": "hist-target"})["result"]["state"]
        assert state["dropped_log_count"] == 0  # the ring evicted, the history kept all
        refused = ipc.call("history.logs", {"target_id": "hist-target", "limit": 0})
        assert refused["error"]["code"] == "validation_failed"
    finally:
        ipc.close()
        stop_target(proc)


def test_after_a_sigkill_the_kept_lines_are_a_prefix_and_the_next_instance_appends(workdir):
    config = write_config(workdir, ENDLESS_CHILD, flush_interval_ms=100)
    proc = start_target(workdir, config)
    logs = workdir / "history" / "logs"

    def lines_on_disk() -> int:
        return sum(os.path.getsize(p) for _, p in list_segments(str(logs)))

    wait_until(lambda: lines_on_disk() > 2_000_000, 60, "output on disk")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    first_segments = list_segments(str(logs))
    (workdir / "quiet").touch()
    proc = start_target(workdir, config)
    ipc = Ipc(workdir / "t.sock")
    try:
        wait_until(lambda: len(instances(ipc)) == 2, 30, "records of the second instance")
        wait_until(lambda: ipc.page(before="end", limit=1, child_path="/root/chatty")["records"]
                   [0]["message"] == "tick 999", 30, "the second instance's lines on disk")
        records = read_all(ipc, child_path="/root/chatty")
        order = []
        for record in records:
            if not order or order[-1] != record["instance_id"]:
                order.append(record["instance_id"])
        assert len(order) == 2, "the first instance's lines, then the second's, never mixed"
        first = [r for r in records if r["instance_id"] == order[0]]
        ticks = [int(r["message"].split()[1]) for r in first]
        assert ticks == list(range(len(ticks))), "no gap, no duplicate before the kill"
        second = [int(r["message"].split()[1]) for r in records if r["instance_id"] == order[1]]
        assert second == list(range(len(second)))
        segments = list_segments(str(logs))
        assert segments[: len(first_segments)] == first_segments
    finally:
        ipc.close()
        stop_target(proc)


def ctl(folder: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor.ctl", "--socket", str(folder / "t.sock"),
                           *args], capture_output=True, text=True, timeout=120)


#: a tick every few hundred microseconds, for ever
STEADY_CHILD = (
    "import itertools, sys, time\n"
    "for i in itertools.count():\n"
    "    sys.stdout.write('tick %d\\n' % i)\n"
    "    sys.stdout.flush()\n"
    "    time.sleep(0.0003)\n"
)


def test_logs_follow_continues_from_history_without_a_gap_or_a_repeat(workdir):
    proc = start_target(workdir, write_config(workdir, STEADY_CHILD, flush_interval_ms=200))
    ipc = Ipc(workdir / "t.sock")
    follower = None
    try:
        wait_until(lambda: len(read_all(ipc, child_path="/root/chatty")) > 3000, 60,
                   "a history to continue from")
        follower = subprocess.Popen(
            [sys.executable, "-m", "supervisor.ctl", "--socket", str(workdir / "t.sock"), "--json",
             "logs", "--follow", "--child", "/root/chatty"], stdout=subprocess.PIPE, text=True)
        ticks = []
        while len(ticks) < 12_000:
            line = follower.stdout.readline()
            assert line, "ctl logs --follow ended"
            ticks.append(int(json.loads(line)["log"]["message"].split()[1]))
        assert ticks == list(range(len(ticks)))
    finally:
        if follower is not None:
            follower.kill()
            follower.wait(10)
        ipc.close()
        stop_target(proc)


def instances(ipc: Ipc) -> set[str]:
    return {r["instance_id"] for r in ipc.page(limit=1)["records"]} | {
        r["instance_id"] for r in ipc.page(before="end", limit=1)["records"]}
