"""reload_config on a running tree: what it starts, stops, restarts, and what it leaves alone."""

from __future__ import annotations

import sys

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor

from supervisor import Supervisor
from supervisor.config.target import parse_target_config
from supervisor.testing import TreeHarness
from supervisor.tree.descendants import alive
from supervisor.tree.reconfigure import Reloaded
from tests.waiting import eventually

W = "supervisor.demo:steady_worker"
BASE = f"""
policy: {{initial_backoff_ms: 10, max_backoff_ms: 100, jitter_ratio: 0}}
children:
  - {{name: keep, kind: task, callable: '{W}'}}
  - {{name: gone, kind: task, callable: '{W}'}}
  - {{name: edit, kind: task, callable: '{W}'}}
  - {{name: label, kind: task, callable: '{W}', tags: [old]}}
  - name: sub
    kind: supervisor
    children:
      - {{name: inner, kind: task, callable: '{W}'}}
"""
NEW = f"""
policy: {{initial_backoff_ms: 10, max_backoff_ms: 100, jitter_ratio: 0}}
children:
  - {{name: keep, kind: task, callable: '{W}'}}
  - {{name: edit, kind: task, callable: '{W}', wait_ready: true}}
  - {{name: label, kind: task, callable: '{W}', tags: [new]}}
  - name: sub
    kind: supervisor
    children:
      - {{name: inner, kind: task, callable: '{W}'}}
      - {{name: inner2, kind: task, callable: '{W}'}}
  - {{name: fresh, kind: task, callable: '{W}', dependencies: [keep]}}
"""


@pytest.fixture
def harness():
    h = TreeHarness.from_yaml(BASE).start()
    h.advance(0.1)
    yield h
    if h.supervisor.status == "running":
        h.stop()


def snapshot(h: TreeHarness, *paths: str) -> dict[str, tuple]:
    out = {}
    for path in paths:
        child = h.supervisor.child(path)
        out[path] = (child.generation, child.runner, child.restart_count, child.attempt)
    return out


def correlated(h: TreeHarness, command_id: str, path: str | None = None) -> list[str]:
    return [e.event_type for e in h.supervisor.events
            if e.correlation_id == command_id and (path is None or e.target_path == path)]


def test_reload_adds_removes_restarts_changed_and_leaves_unchanged_children_alone(harness):
    h = harness
    before = snapshot(h, "/root/keep", "/root/label", "/root/sub", "/root/sub/inner", "/root/edit")
    edit_runner = h.supervisor.child("/root/edit").runner
    outcome = h.reload(NEW, command_id="reload-1", reason="new release")
    assert outcome.status == "completed", outcome.error
    h.advance(0.1)
    diff = outcome.report
    assert diff["added"] == ["/root/sub/inner2", "/root/fresh"]
    assert diff["removed"] == ["/root/gone"]
    assert diff["changed"] == [
        {"path": "/root/edit", "keys": ["wait_ready"], "restart": True},
        {"path": "/root/label", "keys": ["tags"], "restart": False},
    ]
    assert diff["unchanged"] == 3  # keep, sub, sub/inner
    # unchanged: same runner (the running generation), same generation, no events of the reload
    after = snapshot(h, "/root/keep", "/root/sub", "/root/sub/inner")
    for path in ("/root/keep", "/root/sub", "/root/sub/inner"):
        assert after[path] == before[path], path
        assert correlated(h, "reload-1", path) == [], path
    # a live change: same runner and generation, the new spec, one event
    label = h.supervisor.child("/root/label")
    assert (label.generation, label.runner) == before["/root/label"][:2]
    assert label.spec.tags == ("new",)
    assert correlated(h, "reload-1", "/root/label") == ["child_reconfigured"]
    assert h.events("child_reconfigured", "/root/label")[0].payload == {"keys": ["tags"], "restart": False}
    # the changed child restarted with its new spec: next generation, a new runner
    edit = h.supervisor.child("/root/edit")
    assert edit.spec.wait_ready is True
    assert edit.generation == before["/root/edit"][0] + 1 and edit.runner is not edit_runner
    assert edit.restart_count == before["/root/edit"][2] + 1
    assert h.lifecycle("/root/edit") == "running"
    assert edit.last_policy_decision == "restarted by config reload"
    assert "child_reconfigured" in correlated(h, "reload-1", "/root/edit")
    assert "child_started" in correlated(h, "reload-1", "/root/edit")
    # removed: stopped (staged) and gone
    with pytest.raises(Exception):
        h.supervisor.child("/root/gone")
    gone = correlated(h, "reload-1", "/root/gone")
    assert "shutdown_phase_changed" in gone and gone[-1] == "child_removed"
    # added: adopted and running, first generation
    for path in ("/root/fresh", "/root/sub/inner2"):
        assert h.lifecycle(path) == "running" and h.supervisor.child(path).generation == 1
        assert correlated(h, "reload-1", path)[:2] == ["child_added", "child_started"]
    # declaration order follows the file
    order = h.supervisor.state()["topology"]["declaration_order"]
    assert order.index("/root/label") < order.index("/root/sub") < order.index("/root/fresh")
    # the tree-wide event closes the reload; the spec is the new one
    done = h.events("config_reloaded")[0]
    assert done.correlation_id == "reload-1"
    assert done.payload["added"] == 2 and done.payload["restarted"] == 1
    assert h.supervisor.spec.children[-1].name == "fresh"
    assert h.supervisor.tree.config_version.endswith("-reload-1")
    # reloading the same file again changes nothing
    again = h.reload(command_id="reload-2")
    assert again.report["changed"] == [] and again.report["added"] == []
    assert again.report["unchanged"] == 7
    assert correlated(h, "reload-2") == ["command_received", "config_reloaded", "command_completed"]


