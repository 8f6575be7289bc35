"""Process children with real subprocesses on the real reactor."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor

from supervisor import ChildKind, ChildSpec, Policy, ShutdownPolicy, SupervisorSpec, Supervisor
from supervisor.tree import descendants
from supervisor.tree.descendants import alive
from tests.waiting import eventually

PY = sys.executable
FAST = Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0)


@pytest.fixture(params=[False, True], ids=["plain", "subreaper"])
def subreaper(request):
    """This process as a child subreaper or not (a target is one), restored afterwards."""
    was = descendants.is_subreaper()
    descendants._PRCTL(descendants._PR_SET_CHILD_SUBREAPER, int(request.param), 0, 0, 0)
    assert descendants.is_subreaper() is request.param
    yield request.param
    descendants._PRCTL(descendants._PR_SET_CHILD_SUBREAPER, int(was), 0, 0, 0)


def supervise(*children: ChildSpec, **kwargs) -> Supervisor:
    kwargs.setdefault("policy", FAST)
    sup = Supervisor(SupervisorSpec(children=children, **kwargs), reactor=reactor, clock=reactor)
    sup.startService()
    return sup



@pytest_twisted.ensureDeferred
async def test_stdout_and_stderr_lines_become_log_records(tmp_path):
    script = "import sys; print('hello out', flush=True); print('hello err', file=sys.stderr, flush=True); import time; time.sleep(30)"
    sup = supervise(ChildSpec("talker", ChildKind.PROCESS, command=[PY, "-c", script],
                              environment={"EXTRA": "1"}, cwd=str(tmp_path)))
    try:
        await eventually(lambda: len(sup.logs) >= 2, what="two output lines")
        records = {r.message: r for r in sup.logs}
        assert records["hello out"].fields == {"stream": "stdout", "child_path": "/root/talker"}
        assert records["hello out"].severity == "info"
        assert records["hello err"].fields["stream"] == "stderr"
        assert records["hello err"].severity == "warning"
        assert sup.child("/root/talker").health.value == "healthy"
    finally:
        await sup.stopService()


@pytest_twisted.ensureDeferred
async def test_a_crashing_process_is_restarted_with_a_new_pid():
    sup = supervise(ChildSpec("crasher", ChildKind.PROCESS,
                              command=[PY, "-c", "import sys, time; print('up', flush=True); time.sleep(30)"]))
    try:
        runner = await eventually(lambda: sup.child("/root/crasher").runner)
        await eventually(lambda: len(sup.logs) >= 1)
        first_pid = runner.pid
        os.kill(first_pid, 9)
        await eventually(lambda: sup.child("/root/crasher").restart_count == 1
                         and sup.child("/root/crasher").state.value == "running")
        failure = [e for e in sup.events if e.event_type == "child_failed"][0]
        assert failure.payload["reason"] == "killed by signal 9 (SIGKILL)"
        assert sup.child("/root/crasher").runner.pid != first_pid
    finally:
        await sup.stopService()


@pytest_twisted.ensureDeferred
async def test_exit_status_is_the_failure_and_zero_is_a_normal_exit():
    from supervisor import RestartPolicy

    sup = supervise(
        ChildSpec("bad", ChildKind.PROCESS, command=[PY, "-c", "raise SystemExit(3)"],
                  restart_policy=RestartPolicy.TEMPORARY),
        ChildSpec("good", ChildKind.PROCESS, command=[PY, "-c", "pass"],
                  restart_policy=RestartPolicy.TRANSIENT),
    )
    try:
        await eventually(lambda: sup.child("/root/bad").state.value == "failed"
                         and sup.child("/root/good").state.value == "completed")
        assert sup.child("/root/bad").last_failure == "exit status 3"
    finally:
        await sup.stopService()


@pytest.mark.parametrize("placed", [False, True], ids=["posix_spawn", "popen_cwd"])
@pytest_twisted.ensureDeferred
async def test_stop_sends_the_stop_signal_then_kills_the_whole_group(tmp_path, placed):
    pidfile = tmp_path / "grandchild.pid"
    # The child ignores SIGTERM and starts a grandchild that would outlive it.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    sup = supervise(
        ChildSpec("stubborn", ChildKind.PROCESS, command=[PY, "-c", script], stop_signal="SIGTERM",
                  cwd=str(tmp_path) if placed else None),
        shutdown=ShutdownPolicy(graceful_timeout_ms=300, abort_wait_ms=2000),
    )
    await eventually(lambda: any(r.message == "ready" for r in sup.logs))
    grandchild = int(pidfile.read_text())
    leader = sup.child("/root/stubborn").runner.pid
    report = await sup.stopService()
    assert report["children"][0]["outcome"] == "aborted"
    await eventually(lambda: not alive(grandchild), what="grandchild gone")
    assert not alive(leader)
    phases = [e.payload["phase"] for e in sup.events
              if e.event_type == "shutdown_phase_changed" and e.target_path == "/root/stubborn"]
    assert phases == ["request_stop", "graceful_drain", "abort_stragglers", "reconcile", "completed"]


@pytest_twisted.ensureDeferred
async def test_a_polite_process_stops_within_the_graceful_phase():
    sup = supervise(ChildSpec("polite", ChildKind.PROCESS,
                              command=[PY, "-c", "import time; print('up', flush=True); time.sleep(60)"]))
    await eventually(lambda: len(sup.logs) >= 1)
    report = await sup.stopService()
    assert report["children"][0]["outcome"] == "stopped"
    assert report["children"][0]["exit"] == "killed by signal 15 (SIGTERM)"


@pytest_twisted.ensureDeferred
async def test_overlong_output_lines_are_cut_and_marked():
    from supervisor import Observability

    limit = Observability().max_output_line_bytes
    size = limit * 2 + 10
    sup = supervise(ChildSpec("loud", ChildKind.PROCESS,
                              command=[PY, "-c", f"print('x' * {size}, flush=True)"],
                              restart_policy="temporary"))
    try:
        await eventually(lambda: sup.child("/root/loud").state.value == "completed")
        pieces = list(sup.logs)
        assert [len(r.message) for r in pieces] == [limit, limit, 10]
        assert [r.fields.get("truncated", False) for r in pieces] == [True, True, False]
    finally:
        await sup.stopService()


@pytest_twisted.ensureDeferred
async def test_a_child_that_cannot_start_is_a_failure_not_a_crash_of_the_tree(tmp_path):
    sup = supervise(
        ChildSpec("ghost", ChildKind.PROCESS, command=["/nonexistent/binary"],
                  restart_policy="temporary"),
        ChildSpec("nameless", ChildKind.PROCESS, command=["no-such-command-here"],
                  restart_policy="temporary"),
        ChildSpec("lost", ChildKind.PROCESS, command=[PY, "-c", "pass"],
                  cwd=str(tmp_path / "missing"), restart_policy="temporary"),
    )
    try:
        for name in ("ghost", "nameless", "lost"):
            await eventually(lambda: sup.child(f"/root/{name}").state.value == "failed")
        assert sup.status == "running"
        assert sup.child("/root/ghost").last_failure.startswith("spawn failed: FileNotFoundError")
        assert sup.child("/root/nameless").last_failure == "executable not found: no-such-command-here"
        assert str(tmp_path / "missing") in sup.child("/root/lost").last_failure
    finally:
        await sup.stopService()


@pytest_twisted.ensureDeferred
async def test_the_line_limit_is_the_configured_one():
    from supervisor import Observability

    sup = supervise(ChildSpec("loud", ChildKind.PROCESS,
                              command=[PY, "-c", "print('y' * 600, flush=True)"],
                              restart_policy="temporary"),
                    observability=Observability(max_output_line_bytes=256))
    try:
        await eventually(lambda: sup.child("/root/loud").state.value == "completed")
        assert [len(r.message) for r in sup.logs] == [256, 256, 88]
    finally:
        await sup.stopService()


def test_the_line_limit_is_read_from_yaml_within_bounds():
    from supervisor import ConfigError, Observability
    from supervisor.config.target import parse_target_config

    config = parse_target_config({"observability": {"max_output_line_bytes": 4096}}, ".")
    assert config.spec.observability.max_output_line_bytes == 4096
    assert parse_target_config({}, ".").spec.observability == Observability()
    for wrong in (255, 1024 * 1024 + 1, "big"):
        with pytest.raises(ConfigError, match="observability.max_output_line_bytes"):
            parse_target_config({"observability": {"max_output_line_bytes": wrong}}, ".")


ESCAPER = """
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


