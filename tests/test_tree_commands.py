"""The runtime command API: each command, its events, and the refusals."""

from __future__ import annotations

import pytest
from twisted.internet import defer

from supervisor import ChildKind, ChildSpec, Policy, SupervisorSpec
from supervisor.testing import ManualTask, TreeHarness

FAST = Policy(initial_backoff_ms=10, max_backoff_ms=100, jitter_ratio=0.0)


@pytest.fixture
def harness():
    tasks = {n: ManualTask() for n in ("a", "b")}
    spec = SupervisorSpec(
        policy=FAST,
        children=[
            ChildSpec("a", ChildKind.TASK, factory=tasks["a"]),
            ChildSpec("b", ChildKind.TASK, factory=tasks["b"]),
            ChildSpec("sub", ChildKind.SUPERVISOR, children=[]),
        ],
    )
    # exercise the YAML path for the manifest parser, with what its manifests may start
    h = TreeHarness.from_yaml("ipc: {add_child: {allowed_callables: [supervisor.demo, sys]}}")
    h = TreeHarness(spec, manifest_parser=h.supervisor._manifest_parser).start()
    h.tasks = tasks
    return h


def test_pause_stops_the_child_holds_it_and_records_who_and_why(harness):
    outcome = harness.command("pause_child", "/root/a", requested_by="CN=op", reason="maintenance",
                              command_id="cmd-1")
    assert outcome.status == "completed" and outcome.accepted and outcome.error is None
    assert harness.lifecycle("/root/a") == "paused"
    assert harness.tasks["a"].current.ended
    paused = harness.events("child_paused")[0]
    assert paused.payload == {"requested_by": "CN=op", "reason": "maintenance"}
    assert paused.correlation_id == "cmd-1"
    types = [e.event_type for e in harness.supervisor.events if e.correlation_id == "cmd-1"]
    assert types[0] == "command_received" and types[-1] == "command_completed"
    # a paused child is not restarted by anything
    harness.advance(10)
    assert harness.lifecycle("/root/a") == "paused" and len(harness.tasks["a"].runs) == 1


def test_resume_starts_a_held_child_again(harness):
    harness.command("quarantine_child", "/root/a")
    assert harness.lifecycle("/root/a") == "quarantined"
    assert harness.events("child_quarantined")
    outcome = harness.command("resume_child", "/root/a")
    assert outcome.status == "completed"
    assert harness.lifecycle("/root/a") == "running"
    assert len(harness.tasks["a"].runs) == 2
    assert harness.events("child_resumed")


def test_paused_child_can_be_quarantined_but_not_paused_twice(harness):
    harness.command("pause_child", "/root/a")
    again = harness.command("pause_child", "/root/a")
    assert again.status == "failed" and not again.accepted
    assert again.error.code == "illegal_transition"
    assert again.error.stage == "command_execute"
    assert "paused" in again.error.message
    assert harness.command("quarantine_child", "/root/a").status == "completed"


@pytest.mark.parametrize("command", ["resume_child"])
def test_resuming_a_running_child_is_an_illegal_transition(harness, command):
    outcome = harness.command(command, "/root/b")
    assert outcome.error.code == "illegal_transition"
    assert harness.lifecycle("/root/b") == "running"


def test_restart_command_stops_and_starts_immediately(harness):
    outcome = harness.command("restart_child", "/root/b")
    assert outcome.status == "completed"
    assert len(harness.tasks["b"].runs) == 2
    assert harness.row("/root/b")["restart_count"] == 1
    assert harness.row("/root/b")["generation"] == 2
    assert harness.lifecycle("/root/b") == "running"


def test_restarting_a_paused_child_is_refused(harness):
    harness.command("pause_child", "/root/b")
    assert harness.command("restart_child", "/root/b").error.code == "illegal_transition"


def test_unknown_child_and_blank_reason_and_requested_by(harness):
    unknown = harness.command("pause_child", "/root/nope")
    assert (unknown.status, unknown.error.code) == ("failed", "unknown_child")
    assert unknown.error.message == "no child at /root/nope"
    blank = harness.command("pause_child", "/root/a", reason="  ")
    assert (blank.status, blank.error.code) == ("rejected", "empty_reason")
    nobody = harness.command("pause_child", "/root/a", requested_by="")
    assert (nobody.status, nobody.error.code) == ("rejected", "validation_failed")
    assert harness.lifecycle("/root/a") == "running"


def test_remove_stops_and_forgets_the_child(harness):
    outcome = harness.command("remove_child", "/root/a")
    assert outcome.status == "completed"
    assert "/root/a" not in [n["path"] for n in harness.supervisor.state()["topology"]["nodes"]]
    assert harness.events("child_removed")[0].target_path == "/root/a"
    assert harness.command("pause_child", "/root/a").error.code == "unknown_child"


