"""A target stops once, cleanly, however many stop signals reach it: a terminal's Ctrl-C goes
to the whole foreground process group, a second Ctrl-C follows, and a launcher or service
manager may add its SIGTERM while the staged shutdown runs, or while the children are still
being started, before the reactor (and its handlers) runs."""

from __future__ import annotations

import json
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

from supervisor._signals import ReloadOnHangup, StopOnce
from supervisor.tree.descendants import children_of, leftovers
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
    proc = launch(workdir)
    # an answer on the socket means the reactor runs, so its signal handlers are in place
    wait_until(lambda: answers_hello(workdir / "t.sock") or proc.poll() is not None, 30, "IPC answer")
    assert proc.poll() is None, output(workdir)
    return proc


def launch(workdir: Path, **environ: str) -> subprocess.Popen:
    """``twistd supervisor-target`` on ``workdir/target.yaml``, in a session of its own, its
    output in ``out.log``."""
    with open(workdir / "out.log", "wb") as log:
        return subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "supervisor-target", "--config", str(workdir / "target.yaml")],
            cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT), **environ}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


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


def release_and_wait(workdir: Path, proc: subprocess.Popen) -> None:
    """Let the target's held child go on (``release``) and wait for the target to end."""
    (workdir / "release").touch()
    proc.wait(60)


def kill_if_running(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def assert_one_clean_stop(log: str, proc: subprocess.Popen, first: int) -> None:
    """One shutdown, begun by the reactor's handler for ``first``, with no error on the way."""
    assert proc.returncode in (0, -first), log  # twistd re-raises the signal it stopped on
    assert "Traceback" not in log and "ReactorNotRunning" not in log, log
    assert "critical" not in log, log
    assert log.count("shutting down.") == 1, log
    assert f"Received {signal.Signals(first).name}, shutting down." in log, log
    assert "Server Shut Down" in log, log


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
        release_and_wait(workdir, proc)
    finally:
        kill_if_running(proc)
    log = output(workdir)
    assert_one_clean_stop(log, proc, signals[0])
    assert log.count(REPEATED) == len(signals) - 1, log
    assert not (workdir / "t.sock").exists(), "the socket is removed on the way out"


def test_a_stop_signal_while_the_children_start_stops_every_one_of_them(workdir):
    # five process children start, then a task holds the start-up (the reactor does not run
    # yet) until the test has sent SIGTERM
    target_id = f"starting-{os.getpid()}"
    children = [{"name": f"c{i}", "kind": "process", "command": ["sleep", "3600"]} for i in range(5)]
    children.append({"name": "holder", "kind": "task", "callable": "tests.start_hold:hold_start"})
    (workdir / "target.yaml").write_text(json.dumps({  # JSON is YAML
        "ipc": {"enabled": True, "target_id": target_id, "path": str(workdir / "t.sock")},
        "children": children,
    }))
    proc = launch(workdir, SUPERVISOR_TEST_HOLD=str(workdir))
    try:
        wait_until(lambda: (workdir / "holding").exists() or proc.poll() is not None, 60, "start held")
        assert proc.poll() is None, output(workdir)
        assert len(children_of(proc.pid)) == 5  # the process children run already
        proc.send_signal(signal.SIGTERM)
        release_and_wait(workdir, proc)
    finally:
        kill_if_running(proc)
        for pid, _ in leftovers(target_id):
            os.kill(pid, signal.SIGKILL)
    log = output(workdir)
    assert "Received SIGTERM while starting; stopping once started" in log, log
    assert_one_clean_stop(log, proc, signal.SIGTERM)  # by the reactor's own handler
    assert not leftovers(target_id), "every child stopped with the target"


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class RecordingReactor:
    """What StopOnce and ReloadOnHangup ask of a reactor, recorded; triggers fire on demand,
    and :meth:`start` installs handlers as Twisted's reactor does."""

    def __init__(self) -> None:
        self.triggers: list[tuple[str, str, object]] = []
        self.from_thread: list[tuple[object, tuple]] = []
        self.handled: list[int] = []
        self.running = False

    def addSystemEventTrigger(self, phase: str, event: str, f, *args) -> None:
        self.triggers.append((phase, event, lambda: f(*args)))

    def callFromThread(self, f, *args) -> None:
        self.from_thread.append((f, args))

    def sigInt(self, number: int, frame=None) -> None:
        self.handled.append(number)

    def sigTerm(self, number: int, frame=None) -> None:
        self.handled.append(number)

    def start(self) -> None:
        """Twisted's "during startup": its own handlers first (SIGINT's only over Python's),
        then the triggers added since."""
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self.sigInt)
        signal.signal(signal.SIGTERM, self.sigTerm)
        self.running = True
        self.fire("during", "startup")

    def fire(self, phase: str, event: str) -> None:
        for p, e, f in self.triggers:
            if (p, e) == (phase, event):
                f()


@pytest.fixture(autouse=True)
def own_handlers():
    """Every test leaves the process's handlers as it found them."""
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def send(signum: int) -> None:
    signal.getsignal(signum)(signum, None)


def test_a_stop_signal_before_the_reactor_runs_is_handed_to_it_and_a_second_one_only_noted():
    reactor, repeats = RecordingReactor(), []
    StopOnce(reactor, on_repeat=repeats.append).install()
    # the services start now: a signal here must not end the process by its default
    send(signal.SIGTERM)
    assert reactor.from_thread == [(reactor.sigTerm, (signal.SIGTERM, None))] and reactor.handled == []
    send(signal.SIGINT)
    assert repeats == ["SIGINT"] and len(reactor.from_thread) == 1
    reactor.start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        send(signum)
    assert repeats == ["SIGINT", "SIGINT", "SIGTERM"] and reactor.handled == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_once_the_reactor_runs_the_first_stop_signal_goes_to_its_own_handler(signum):
    reactor, repeats = RecordingReactor(), []
    StopOnce(reactor, on_repeat=repeats.append).install()
    reactor.start()  # its SIGINT handler too: it found ours there, and ours puts its own in
    send(signum)
    send(signal.SIGINT)
    assert reactor.handled == [signum] and repeats == ["SIGINT"] and reactor.from_thread == []


def test_installed_while_the_reactor_runs_it_wraps_the_reactors_handlers_at_once():
    reactor, repeats = RecordingReactor(), []
    reactor.start()
    StopOnce(reactor, on_repeat=repeats.append).install()
    send(signal.SIGTERM)
    send(signal.SIGTERM)
    assert reactor.handled == [signal.SIGTERM] and repeats == ["SIGTERM"]


def test_an_ignored_stop_signal_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as for a job started in the background
    reactor = RecordingReactor()
    StopOnce(reactor).install()
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    reactor.start()
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_without_the_reactors_handlers_the_earlier_ones_come_back():
    reactor = RecordingReactor()
    StopOnce(reactor).install()
    reactor.fire("during", "startup")  # a reactor run with installSignalHandlers=False
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(KeyboardInterrupt):
        send(signal.SIGINT)  # Python's own handler, wrapped: the first one raises as it would


def test_a_hangup_before_the_reactor_runs_is_queued_as_a_reload():
    reactor, reloads = RecordingReactor(), []
    hangup = ReloadOnHangup(reactor, reloads.append)
    hangup.install()
    send(signal.SIGHUP)
    assert reactor.from_thread == [(hangup.hangup, ())] and reloads == []