def test_an_invalid_file_changes_nothing_and_names_the_key(harness):
    h = harness
    broken = BASE.replace("name: edit, kind: task", "name: edit, kind: taks")
    rows, generation = h.supervisor.rows(), h.supervisor.tree.state_generation
    spec = h.supervisor.spec
    outcome = h.reload(broken, command_id="bad-1")
    assert outcome.status == "failed"
    assert outcome.error.code == "invalid_config"
    assert "children[2].kind" in outcome.error.message
    assert "nothing was changed" in outcome.error.message
    assert h.supervisor.rows() == rows and h.supervisor.tree.state_generation == generation
    assert h.supervisor.spec is spec
    assert correlated(h, "bad-1") == ["command_received", "command_completed"]
    # not YAML at all, and a cycle, are refused the same way
    assert h.reload("children: [").error.code == "invalid_config"
    cyclic = (f"children:\n  - {{name: a, kind: task, callable: '{W}', dependencies: [b]}}\n"
              f"  - {{name: b, kind: task, callable: '{W}', dependencies: [a]}}\n")
    refused = h.reload(cyclic)
    assert refused.error.code == "invalid_config" and "cycle" in refused.error.message
    assert h.supervisor.rows() == rows


def test_a_dry_run_reports_the_diff_and_changes_nothing(harness):
    h = harness
    rows, spec = h.supervisor.rows(), h.supervisor.spec
    outcome = h.reload(NEW, dry_run=True, command_id="dry-1")
    assert outcome.status == "completed"
    assert outcome.report["removed"] == ["/root/gone"]
    assert h.supervisor.rows() == rows and h.supervisor.spec is spec
    assert correlated(h, "dry-1") == ["command_received", "command_completed"]
    # other commands have no dry run: refused, not run for real
    refused = h.command("restart_child", "/root/keep", dry_run=True)
    assert refused.status == "rejected" and refused.error.code == "invalid_command_params"
    assert h.supervisor.child("/root/keep").generation == 1


def test_policy_backoff_and_shutdown_changes_restart_nobody(harness):
    h = harness
    before = snapshot(h, "/root/keep", "/root/edit", "/root/sub/inner")
    changed = BASE.replace(
        "policy: {initial_backoff_ms: 10, max_backoff_ms: 100, jitter_ratio: 0}",
        "policy: {initial_backoff_ms: 20, max_backoff_ms: 400, jitter_ratio: 0, child_restart_limit: 3}\n"
        "shutdown: {graceful_timeout_ms: 900}",
    ).replace("name: edit, kind: task, callable: '" + W + "'",
              "name: edit, kind: task, callable: '" + W + "', policy: {max_backoff_ms: 50}")
    outcome = h.reload(changed, command_id="pol-1")
    assert outcome.status == "completed", outcome.error
    assert outcome.report["supervisors"] == [
        {"path": "/root", "keys": ["policy.child_restart_limit", "policy.initial_backoff_ms",
                                   "policy.max_backoff_ms", "shutdown.graceful_timeout_ms"]}]
    assert outcome.report["changed"] == [
        {"path": "/root/edit", "keys": ["policy"], "restart": False}]  # it had inherited one
    assert snapshot(h, "/root/keep", "/root/edit", "/root/sub/inner") == before
    keep, inner, edit = (h.supervisor.child(p) for p in ("/root/keep", "/root/sub/inner", "/root/edit"))
    assert keep.policy.max_backoff_ms == 400 and keep.intensity.limit == 3
    assert inner.policy.initial_backoff_ms == 20 and inner.shutdown.graceful_timeout_ms == 900
    assert edit.policy.max_backoff_ms == 50 and edit.policy.initial_backoff_ms == 20
    assert h.supervisor.root.policy.max_backoff_ms == 400


def test_the_next_failure_uses_the_reloaded_backoff():
    text = ("policy: {initial_backoff_ms: %d, max_backoff_ms: 1000, jitter_ratio: 0}\n"
            "children: [{name: flaky, kind: task, callable: 'supervisor.demo:flaky_worker'}]\n")
    h = TreeHarness.from_yaml(text % 10).start()
    h.advance(2)
    assert h.events("backoff_scheduled")[-1].payload["delay_ms"] == 10
    generation = h.supervisor.child("/root/flaky").generation
    assert h.reload(text % 300).status == "completed"
    assert h.supervisor.child("/root/flaky").generation == generation
    count = len(h.events("backoff_scheduled"))
    h.advance(2)
    assert len(h.events("backoff_scheduled")) > count
    assert h.events("backoff_scheduled")[-1].payload["delay_ms"] >= 300
    h.stop()