def test_add_child_from_a_yaml_manifest_under_a_nested_supervisor(harness):
    manifest = "{name: extra, kind: task, callable: 'supervisor.demo:steady_worker', tags: [x]}"
    outcome = harness.command("add_child", "/root/sub", child_manifest=manifest)
    assert outcome.status == "completed", outcome.error
    assert harness.lifecycle("/root/sub/extra") == "running"
    assert harness.events("child_added")[0].target_path == "/root/sub/extra"
    dup = harness.command("add_child", "/root/sub", child_manifest=manifest)
    assert dup.error.code == "child_exists"
    bad = harness.command("add_child", None, child_manifest="{name: x, kind: process}")
    assert bad.error.code == "invalid_manifest"
    assert "command" in bad.error.message
    harness.stop()


def test_shutdown_tree_stops_everything_and_then_refuses_commands(harness):
    outcome = harness.command("shutdown_tree", None, requested_by="CN=op", reason="bye")
    assert outcome.status == "completed"
    assert [r["child_path"] for r in outcome.report["children"]] == ["/root/sub", "/root/b", "/root/a"]
    assert harness.supervisor.status == "stopped"
    late = harness.command("pause_child", "/root/a")
    assert late.error.code == "tree_shutting_down"


def test_commands_are_audited_only_when_audit_is_enabled():
    from supervisor import Observability

    spec = SupervisorSpec(
        observability=Observability(audit_enabled=False),
        children=[ChildSpec("a", ChildKind.TASK, factory=ManualTask())],
    )
    harness = TreeHarness(spec).start()
    harness.command("pause_child", "/root/a")
    assert harness.events("command_received") == []
    assert harness.events("child_paused")


def test_a_refused_command_emits_nothing_about_the_child_and_leaves_its_correlation(harness):
    before = harness.supervisor.child("/root/b").correlation
    outcome = harness.command("resume_child", "/root/b", command_id="cmd-r")
    assert outcome.error.code == "illegal_transition"
    assert [e.event_type for e in harness.supervisor.events if e.correlation_id == "cmd-r"] == [
        "command_received", "command_completed"]
    assert harness.supervisor.child("/root/b").correlation == before


def test_a_pause_overtaken_by_a_group_restart_fails_instead_of_reporting_a_pause():
    from supervisor import ShutdownPolicy, Strategy

    slow = ManualTask(cooperative=False)
    spec = SupervisorSpec(
        strategy=Strategy.ONE_FOR_ALL, policy=FAST,
        shutdown=ShutdownPolicy(graceful_timeout_ms=1000, abort_wait_ms=100),
        children=[ChildSpec("slow", ChildKind.TASK, factory=slow),
                  ChildSpec("other", ChildKind.TASK, factory=ManualTask())],
    )
    harness = TreeHarness(spec).start()
    pausing = harness.supervisor.command("pause_child", "/root/slow", requested_by="op", reason="r")
    harness.advance(0.2)
    harness.crash("/root/other")  # the group restart takes over the stop of /root/slow
    outcome = harness.resolve(pausing)
    assert outcome.error.code == "illegal_transition"
    assert outcome.error.message == "/root/slow cannot go from restarting to held"
    harness.advance(1)
    assert harness.lifecycle("/root/slow") == "running" and len(slow.runs) == 2
    assert harness.events("child_paused") == []


def test_a_child_added_with_a_hold_stays_held(harness):
    manifest = "{name: held, kind: task, callable: 'supervisor.demo:steady_worker', hold: quarantined}"
    outcome = harness.command("add_child", None, child_manifest=manifest)
    assert outcome.status == "completed", outcome.error
    assert harness.lifecycle("/root/held") == "quarantined"
    assert harness.events("child_started", path="/root/held") == []
    assert harness.command("resume_child", "/root/held").status == "completed"
    assert harness.lifecycle("/root/held") == "running"



@pytest.mark.parametrize("kind", ["task", "service"])
def test_a_factory_that_raises_systemexit_fails_that_child_only_and_add_child_says_so(harness, kind):
    manifest = f"{{name: quits, kind: {kind}, callable: 'sys:exit', restart_policy: temporary}}"
    outcome = harness.command("add_child", None, child_manifest=manifest, command_id="cmd-exit")
    assert outcome.status == "completed", outcome.error
    assert harness.lifecycle("/root/quits") == "failed"
    assert "SystemExit" in harness.row("/root/quits")["last_failure"]
    completed = [e for e in harness.events("command_completed") if e.correlation_id == "cmd-exit"]
    assert completed[0].payload["status"] == "completed"
    assert harness.lifecycle("/root/a") == "running" and harness.lifecycle("/root/b") == "running"


def test_a_coroutine_that_raises_systemexit_later_fails_the_child_and_it_restarts(harness):
    async def quits_later(ctx):
        await defer.succeed(None)
        raise SystemExit(3)

    outcome = harness.command("add_child", None, child_manifest=ChildSpec("later", ChildKind.TASK,
                                                                          factory=quits_later))
    assert outcome.status == "completed", outcome.error
    assert "SystemExit: 3" in harness.row("/root/later")["last_failure"]
    assert harness.lifecycle("/root/later") in ("restarting", "failed")
