"""Process options on real subprocesses: exitcodes, startsecs/startretries, groups, users."""

from __future__ import annotations

import os
import sys

import pytest_twisted
from twisted.internet import reactor

from supervisor import ChildKind, ChildSpec, Policy, RestartPolicy, SupervisorSpec, Supervisor
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
