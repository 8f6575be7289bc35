"""Process options on real subprocesses: exitcodes, startsecs/startretries, groups, users."""

from __future__ import annotations

import os
import pwd
import sys

import pytest_twisted
from twisted.internet import reactor

from supervisor import ChildKind, ChildSpec, Policy, RestartPolicy, SupervisorSpec, Supervisor
from supervisor.tree.descendants import alive
from tests.waiting import eventually

PY = sys.executable
FAST = Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0)


def supervise(*children: ChildSpec, policy: Policy = FAST) -> Supervisor:
    sup = Supervisor(SupervisorSpec(children=children, policy=policy), reactor=reactor, clock=reactor)
    sup.startService()
    return sup


def events(sup: Supervisor, event_type: str, path: str) -> list:
    return [e for e in sup.events if e.event_type == event_type and e.target_path == path]


@pytest_twisted.ensureDeferred
async def test_exitcodes_name_the_normal_exits_of_a_transient_child():
    sup = supervise(
        ChildSpec("expected", ChildKind.PROCESS, command=[PY, "-c", "raise SystemExit(3)"],
                  restart_policy=RestartPolicy.TRANSIENT, exitcodes=(0, 3)),
        ChildSpec("zero_unexpected", ChildKind.PROCESS, command=[PY, "-c", "pass"],
                  restart_policy=RestartPolicy.TRANSIENT, exitcodes=(2,),
                  policy=Policy(initial_backoff_ms=60_000, max_backoff_ms=60_000)),
    )
    try:
        expected = await eventually(lambda: sup.child("/root/expected").state.value == "completed"
                                    and sup.child("/root/expected"), what="exit 3 completes")
        assert expected.restart_count == 0 and expected.last_failure is None
        assert not events(sup, "child_failed", "/root/expected")
        # exit 0 is not in exitcodes: a failure, so transient schedules a restart
        await eventually(lambda: sup.child("/root/zero_unexpected").state.value == "restarting",
                         what="exit 0 counted as a failure")
        assert events(sup, "child_failed", "/root/zero_unexpected")[0].payload["reason"] == "exit status 0"
        assert sup.child("/root/zero_unexpected").last_failure == "exit status 0"
    finally:
        await sup.stopService()


@pytest_twisted.ensureDeferred
async def test_a_process_that_exits_within_startsecs_failed_to_start_and_is_given_up_after_startretries():
    sup = supervise(ChildSpec("flaky", ChildKind.PROCESS, command=[PY, "-c", "pass"],
                              startsecs=5, startretries=2))
    try:
        child = await eventually(
            lambda: (c := sup.child("/root/flaky")).last_policy_decision is not None
            and c.last_policy_decision.startswith("given up") and c, what="given up")
        assert child.state.value == "failed"
        assert child.last_failure.startswith("failed to start: exit status 0 after ")
        assert child.last_failure.endswith("(startsecs 5)")
        assert child.last_policy_decision == "given up after 3 failed starts (startretries 2)"
        # the first start and two retries, each counted as a restart attempt; never running
        assert len(events(sup, "child_started", "/root/flaky")) == 3
        assert child.restart_count == 2
        assert not events(sup, "child_running", "/root/flaky")
        assert len(events(sup, "child_failed", "/root/flaky")) == 3
    finally:
        await sup.stopService()


@pytest_twisted.ensureDeferred
async def test_a_process_is_starting_until_startsecs_pass_then_running():
    sup = supervise(ChildSpec("slow", ChildKind.PROCESS,
                              command=[PY, "-c", "import time; time.sleep(60)"], startsecs=0.3))
    try:
        child = sup.child("/root/slow")
        await eventually(lambda: child.runner is not None and child.runner.pid)
        assert child.state.value == "starting"
        await eventually(lambda: child.state.value == "running", what="running after startsecs")
        assert child.failed_starts == 0
    finally:
        await sup.stopService()


@pytest_twisted.ensureDeferred
async def test_numprocs_three_runs_three_instances_and_a_group_restart_restarts_all_three():
    from supervisor.config.target import parse_target_config

    config = parse_target_config({
        "policy": {"initial_backoff_ms": 0, "max_backoff_ms": 0, "jitter_ratio": 0},
        "children": [{
            "name": "web", "kind": "process", "numprocs": 3,
            "command": [PY, "-c", "import os, sys, time; print(sys.argv[1], os.environ['SLOT'], flush=True); time.sleep(60)",
                        "{process_name}"],
            "environment": {"SLOT": "slot-{index}"},
        }],
    }, "/tmp", {})
    sup = Supervisor(config.spec, reactor=reactor, clock=reactor)
    sup.startService()
    names = ["web_00", "web_01", "web_02"]
    try:
        group = sup.child("/root/web")
        assert group.spec.kind is ChildKind.SUPERVISOR
        assert list(group.subtree.children) == names
        instances = [sup.child(f"/root/web/{n}") for n in names]
        await eventually(lambda: all(c.state.value == "running" for c in instances), what="3 running")
        await eventually(lambda: len(sup.logs) >= 3, what="three greetings")
        assert sorted(r.message for r in sup.logs) == [f"web_0{i} slot-{i}" for i in range(3)]
        pids = [c.runner.pid for c in instances]
        outcome = await sup.command("restart_child", "/root/web", requested_by="test", reason="deploy")
        assert outcome.accepted, outcome.error
        await eventually(lambda: all(c.state.value == "running" for c in instances), what="3 back")
        new_pids = [c.runner.pid for c in instances]
        assert all(n != o for n, o in zip(new_pids, pids))
        assert [c.generation for c in instances] == [2, 2, 2]
        assert not any(alive(pid) for pid in pids)
    finally:
        await sup.stopService()



