"""Strategies, restart policies, backoff and intensity, on a fake clock."""

from __future__ import annotations

import pytest

from supervisor import ChildKind, ChildSpec, Policy, RestartPolicy, Strategy, SupervisorSpec
from supervisor.testing import ManualTask, TreeHarness

FAST = Policy(initial_backoff_ms=100, max_backoff_ms=1000, jitter_ratio=0.0)


def tree(strategy: Strategy, *names: str, policy: Policy = FAST, **child_kwargs: object):
    tasks = {name: ManualTask() for name in names}
    spec = SupervisorSpec(
        strategy=strategy,
        policy=policy,
        children=[ChildSpec(n, ChildKind.TASK, factory=tasks[n], **child_kwargs) for n in names],
    )
    return TreeHarness(spec).start(), tasks


def test_children_start_in_declaration_order():
    harness, _ = tree(Strategy.ONE_FOR_ONE, "a", "b", "c")
    started = [e.target_path for e in harness.events("child_started")]
    assert started == ["/root/a", "/root/b", "/root/c"]
    assert all(harness.lifecycle(f"/root/{n}") == "running" for n in "abc")


def test_one_for_one_restarts_only_the_failed_child():
    harness, tasks = tree(Strategy.ONE_FOR_ONE, "a", "b", "c")
    harness.crash("/root/b")
    assert harness.lifecycle("/root/b") == "restarting"
    assert harness.lifecycle("/root/a") == harness.lifecycle("/root/c") == "running"
    harness.advance(0.1)
    assert harness.lifecycle("/root/b") == "running"
    assert [len(tasks[n].runs) for n in "abc"] == [1, 2, 1]
    assert harness.row("/root/b")["restart_count"] == 1
    assert harness.row("/root/b")["last_failure"] == "crashed by test"


def test_one_for_all_restarts_every_sibling_after_stopping_them_in_reverse():
    harness, tasks = tree(Strategy.ONE_FOR_ALL, "a", "b", "c")
    harness.crash("/root/b")
    harness.advance(0.1)
    assert [len(tasks[n].runs) for n in "abc"] == [2, 2, 2]
    stops = [e.target_path for e in harness.events("child_exited")][1:]
    assert stops == []  # siblings stopped by the strategy are not reported as exits
    restarted = [e.target_path for e in harness.events("child_restarted")]
    assert restarted == ["/root/a", "/root/b", "/root/c"]
    assert tasks["c"].runs[0].ended and tasks["a"].runs[0].ended
    # all events of the incident share the failure's correlation id
    incident = harness.events("child_failed")[0].correlation_id
    assert {e.correlation_id for e in harness.events("child_restarted")} == {incident}


def test_rest_for_one_restarts_the_failed_child_and_those_declared_after_it():
    harness, tasks = tree(Strategy.REST_FOR_ONE, "a", "b", "c")
    harness.crash("/root/b")
    harness.advance(0.1)
    assert [len(tasks[n].runs) for n in "abc"] == [1, 2, 2]


@pytest.mark.parametrize(
    "policy, normal, restarted, final",
    [
        (RestartPolicy.PERMANENT, True, True, "running"),
        (RestartPolicy.PERMANENT, False, True, "running"),
        (RestartPolicy.TRANSIENT, True, False, "completed"),
        (RestartPolicy.TRANSIENT, False, True, "running"),
        (RestartPolicy.TEMPORARY, True, False, "completed"),
        (RestartPolicy.TEMPORARY, False, False, "failed"),
    ],
)
def test_restart_policies(policy, normal, restarted, final):
    harness, tasks = tree(Strategy.ONE_FOR_ONE, "w", restart_policy=policy)
    run = tasks["w"].current
    run.finish() if normal else run.fail(ValueError("bad"))
    harness.advance(1)
    assert harness.lifecycle("/root/w") == final
    assert len(tasks["w"].runs) == (2 if restarted else 1)
    if not restarted:
        assert harness.row("/root/w")["last_policy_decision"] == f"not restarted ({policy.value})"


def test_backoff_doubles_up_to_the_cap_and_resets_after_a_stable_run():
    policy = Policy(initial_backoff_ms=100, max_backoff_ms=400, jitter_ratio=0.0,
                    child_restart_limit=100, supervisor_failure_limit=100, stable_after_ms=5000)
    harness, tasks = tree(Strategy.ONE_FOR_ONE, "w", policy=policy)
    delays = []
    for _ in range(5):
        harness.crash("/root/w")
        delays.append(harness.events("backoff_scheduled")[-1].payload["delay_ms"])
        harness.advance(1)
    assert delays == [100, 200, 400, 400, 400]
    harness.advance(6)  # a stable run
    harness.crash("/root/w")
    assert harness.events("backoff_scheduled")[-1].payload["delay_ms"] == 100
    assert harness.row("/root/w")["last_policy_decision"] == "restart after 100 ms (backoff)"


