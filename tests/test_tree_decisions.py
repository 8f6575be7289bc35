"""The supervisor's decisions as pure functions: exits, restart groups, dependencies."""

from __future__ import annotations

import attrs
import pytest

from supervisor import Policy, RestartPolicy, Strategy
from supervisor.tree.children import Outcome
from supervisor.tree.decisions import (
    Escalate,
    NoRestart,
    Restart,
    decide_exit,
    group_note,
    ran_stably,
    restart_group,
    restart_note,
    restart_wanted,
    unmet_dependencies,
    waiting_note,
)
from supervisor.tree.lifecycle import Phase

CRASH = Outcome(False, "boom")
CLEAN = Outcome(True, "returned")
POLICY = Policy(initial_backoff_ms=100, max_backoff_ms=400, jitter_ratio=0.0, child_restart_limit=3,
                child_restart_window_ms=10_000, supervisor_failure_limit=5,
                supervisor_failure_window_ms=20_000)


def decide(outcome=CRASH, restart_policy=RestartPolicy.PERMANENT, *, rand=lambda: 0.5, **overrides):
    facts = dict(stopping=False, stable=False, child_path="/root/w", child_policy=POLICY,
                 recent_restarts=0, supervisor_path="/root", supervisor_policy=POLICY,
                 recent_failures=0, backoff_attempt=0)
    facts.update(overrides)
    return decide_exit(outcome, restart_policy, rand=rand, **facts)


@pytest.mark.parametrize("policy, normal, wanted", [
    (RestartPolicy.PERMANENT, True, True), (RestartPolicy.PERMANENT, False, True),
    (RestartPolicy.TRANSIENT, True, False), (RestartPolicy.TRANSIENT, False, True),
    (RestartPolicy.TEMPORARY, True, False), (RestartPolicy.TEMPORARY, False, False),
])
def test_restart_wanted_follows_the_restart_policy(policy, normal, wanted):
    assert restart_wanted(policy, normal) is wanted


@pytest.mark.parametrize("outcome", [CRASH, CLEAN])
def test_nothing_restarts_while_stopping_and_no_failure_is_reported(outcome):
    assert decide(outcome, stopping=True, recent_restarts=99) == NoRestart(
        "not restarted (shutting down)", report_failure=False)


def test_a_policy_that_wants_no_restart_says_so_and_reports_only_failures():
    assert decide(CRASH, RestartPolicy.TEMPORARY) == NoRestart("not restarted (temporary)", True)
    assert decide(CLEAN, RestartPolicy.TRANSIENT) == NoRestart("not restarted (transient)", False)


def test_backoff_doubles_per_attempt_up_to_the_cap():
    delays = [decide(backoff_attempt=n).delay for n in range(5)]
    assert delays == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert decide(backoff_attempt=2) == Restart(0.4, 3, reset=False, count_failure=True)
    assert decide(backoff_attempt=2).delay_ms == 400


def test_a_stable_run_starts_the_backoff_again():
    assert decide(backoff_attempt=4, stable=True) == Restart(0.1, 1, reset=True, count_failure=True)


def test_jitter_is_drawn_once_and_only_when_it_applies():
    draws = []

    def rand():
        draws.append(1)
        return 0.0

    jittery = attrs.evolve(POLICY, jitter_ratio=0.5)
    assert decide(child_policy=jittery, rand=rand).delay == pytest.approx(0.05)
    assert len(draws) == 1
    decide(rand=rand)  # no jitter configured
    decide(CRASH, RestartPolicy.TEMPORARY, child_policy=jittery, rand=rand)  # no restart
    assert len(draws) == 1


def test_a_normal_exit_that_restarts_is_not_a_supervisor_failure():
    assert decide(CLEAN, recent_failures=99) == Restart(0.1, 1, reset=False, count_failure=False)


def test_the_child_restart_limit_escalates_at_child_scope():
    assert isinstance(decide(recent_restarts=2), Restart)  # the third restart in the window is fine
    decision = decide(recent_restarts=3, stable=True)
    assert decision == Escalate(
        "child", 3, 10_000,
        note="restart intensity exceeded (3 in 10000 ms): escalate",
        reason="/root/w restarted more than 3 times in 10000 ms",
        reset=True, count_failure=False,
    )


def test_the_supervisor_failure_limit_escalates_at_supervisor_scope():
    assert isinstance(decide(recent_failures=4), Restart)
    decision = decide(recent_failures=5, supervisor_path="/root/inner")
    assert decision == Escalate(
        "supervisor", 5, 20_000,
        note="supervisor failure limit exceeded: escalate",
        reason="/root/inner saw more than 5 failures in 20000 ms",
        reset=False, count_failure=True,
    )


def test_the_child_limit_is_checked_before_the_supervisor_limit():
    assert decide(recent_restarts=3, recent_failures=5).scope == "child"


def test_a_run_is_stable_after_stable_after_ms():
    assert ran_stably(10.0, 15.0, 5000)
    assert not ran_stably(10.0, 14.999, 5000)
    assert not ran_stably(None, 100.0, 0)


@attrs.define(eq=False)
class Member:
    name: str
    phase: Phase


def siblings(*phases: Phase) -> list[Member]:
    return [Member(f"c{i}", p) for i, p in enumerate(phases)]


def test_one_for_one_restarts_the_failed_child_alone_without_looking_at_siblings():
    class Untouchable:
        def __iter__(self):
            raise AssertionError("one_for_one must not read the siblings")

    failed = Member("x", Phase.FAILED)
    assert restart_group(Strategy.ONE_FOR_ONE, Untouchable(), failed) == [failed]


def test_one_for_all_takes_the_siblings_that_run_stop_wait_or_restart_in_declaration_order():
    members = siblings(Phase.RUNNING, Phase.PAUSED, Phase.FAILED, Phase.STARTING, Phase.COMPLETED,
                       Phase.STOPPING, Phase.PENDING_RESTART, Phase.RESTARTING, Phase.QUARANTINED,
                       Phase.STOPPED)
    failed = members[2]
    group = restart_group(Strategy.ONE_FOR_ALL, members, failed)
    assert [m.name for m in group] == ["c0", "c2", "c3", "c5", "c6", "c7"]


def test_rest_for_one_takes_only_the_siblings_declared_after_the_failed_one():
    members = siblings(Phase.RUNNING, Phase.FAILED, Phase.RUNNING, Phase.PAUSED, Phase.RUNNING)
    group = restart_group(Strategy.REST_FOR_ONE, members, members[1])
    assert [m.name for m in group] == ["c1", "c2", "c4"]


def test_dependencies_must_be_running_and_ready():
    by_name = {"db": Member("db", Phase.RUNNING), "cache": Member("cache", Phase.RUNNING_UNREADY),
               "queue": Member("queue", Phase.RESTARTING)}
    assert unmet_dependencies(("queue", "db", "cache", "gone"), by_name) == ["queue", "cache"]
    assert unmet_dependencies(("db",), by_name) == []


def test_decision_notes():
    assert waiting_note(["db", "cache"]) == "waiting for db, cache"
    assert restart_note(100, 0, Strategy.ONE_FOR_ONE) == "restart after 100 ms (backoff)"
    assert restart_note(0, 2, Strategy.ONE_FOR_ALL) == (
        "restart after 0 ms (backoff) with 2 sibling(s) (one_for_all)")
    assert group_note("/root/a", Strategy.REST_FOR_ONE) == "restart with /root/a (rest_for_one)"
