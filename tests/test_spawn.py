"""Starting process children (supervisor.tree.spawn) with real processes on the real reactor:
both backends (posix_spawn, and Popen for a child with a cwd), sessions, descriptors, signals,
exit reasons, and that the target process never forks."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import defer, error, reactor
from twisted.internet import process as twisted_process
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import globalLogPublisher

from supervisor import ChildKind, ChildSpec, Policy, Supervisor, SupervisorSpec
from supervisor.tree.spawn import needs_popen, seal_inherited_fds, spawn_child
from tests.waiting import eventually, wait_until

PY = sys.executable
BACKENDS = pytest.mark.parametrize("cwd", [None, "tmp"], ids=["posix_spawn", "popen_cwd"])


class Recorder(ProcessProtocol):
    """Collects what the transport reports, in order."""

    def __init__(self) -> None:
        self.output = {1: b"", 2: b""}
        self.calls: list[str] = []
        self.reasons: dict[str, object] = {}
        self.ended: defer.Deferred[None] = defer.Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output[childFD] += data

    def childConnectionLost(self, childFD: int) -> None:
        self.calls.append(f"closed {childFD}")

    def processExited(self, reason) -> None:
        self.calls.append("exited")
        self.reasons["exited"] = reason

    def processEnded(self, reason) -> None:
        self.calls.append("ended")
        self.reasons["ended"] = reason
        self.ended.callback(None)


def start(script: str, cwd: str | None = None, protocol: Recorder | None = None) -> tuple[Recorder, object]:
    protocol = protocol or Recorder()
    child = spawn_child(reactor, protocol, PY, [PY, "-c", script], dict(os.environ), cwd=cwd)
    return protocol, child


def resolve(cwd: str | None, tmp_path) -> str | None:
    return str(tmp_path) if cwd == "tmp" else None


@BACKENDS
@pytest_twisted.ensureDeferred
async def test_the_child_leads_its_own_session_in_its_cwd(cwd, tmp_path):
    cwd = resolve(cwd, tmp_path)
    assert needs_popen(cwd) is (cwd is not None)
    script = "import os; print(os.getpid(), os.getsid(0), os.getpgid(0), os.getcwd())"
    rec, child = start(script, cwd)
    await rec.ended
    pid, sid, pgid, where = rec.output[1].decode().split()
    assert int(pid) == child.pid == int(sid) == int(pgid)
    assert int(sid) != os.getsid(0)
    assert where == (cwd or os.getcwd())


@BACKENDS
@pytest_twisted.ensureDeferred
async def test_the_child_gets_devnull_two_pipes_and_nothing_else(cwd, tmp_path):
    cwd = resolve(cwd, tmp_path)
    leak_r, leak_w = os.pipe()
    os.set_inheritable(leak_w, True)  # as if inherited from whatever started the daemon
    # fd 0 is the null device itself, compared by identity rather than by reading it: what
    # /dev/null yields is the machine's business
    script = ("import os; fds = sorted(int(f) for f in os.listdir('/proc/self/fd'));"
              "print(os.readlink('/proc/self/fd/0'),"
              " os.path.samestat(os.fstat(0), os.stat(os.devnull)), *fds)")
    try:
        before, _ = start(script, cwd)
        await before.ended
        assert seal_inherited_fds() >= 1
        assert not os.get_inheritable(leak_w)
        after, _ = start(script, cwd)
        await after.ended
    finally:
        os.close(leak_r)
        os.close(leak_w)
    stdin, is_null, *fds = after.output[1].decode().split()
    assert (stdin, is_null) == ("/dev/null", "True")
    assert [int(fd) for fd in fds[:3]] == [0, 1, 2] and len(fds) == 4  # + the one listdir used
    # an inherited descriptor reaches a posix_spawn child until it is sealed (Popen closes
    # everything above 2 itself)
    leaked = str(leak_w) in before.output[1].decode().split()[2:]
    assert leaked is (cwd is None)


@BACKENDS
@pytest_twisted.ensureDeferred
async def test_the_child_does_not_inherit_ignored_sigpipe(cwd, tmp_path):
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # the interpreter ignores it
    rec = Recorder()
    spawn_child(reactor, rec, "/bin/cat", ["cat", "/proc/self/status"], dict(os.environ),
                cwd=resolve(cwd, tmp_path))
    await rec.ended
    ignored = next(int(line.split()[1], 16) for line in rec.output[1].decode().splitlines()
                   if line.startswith("SigIgn:"))
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert not ignored & (1 << (signal.SIGTERM - 1))


@BACKENDS
@pytest_twisted.ensureDeferred
async def test_exit_reasons_are_twisteds_and_the_child_is_reaped(cwd, tmp_path):
    cwd = resolve(cwd, tmp_path)
    ok, ok_child = start("print('bye')", cwd)
    bad, _ = start("import sys; sys.stderr.write('oops\\n'); raise SystemExit(3)", cwd)
    killed, killed_child = start("import time; print('up', flush=True); time.sleep(60)", cwd)
    await eventually(lambda: killed.output[1] == b"up\n")
    killed_child.signalProcess("KILL")
    await defer.gatherResults([ok.ended, bad.ended, killed.ended])
    assert ok.reasons["ended"].check(error.ProcessDone)
    assert bad.reasons["ended"].value.exitCode == 3 and bad.output[2] == b"oops\n"
    assert killed.reasons["ended"].value.signal == signal.SIGKILL
    for rec in (ok, bad, killed):
        assert rec.calls[-1] == "ended" and sorted(rec.calls[:-1]) == ["closed 1", "closed 2", "exited"]
    with pytest.raises(error.ProcessExitedAlready):
        killed_child.signalProcess(signal.SIGTERM)
    with pytest.raises(ChildProcessError):  # reaped by the transport, not left a zombie
        os.waitpid(ok_child.pid, os.WNOHANG)


@pytest_twisted.ensureDeferred
async def test_an_exit_ends_the_pause_that_gathers_output(monkeypatch):
    """The pause after a read waits for more output; once the child has exited nothing more
    can come, so its end (and a restart) does not wait for the pause."""
    import supervisor.tree.spawn as spawn

    monkeypatch.setattr(spawn, "_GATHER_SECONDS", 3600)
    rec, _ = start("import sys, time; print('last words', flush=True); time.sleep(0.2)")
    await eventually(lambda: rec.output[1] == b"last words\n", what="the line, read before the exit")
    await eventually(lambda: "ended" in rec.calls, what="the end, with an hour-long pause pending")
    assert rec.calls.index("exited") < rec.calls.index("ended")


@pytest_twisted.ensureDeferred
async def test_the_end_waits_for_output_held_open_by_a_grandchild():
    # the leader exits at once; a grandchild in its group keeps stdout open for a while
    script = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
              "'import time; time.sleep(0.3); print(\"late\", flush=True)']); print('leader')")
    rec, _ = start(script)
    await rec.ended
    assert rec.calls.index("exited") < rec.calls.index("ended")
    assert rec.output[1].split() == [b"leader", b"late"]


@pytest_twisted.ensureDeferred
async def test_a_protocol_that_raises_cannot_stall_the_end():
    class Faulty(Recorder):
        def processExited(self, reason) -> None:
            super().processExited(reason)
            raise RuntimeError("protocol bug")

    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        rec, _ = start("print('x')", protocol=Faulty())
        await rec.ended
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert rec.calls[-1] == "ended"
    failures = [e["log_failure"] for e in logged if "log_failure" in e]
    assert [f.getErrorMessage() for f in failures] == ["protocol bug"]
    for f in failures:
        f.cleanFailure()


@BACKENDS
def test_start_failures_raise_and_leak_no_descriptors(cwd, tmp_path):
    cwd = resolve(cwd, tmp_path)
    plain_file = tmp_path / "not-executable"
    plain_file.write_text("data\n")
    plain_file.chmod(0o644)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        spawn_child(reactor, Recorder(), "/nonexistent/binary", ["x"], dict(os.environ), cwd=cwd)
    with pytest.raises(PermissionError):
        spawn_child(reactor, Recorder(), str(plain_file), ["x"], dict(os.environ), cwd=cwd)
    assert len(os.listdir("/proc/self/fd")) == before


@pytest_twisted.ensureDeferred
async def test_the_target_process_never_forks(monkeypatch, tmp_path):
    """Neither os.fork nor Twisted's Process (which forks when a cwd is set) is used."""

    def refuse(*args, **kwargs):
        raise AssertionError("fork() in the target process")

    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(twisted_process.Process, "__init__", refuse)
    printer = "import os; print(os.getcwd(), flush=True); import time; time.sleep(60)"
    spec = SupervisorSpec(
        policy=Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0),
        children=[
            ChildSpec("plain", ChildKind.PROCESS, command=[PY, "-c", printer]),
            ChildSpec("placed", ChildKind.PROCESS, command=[PY, "-c", printer], cwd=str(tmp_path)),
        ],
    )
    sup = Supervisor(spec, reactor=reactor, clock=reactor)
    sup.startService()
    try:
        await eventually(lambda: len(sup.logs) >= 2, what="output of both children")
        assert sorted(r.message for r in sup.logs) == sorted([os.getcwd(), str(tmp_path)])
        os.kill(sup.child("/root/placed").runner.pid, signal.SIGKILL)
        await eventually(lambda: sup.child("/root/placed").restart_count == 1
                         and sup.child("/root/placed").state.value == "running")
    finally:
        await sup.stopService()
    assert [e for e in sup.events if e.event_type == "child_failed"][0].payload["reason"] == \
        "killed by signal 9 (SIGKILL)"