def test_jitter_stays_within_the_ratio():
    policy = Policy(initial_backoff_ms=1000, max_backoff_ms=1000, jitter_ratio=0.2,
                    child_restart_limit=100, supervisor_failure_limit=100)
    harness, _ = tree(Strategy.ONE_FOR_ONE, "w", policy=policy)
    delays = set()
    for _ in range(20):
        harness.crash("/root/w")
        delays.add(harness.events("backoff_scheduled")[-1].payload["delay_ms"])
        harness.advance(2)
    assert all(800 <= d <= 1200 for d in delays)
    assert len(delays) > 1


def test_child_restart_intensity_escalates_and_the_root_shuts_the_tree_down():
    policy = Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0.0,
                    child_restart_limit=3, child_restart_window_ms=10_000)
    harness, tasks = tree(Strategy.ONE_FOR_ONE, "bad", "good", policy=policy)
    for _ in range(3):
        harness.crash("/root/bad")
        harness.advance(0.01)
    assert harness.lifecycle("/root/bad") == "running"
    harness.crash("/root/bad")
    harness.advance(10)
    assert harness.events("restart_intensity_exceeded")[0].payload["scope"] == "child"
    escalated = harness.events("supervisor_escalated")
    assert escalated and escalated[0].target_path == "/root"
    assert "restarted more than 3 times" in escalated[0].payload["reason"]
    assert harness.supervisor.status == "stopped"
    assert harness.lifecycle("/root/good") == "stopped"
    assert harness.events("tree_stopped")[0].payload["reason"].startswith("escalated:")


def test_restarts_outside_the_window_do_not_count():
    policy = Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0.0,
                    child_restart_limit=2, child_restart_window_ms=1000)
    harness, _ = tree(Strategy.ONE_FOR_ONE, "w", policy=policy)
    for _ in range(6):
        harness.crash("/root/w")
        harness.advance(0.6)
    assert harness.events("supervisor_escalated") == []
    assert harness.lifecycle("/root/w") == "running"


def test_supervisor_wide_failure_limit_escalates():
    policy = Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0.0,
                    child_restart_limit=100, supervisor_failure_limit=4,
                    supervisor_failure_window_ms=10_000)
    harness, _ = tree(Strategy.ONE_FOR_ONE, "a", "b", "c", policy=policy)
    for name in "abcab":
        harness.crash(f"/root/{name}")
        harness.advance(0.01)
    exceeded = harness.events("restart_intensity_exceeded")
    assert exceeded[0].payload == {"scope": "supervisor", "limit": 4, "window_ms": 10_000}
    assert harness.supervisor.status == "stopped"


def test_nested_supervisor_escalation_restarts_the_subtree_under_the_parent():
    inner_policy = Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0.0,
                          child_restart_limit=1, child_restart_window_ms=10_000)
    leaf, sibling = ManualTask(), ManualTask()
    spec = SupervisorSpec(
        policy=FAST,
        children=[
            ChildSpec("keep", ChildKind.TASK, factory=sibling),
            ChildSpec(
                "inner",
                ChildKind.SUPERVISOR,
                strategy=Strategy.ONE_FOR_ONE,
                policy=inner_policy,
                children=[ChildSpec("leaf", ChildKind.TASK, factory=leaf)],
            ),
        ],
    )
    harness = TreeHarness(spec).start()
    assert harness.lifecycle("/root/inner/leaf") == "running"
    harness.crash("/root/inner/leaf")
    harness.advance(0.01)
    harness.crash("/root/inner/leaf")
    harness.advance(0.01)
    escalated = harness.events("supervisor_escalated")
    assert [e.target_path for e in escalated] == ["/root/inner"]
    failed = harness.events("child_failed", path="/root/inner")
    assert failed and failed[0].payload["reason"].startswith("escalated:")
    harness.advance(1)
    assert harness.lifecycle("/root/inner") == "running"
    assert harness.lifecycle("/root/inner/leaf") == "running"
    assert harness.row("/root/inner")["restart_count"] == 1
    assert len(sibling.runs) == 1  # one_for_one at the root: the sibling is untouched
    assert harness.supervisor.status == "running"


def test_a_group_restart_leaves_a_child_waiting_for_its_dependencies_waiting():
    db, api, other = ManualTask(ready=False), ManualTask(), ManualTask()
    spec = SupervisorSpec(strategy=Strategy.ONE_FOR_ALL, policy=FAST, children=[
        ChildSpec("db", ChildKind.TASK, factory=db, wait_ready=True),
        ChildSpec("api", ChildKind.TASK, factory=api, dependencies=["db"]),
        ChildSpec("other", ChildKind.TASK, factory=other),
    ])
    harness = TreeHarness(spec).start()
    assert harness.row("/root/api")["last_policy_decision"] == "waiting for db"
    harness.crash("/root/other")
    harness.advance(1)
    assert [len(t.runs) for t in (db, api, other)] == [2, 0, 2]
    assert harness.lifecycle("/root/api") == "stopped"
    assert harness.row("/root/api")["last_policy_decision"] == "waiting for db"
    db.current.ctx.mark_ready()
    assert harness.lifecycle("/root/api") == "running" and len(api.runs) == 1
    assert harness.event_types("/root/api") == ["child_started", "child_running", "child_ready"]