def open_fds() -> set[str]:
    """What this process's descriptors refer to (``pipe:[inode]``, ...): a pipe opened and
    left open shows as a new entry, whatever number it got, whatever else closed meanwhile."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            pass  # the descriptor listdir used, or one closed meanwhile
    return found


@pytest.mark.parametrize("command", ["remove_child", "shutdown_tree"])
@pytest_twisted.ensureDeferred
async def test_a_grandchild_that_escaped_the_group_is_killed_with_the_child_and_reported(
        tmp_path, command, subreaper):
    pidfile = tmp_path / "grandchild.pid"
    before = open_fds()
    sup = supervise(ChildSpec("escaper", ChildKind.PROCESS, command=[PY, "-c", ESCAPER, str(pidfile)]),
                    shutdown=ShutdownPolicy(graceful_timeout_ms=3000, abort_wait_ms=3000))
    try:
        runner = await eventually(lambda: sup.child("/root/escaper").runner)
        leader = runner.pid
        await eventually(lambda: pidfile.exists(), what="the grandchild wrote its pid")
        grandchild = int(pidfile.read_text())
        assert os.getsid(grandchild) == grandchild != os.getsid(leader)
        outcome = await sup.command(command, None if command == "shutdown_tree" else "/root/escaper",
                                    requested_by="CN=op", reason="test")
        assert outcome.status == "completed", outcome.error
        report = outcome.report if command == "remove_child" else outcome.report["children"][0]
        assert report["processes"] == {"stopped": [leader], "killed": [grandchild], "survived": []}
        assert not alive(grandchild)
        assert open_fds() - before == set(), "the child's pipes are closed"
        done = [e for e in sup.events if e.event_type == "command_completed"][-1]
        assert done.payload["processes"] == {"stopped": [leader], "killed": [grandchild], "survived": []}
    finally:
        await sup.stopService()


LEAVER = """
import os, sys, time
if os.fork() == 0:
    if sys.argv[2] == "escaped":
        os.setsid()
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(60)
    os._exit(0)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
