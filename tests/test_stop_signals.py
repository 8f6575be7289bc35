"""A target stops once, cleanly, however many stop signals reach it: a terminal's Ctrl-C goes
to the whole foreground process group, a second Ctrl-C follows, and a launcher or service
manager may add its SIGTERM while the staged shutdown runs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from tests.waiting import wait_until

TWISTD = str(Path(sys.executable).with_name("twistd"))
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sig-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_target(workdir: Path) -> subprocess.Popen:
    # a process child that stops only once the test lets it keeps the shutdown open while
    # the test sends more signals
    (workdir / "target.yaml").write_text(textwrap.dedent(f"""\
        children:
          - name: worker
            kind: task
            callable: supervisor.demo:steady_worker
          - name: slow
            kind: process
            command: ["/bin/sh", "-c", "trap 'until [ -e release ]; do sleep 0.05; done; exit 0' TERM; while true; do sleep 0.05; done"]
            shutdown: {{graceful_timeout_ms: 60000}}
        ipc:
          enabled: true
          target_id: t
          path: {workdir / "t.sock"}
        """))
    with open(workdir / "out.log", "wb") as log:
        proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "supervisor-target", "--config", str(workdir / "target.yaml")],
            cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    # an answer on the socket means the reactor runs, so its signal handlers are in place
    wait_until(lambda: answers_hello(workdir / "t.sock") or proc.poll() is not None, 30, "IPC answer")
    assert proc.poll() is None, output(workdir)
    return proc


def output(workdir: Path) -> str:
    return (workdir / "out.log").read_text(errors="replace")


def answers_hello(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(b'{"request_id": "1", "method": "hello", "params": null}\n')
            return b'"ok":true' in s.recv(65536).replace(b" ", b"")
    except OSError:
        return False


REPEATED = "while shutting down; the shutdown continues"


@pytest.mark.parametrize("signals", [
    (signal.SIGINT, signal.SIGINT, signal.SIGINT),
    (signal.SIGINT, signal.SIGTERM),
    (signal.SIGTERM, signal.SIGINT, signal.SIGTERM),
], ids=["ctrl-c three times", "ctrl-c then sigterm", "sigterm, ctrl-c, sigterm"])
def test_repeated_stop_signals_give_one_clean_shutdown(workdir, signals):
    proc = start_target(workdir)
    first = signal.Signals(signals[0]).name
    try:
        # as a terminal does: to the whole process group, each once the previous one has
        # been handled (signals sent at once may merge into one)
        os.killpg(proc.pid, signals[0])
        wait_until(lambda: f"Received {first}, shutting down." in output(workdir), 30, "shutdown begun")
        for n, signum in enumerate(signals[1:], 1):
            os.killpg(proc.pid, signum)
            wait_until(lambda: output(workdir).count(REPEATED) == n, 30, f"signal {n + 1} noted")
        (workdir / "release").touch()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = output(workdir)
    assert proc.returncode in (0, -signals[0]), log  # twistd re-raises the signal it stopped on
    assert "Traceback" not in log and "ReactorNotRunning" not in log, log
    assert "critical" not in log, log
    assert log.count("shutting down.") == 1, log
    assert log.count(REPEATED) == len(signals) - 1, log
    assert "Server Shut Down" in log, log
    assert not (workdir / "t.sock").exists(), "the socket is removed on the way out"