def test_children_added_or_removed_by_commands_are_reported_not_undone():
    allow = "ipc: {add_child: {allowed_callables: [supervisor.demo]}}\n"
    h = TreeHarness.from_yaml(BASE + allow).start()
    assert h.command("add_child", "/root", child_manifest=f"{{name: extra, kind: task, callable: '{W}'}}").accepted
    assert h.command("remove_child", "/root/gone").accepted
    extra = snapshot(h, "/root/extra")
    outcome = h.reload(command_id="same-1")
    assert outcome.status == "completed"
    assert outcome.report["added_at_run_time"] == ["/root/extra"]
    assert outcome.report["removed_at_run_time"] == ["/root/gone"]
    assert outcome.report["added"] == [] and outcome.report["removed"] == []
    assert snapshot(h, "/root/extra") == extra
    with pytest.raises(Exception):
        h.supervisor.child("/root/gone")


def test_a_new_hold_stops_the_child_into_it_and_dropping_it_starts_the_child(harness):
    h = harness
    held = BASE.replace("name: edit, kind: task,", "name: edit, kind: task, hold: paused,")
    assert h.reload(held).status == "completed"
    assert h.lifecycle("/root/edit") == "paused"
    assert h.supervisor.child("/root/edit").message == "paused by configuration"
    assert h.reload(BASE).status == "completed"
    h.advance(0.1)
    assert h.lifecycle("/root/edit") == "running"


def test_a_paused_child_whose_spec_changes_stays_paused_with_the_new_spec(harness):
    h = harness
    assert h.command("pause_child", "/root/edit").accepted
    assert h.reload(NEW).status == "completed"
    edit = h.supervisor.child("/root/edit")
    assert h.lifecycle("/root/edit") == "paused" and edit.spec.wait_ready is True
    assert h.command("resume_child", "/root/edit").accepted
    assert h.lifecycle("/root/edit") == "running"


def test_a_tree_without_a_config_file_refuses_reload():
    from supervisor import ChildKind, ChildSpec, SupervisorSpec
    from supervisor.demo import steady_worker

    h = TreeHarness(SupervisorSpec(children=[ChildSpec("a", ChildKind.TASK, factory=steady_worker)])).start()
    outcome = h.reload()
    assert outcome.status == "failed" and outcome.error.code == "invalid_config"
    h.stop()


PY = sys.executable
SLEEP = [PY, "-c", "import time; time.sleep(60)"]


def _process_yaml(*children: tuple[str, list[str]]) -> str:
    lines = ["policy: {initial_backoff_ms: 0, max_backoff_ms: 0, jitter_ratio: 0}",
             "shutdown: {graceful_timeout_ms: 2000}", "children:"]
    for name, command in children:
        lines.append(f"  - {{name: {name}, kind: process, command: {command!r}}}")
    return "\n".join(lines) + "\n"


@pytest_twisted.ensureDeferred
async def test_unchanged_process_children_keep_their_pid_through_a_reload(tmp_path):
    text = {"yaml": _process_yaml(("keep", SLEEP), ("edit", SLEEP), ("gone", SLEEP))}

    def load() -> Reloaded:
        config = parse_target_config(yaml.safe_load(text["yaml"]), str(tmp_path))
        return Reloaded(config.spec, config.manifest_parser())

    sup = Supervisor(load().spec, reactor=reactor, clock=reactor, config_loader=load)
    sup.startService()
    try:
        for name in ("keep", "edit", "gone"):
            await eventually(lambda: sup.child(f"/root/{name}").state.value == "running", what=name)
        keep_pid = sup.child("/root/keep").runner.pid
        edit_pid = sup.child("/root/edit").runner.pid
        gone_pid = sup.child("/root/gone").runner.pid
        text["yaml"] = _process_yaml(("keep", SLEEP), ("edit", SLEEP + ["changed"]), ("fresh", SLEEP))
        outcome = await sup.reload(requested_by="test", reason="update")
        assert outcome.status == "completed", outcome.error
        await eventually(lambda: sup.child("/root/fresh").state.value == "running", what="fresh")
        await eventually(lambda: sup.child("/root/edit").state.value == "running", what="edit")
        keep = sup.child("/root/keep")
        assert keep.runner.pid == keep_pid and keep.generation == 1
        edit = sup.child("/root/edit")
        assert edit.runner.pid != edit_pid and edit.generation == 2
        assert list(edit.spec.command)[-1] == "changed"
        await eventually(lambda: not alive(gone_pid) and not alive(edit_pid), what="old pids gone")
        assert alive(keep_pid)
    finally:
        await sup.stopService()