@pytest_twisted.ensureDeferred
async def test_popen_is_never_left_to_reap_a_child(tmp_path):
    """subprocess polls (and reaps) Popen objects it no longer references; a child started
    with a cwd stays ours, so that its exit status reaches the supervisor."""
    rec, child = start("raise SystemExit(7)", str(tmp_path))
    gc.collect()
    await eventually(lambda: os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT))
    subprocess.run([PY, "-c", "pass"], check=True)  # runs subprocess's own clean-up of the dead
    await rec.ended
    assert rec.reasons["exited"].value.exitCode == 7


def test_the_target_seals_descriptors_it_inherited(tmp_path):
    """``twistd supervisor-target`` started with an inheritable descriptor (as a careless
    parent would leave one) does not pass it on to its process children."""
    leak_r, leak_w = os.pipe()
    os.set_inheritable(leak_w, True)
    lister = "import os; print('fds', *sorted(int(f) for f in os.listdir('/proc/self/fd')))"
    config = tmp_path / "target.yaml"
    config.write_text(
        f"ipc: {{enabled: true, target_id: seal, path: {tmp_path}/t.sock, bind_mode: replace_stale}}\n"
        f"children:\n  - {{name: lister, kind: process, restart_policy: temporary, "
        f"command: [{PY}, -c, {lister!r}]}}\n")
    twistd = os.path.join(os.path.dirname(PY), "twistd")
    proc = subprocess.Popen([twistd, "-n", "supervisor-target", "--config", str(config)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            pass_fds=(leak_w,))
    os.close(leak_w)

    def listed() -> list[str] | None:
        logs = subprocess.run([PY, "-m", "supervisor.ctl", "--socket", f"{tmp_path}/t.sock", "logs"],
                              capture_output=True, text=True, timeout=60).stdout
        found = [line.split("fds ", 1)[1].split() for line in logs.splitlines() if "fds 0" in line]
        return found[0] if found else None

    try:
        fds = wait_until(listed, 30, "the child's descriptor list in the log tail")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        os.close(leak_r)
    assert fds[:3] == ["0", "1", "2"] and len(fds) == 4  # + the one listdir used


def test_a_read_that_finds_the_pipe_half_full_reads_again_without_the_pause():
    """The gathering pause follows a read, unless the read took half of what one wake-up may
    take: then the child writes faster than the pause allows, and the next read comes in the
    next reactor turn instead (a clock, a real pipe)."""
    from twisted.internet.testing import MemoryReactorClock

    import supervisor.tree.spawn as spawn

    class Received(ProcessProtocol):
        def __init__(self) -> None:
            self.received = 0

        def childDataReceived(self, fd, data) -> None:
            self.received += len(data)

    clock = MemoryReactorClock()
    protocol = Received()
    read_end, write_end = os.pipe()
    pidfd = os.pidfd_open(os.getpid())
    child = spawn.ChildProcess(clock, protocol, os.getpid(), pidfd, {1: read_end}, None)
    spawn.LIVE_LEADERS.discard(os.getpid())
    pipe = child._pipes[1]
    try:
        os.write(write_end, b"x" * spawn._READ_SIZE)  # chatty: the pipe grows
        pipe.doRead()
        [pause] = clock.getDelayedCalls()
        assert pause.getTime() - clock.seconds() == spawn._GATHER_SECONDS
        clock.advance(spawn._GATHER_SECONDS)  # nothing more came: the pipe is watched again
        assert not clock.getDelayedCalls()
        os.set_blocking(write_end, False)
        os.write(write_end, b"y" * (fcntl_pipe_size(write_end) // 2))
        pipe.doRead()
        [again] = clock.getDelayedCalls()
        assert again.getTime() == clock.seconds(), "half full: the next read in the next turn"
        assert protocol.received == spawn._READ_SIZE + fcntl_pipe_size(write_end) // 2
    finally:
        child.loseConnection()
        os.close(write_end)
        os.close(pidfd)


def fcntl_pipe_size(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