TRAP_HUP = ("import signal, sys, time\n"
            "signal.signal(signal.SIGHUP, lambda *a: print('got HUP', sys.argv[1], flush=True))\n"
            "print('ready', flush=True)\n"
            "while True: time.sleep(1)\n")


@pytest_twisted.ensureDeferred
async def test_signal_child_sends_a_named_signal_to_every_instance_of_a_group_and_is_audited():
    group = ChildSpec("web", ChildKind.SUPERVISOR, children=[
        ChildSpec(f"web_0{i}", ChildKind.PROCESS, command=[PY, "-c", TRAP_HUP, f"web_0{i}"])
        for i in range(2)])
    sup = supervise(group, ChildSpec("task", ChildKind.TASK, factory=lambda ctx: ctx.cancellation))
    try:
        await eventually(lambda: sum(r.message == "ready" for r in sup.logs) == 2, what="ready")
        outcome = await sup.command("signal_child", "/root/web", requested_by="ops",
                                    reason="reopen logs", signal="HUP", command_id="sig-1")
        assert outcome.accepted, outcome.error
        assert outcome.affected == ("/root/web/web_00", "/root/web/web_01")
        assert outcome.report["signal"] == "SIGHUP"
        await eventually(lambda: sorted(r.message for r in sup.logs if r.message.startswith("got"))
                         == ["got HUP web_00", "got HUP web_01"], what="both got HUP")
        assert all(sup.child(f"/root/web/web_0{i}").state.value == "running" for i in range(2))
        audit = [e for e in sup.events if e.correlation_id == "sig-1"]
        assert [e.event_type for e in audit] == ["command_received", "command_completed"]
        assert audit[0].payload == {"command": "signal_child", "requested_by": "ops",
                                    "reason": "reopen logs", "origin": "in_process"}
        assert audit[1].payload["status"] == "completed"
        bad = await sup.command("signal_child", "/root/web", requested_by="ops", reason="x",
                                signal="NOPE")
        assert (bad.status, bad.error.code) == ("failed", "validation_failed")
        task = await sup.command("signal_child", "/root/task", requested_by="ops", reason="x",
                                 signal="HUP")
        assert task.error.code == "illegal_transition" and "not a process" in task.error.message
    finally:
        await sup.stopService()


def test_ctl_names_children_as_supervisorctl_does():
    from supervisor.ctl import child_path

    assert child_path("worker:*") == "/root/worker"
    assert child_path("worker:") == "/root/worker"
    assert child_path("worker:worker_01") == "/root/worker/worker_01"
    assert child_path("cache") == "/root/cache"
    assert child_path("/root/a/b") == "/root/a/b"


@pytest_twisted.ensureDeferred
async def test_user_group_and_umask_are_set_in_the_child(tmp_path):
    assert os.geteuid() == 0, "this test drops privileges, so it runs as root (as CI does)"
    nobody = pwd.getpwnam("nobody")
    # a system shell: the interpreter running the tests may live where nobody cannot read
    script = 'echo "$(id -u) $(id -g) $(umask) $(id -G)"; exec sleep 60'
    sup = supervise(ChildSpec("dropped", ChildKind.PROCESS, command=["/bin/sh", "-c", script],
                              user="nobody", umask=0o027))
    try:
        child = sup.child("/root/dropped")
        await eventually(lambda: len(sup.logs) >= 1, what="the child's ids")
        uid, gid, mask, *groups = list(sup.logs)[-1].message.split()
        assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
        assert sorted(map(int, groups)) == sorted(set(os.getgrouplist("nobody", nobody.pw_gid)))
        assert mask == "0027"
        with open(f"/proc/{child.runner.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        assert status["Uid"].split()[:2] == [str(nobody.pw_uid)] * 2
    finally:
        await sup.stopService()



@pytest_twisted.ensureDeferred
async def test_stop_and_kill_as_group_reach_the_whole_group_by_default_and_only_the_leader_when_off():
    script = 'sleep 300 & echo "$!"; trap "echo leader done; exit 0" TERM; wait'
    sup = supervise(
        ChildSpec("grouped", ChildKind.PROCESS, command=["/bin/sh", "-c", script]),
        ChildSpec("leader_only", ChildKind.PROCESS, command=["/bin/sh", "-c", script],
                  stop_as_group=False, kill_as_group=False),
    )
    orphans = []
    try:
        await eventually(lambda: len(sup.logs) >= 2, what="both grandchildren's pids")
        pids = {r.fields["child_path"]: int(r.message) for r in sup.logs if r.message.isdigit()}
        for path in ("/root/grouped", "/root/leader_only"):
            await sup.command("pause_child", path, requested_by="t", reason="stop it")
        grouped, alone = pids["/root/grouped"], pids["/root/leader_only"]
        orphans.append(alone)
        await eventually(lambda: not alive(grouped), what="group member stopped with its leader")
        assert sup.child("/root/leader_only").state.value == "paused"
        assert alive(alone), "with both off, the leader's group is left alone"
        # the leader's last words are read although the member still holds its pipes
        done = [r.fields["child_path"] for r in sup.logs if r.message == "leader done"]
        assert sorted(done) == ["/root/grouped", "/root/leader_only"]
    finally:
        for pid in orphans:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        await sup.stopService()