sys.exit(3)
"""


@pytest.mark.parametrize("where", ["in_group", "escaped"])
@pytest_twisted.ensureDeferred
async def test_what_a_crashed_leader_left_running_is_killed(tmp_path, where, subreaper):
    # the leader exits on its own; its child, now an orphan (of this process when it is a
    # subreaper), is found and killed before the exit is handled
    pidfile = tmp_path / "left.pid"
    sup = supervise(ChildSpec("leaver", ChildKind.PROCESS, command=[PY, "-c", LEAVER, str(pidfile), where]),
                    policy=Policy(initial_backoff_ms=60_000, max_backoff_ms=60_000, jitter_ratio=0))
    child = sup.child("/root/leaver")
    try:
        await eventually(lambda: pidfile.exists(), what="the leader's child wrote its pid")
        left = int(pidfile.read_text())
        exits = await eventually(lambda: [e for e in sup.events if e.event_type == "child_exited"],
                                 what="the crash was handled")
        assert len(exits) == 1 and child.runner is None  # not restarted yet: the backoff is long
        assert not alive(left)
    finally:
        await sup.stopService()


SUBTREE_ONLY = """
import json, os, sys
from twisted.internet import defer, reactor, task
from supervisor import ChildKind, ChildSpec, Policy, Supervisor, SupervisorSpec
from supervisor.tree import descendants

scans = []
real_marked = descendants.marked
descendants.marked = lambda *a: scans.append(a) or real_marked(*a)
assert descendants.become_subreaper()
ESCAPER, pidfile = sys.argv[1], sys.argv[2]
PY = sys.executable

async def until(check):
    while not check():
        await task.deferLater(reactor, 0.01, lambda: None)

async def main():
    sup = Supervisor(SupervisorSpec(policy=Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0), children=[
        ChildSpec("crasher", ChildKind.PROCESS, command=[PY, "-c", "import time; time.sleep(60)"]),
        ChildSpec("escaper", ChildKind.PROCESS, command=[PY, "-c", ESCAPER, pidfile])]),
        reactor=reactor, clock=reactor)
    sup.startService()
    try:
        crasher = sup.child("/root/crasher")
        await until(lambda: crasher.runner is not None and crasher.runner.pid)
        os.kill(crasher.runner.pid, 9)
        await until(lambda: crasher.restart_count == 1 and crasher.state.value == "running")
        after_crash = len(scans)
        await until(lambda: os.path.exists(pidfile))
        leader = sup.child("/root/escaper").runner.pid
        outcome = await sup.command("remove_child", "/root/escaper", requested_by="CN=op", reason="t")
        print(json.dumps({"after_crash": after_crash, "after_remove": len(scans), "leader": leader,
                          "processes": outcome.report["processes"]}))
    finally:
        await sup.stopService()

task.react(lambda _: defer.Deferred.fromCoroutine(main()))
"""


def test_a_subreaper_finds_what_a_child_left_without_scanning_proc(tmp_path):
    """In a subreaper with no adopted children, a child's processes are all in its leader's
    subtree: a crash reads no other process; an orphan that came back is found by its marks.
    (In a process of its own: this one has children of other tests.)"""
    pidfile = tmp_path / "grandchild.pid"
    done = subprocess.run([PY, "-c", SUBTREE_ONLY, ESCAPER, str(pidfile)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    grandchild = int(pidfile.read_text())
    assert result["after_crash"] == 0, "a crash that left nothing behind reads no other process"
    assert result["processes"] == {"stopped": [result["leader"]], "killed": [grandchild], "survived": []}
    assert result["after_remove"] == 1, "the orphan came back to this process: found by its marks"
    assert not alive(grandchild)


@pytest_twisted.ensureDeferred
async def test_a_descendant_still_there_after_sigkill_is_reported_and_fails_the_command(tmp_path, monkeypatch):
    import supervisor.tree.children as children

    pidfile = tmp_path / "grandchild.pid"
    sup = supervise(ChildSpec("escaper", ChildKind.PROCESS, command=[PY, "-c", ESCAPER, str(pidfile)]),
                    shutdown=ShutdownPolicy(graceful_timeout_ms=3000, abort_wait_ms=200))
    try:
        runner = await eventually(lambda: sup.child("/root/escaper").runner)
        await eventually(lambda: pidfile.exists(), what="the grandchild wrote its pid")
        grandchild = int(pidfile.read_text())
        # an unkillable process (one in uninterruptible sleep) looks like this one does now
        real_alive = children.alive
        monkeypatch.setattr(children, "alive", lambda pid: pid == grandchild or real_alive(pid))
        outcome = await sup.command("remove_child", "/root/escaper", requested_by="CN=op", reason="t")
        assert (outcome.status, outcome.error.code) == ("failed", "processes_survived")
        assert str(grandchild) in outcome.error.message
        assert outcome.report["processes"] == {"stopped": [runner.pid], "killed": [grandchild],
                                               "survived": [grandchild]}
        assert "/root/escaper" not in [n["path"] for n in sup.state()["topology"]["nodes"]]
        done = [e for e in sup.events if e.event_type == "command_completed"][-1]
        assert (done.payload["status"], done.payload["error"]) == ("failed", "processes_survived")
    finally:
        await sup.stopService()


def test_a_log_file_keeps_every_line_and_rotates(tmp_path):
    from supervisor.tree.logfile import RotatingLogFile

    problems = []
    log = RotatingLogFile(str(tmp_path / "out" / "w.log"), max_bytes=1024, backups=2,
                          report=problems.append)
    for i in range(100):
        log.write_lines(f"line {i:03d} {'x' * 40}\n".encode(), 1)
    log.close()
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["w.log", "w.log.1", "w.log.2"]
    for name in names:
        assert (tmp_path / "out" / name).stat().st_size <= 1024
    kept = "".join((tmp_path / "out" / n).read_text() for n in ["w.log.2", "w.log.1", "w.log"])
    numbers = [int(line.split()[1]) for line in kept.splitlines()]
    assert numbers == list(range(numbers[0], 100)), "the newest lines, in order, none torn"
    (tmp_path / "blocked").write_text("a file where the log's folder should be")
    broken = RotatingLogFile(str(tmp_path / "blocked" / "w.log"), 1024, 2, report=problems.append)
    broken.write_lines(b"a\n", 1)
    broken.write_lines(b"b\n", 1)
    assert broken.lost_lines == 2 and len(problems) == 1, "counted, reported once"


@pytest_twisted.ensureDeferred
async def test_a_process_child_with_a_log_file_writes_its_lines_there_too(tmp_path):
    from supervisor.tree.spec import LogFileSpec

    script = ("import sys\nfor i in range(2000):\n    print('out %d' % i)\n"
              "print('err \"quoted\"', file=sys.stderr, flush=True)\nimport time; time.sleep(30)")
    target = tmp_path / "logs" / "talker.log"
    sup = supervise(ChildSpec("talker", ChildKind.PROCESS, command=[PY, "-c", script],
                              log_file=LogFileSpec(str(target), max_bytes=1024 * 1024)))
    try:
        # both pipes' last lines: a stderr line read in the same pass as stdout may come
        # before stdout lines the child wrote just before it
        await eventually(lambda: target.exists() and 'err "quoted"' in target.read_text()
                         and "out 1999\n" in target.read_text(),
                         what="the child's lines in its log file")
        lines = target.read_text().splitlines()
        assert [l for l in lines if l.startswith("out")] == [f"out {i}" for i in range(2000)]
        assert lines.count('err "quoted"') == 1
    finally:
        await sup.stopService()
