"""The reload diff: pure comparisons of the last loaded spec, the running tree and a new spec."""

from __future__ import annotations

import attrs
import pytest

from supervisor import ChildKind, ChildSpec, Policy, SupervisorSpec
from supervisor.tree.specdiff import (
    LIVE_KEYS,
    ChildChange,
    LevelChange,
    ReloadConflict,
    Running,
    TreeDiff,
    changed_keys,
    diff_tree,
)


def proc(name: str, *command: str, **kw) -> ChildSpec:
    return ChildSpec(name, ChildKind.PROCESS, command=command or ("sleep", "60"), **kw)


def tree(*children: ChildSpec, **kw) -> SupervisorSpec:
    return SupervisorSpec(children=children, **kw)


def diff(old: SupervisorSpec, new: SupervisorSpec, running=None) -> TreeDiff:
    return diff_tree(old, Running.from_specs(old.children) if running is None else running, new)


def test_identical_specs_make_an_empty_diff_that_counts_every_child():
    spec = tree(proc("a"), proc("b"), ChildSpec("sub", ChildKind.SUPERVISOR, children=[proc("c")]))
    d = diff(spec, spec)
    assert d.empty
    assert d.unchanged == 4
    assert d.to_json() == {
        "added": [], "removed": [], "changed": [], "unchanged": 4, "added_at_run_time": [],
        "removed_at_run_time": [], "supervisors": [], "not_applied": [],
    }


def test_added_removed_changed_and_unchanged_children_are_told_apart():
    old = tree(proc("keep"), proc("gone"), proc("edit", "sleep", "1"))
    new = tree(proc("keep"), proc("edit", "sleep", "2"), proc("fresh"))
    d = diff(old, new)
    assert d.added == ("/root/fresh",)
    assert d.removed == ("/root/gone",)
    assert d.changed == (ChildChange("/root/edit", ("command",), True),)
    assert d.unchanged == 1
    assert d.restarted == ("/root/edit",)
    assert "1 added, 1 removed, 1 changed (1 restarted), 1 unchanged" == d.summary()


def test_policy_and_shutdown_changes_apply_without_a_restart_and_name_the_nested_key():
    old = tree(proc("a", policy=Policy(initial_backoff_ms=100)))
    new = tree(proc("a", policy=Policy(initial_backoff_ms=200)))
    d = diff(old, new)
    assert d.changed == (ChildChange("/root/a", ("policy.initial_backoff_ms",), False),)
    assert d.restarted == ()


def test_root_policy_change_is_a_level_change_and_journal_sizes_are_not_applied():
    from supervisor.tree.spec import Observability

    old = tree(proc("a"))
    new = tree(proc("a"), policy=Policy(max_backoff_ms=9000),
               observability=Observability(event_journal_capacity=512, metrics_enabled=False))
    d = diff(old, new)
    assert d.supervisors == (
        LevelChange("/root", ("policy.max_backoff_ms", "observability.metrics_enabled")),
    )
    assert d.not_applied == ("observability.event_journal_capacity",)
    assert d.unchanged == 1 and not d.changed
    # the resource sampler and the metrics listener are set up at start too
    sampled = attrs.evolve(new, observability=attrs.evolve(
        new.observability, resources=attrs.evolve(new.observability.resources, interval_ms=5000)))
    assert diff(new, sampled).not_applied == ("observability.resources.interval_ms",)


def test_every_spec_field_is_compared_and_unknown_ones_restart():
    # each field of ChildSpec, changed alone, is reported by name; only LIVE_KEYS spare a restart
    base = proc("a")
    samples = {
        "command": ("sleep", "2"), "cwd": "/tmp", "environment": {"X": "1"},
        "stop_signal": "SIGINT", "restart_policy": "transient", "criticality": "critical",
        "tags": ("t",), "display_name": "A", "wait_ready": True, "stale_is_failure": True,
        "hold": "paused", "policy": Policy(child_restart_limit=3),
        "callable_ref": "x:y",
    }
    for name, value in samples.items():
        changed = attrs.evolve(base, **{name: value})
        keys = changed_keys(base, changed)
        assert keys and keys[0].split(".")[0] == name, name
        d = diff(tree(base), tree(changed))
        assert d.changed[0].restart is (name not in LIVE_KEYS), name


def test_nested_levels_are_diffed_child_by_child():
    old = tree(ChildSpec("sub", ChildKind.SUPERVISOR, children=[proc("x"), proc("y")]))
    new = tree(ChildSpec("sub", ChildKind.SUPERVISOR, children=[proc("x"), proc("y", "true"),
                                                                 proc("z")]))
    d = diff(old, new)
    assert d.added == ("/root/sub/z",)
    assert d.changed == (ChildChange("/root/sub/y", ("command",), True),)
    assert d.unchanged == 2  # sub itself and x


def test_a_supervisor_whose_own_restart_keys_change_restarts_whole_and_is_not_descended():
    old = tree(ChildSpec("sub", ChildKind.SUPERVISOR, children=[proc("x")]))
    new = tree(ChildSpec("sub", ChildKind.SUPERVISOR, wait_ready=True, children=[proc("x", "true")]))
    d = diff(old, new)
    assert d.changed == (ChildChange("/root/sub", ("wait_ready",), True),)
    assert d.unchanged == 0


def test_a_kind_change_restarts():
    old = tree(proc("a"))
    new = tree(ChildSpec("a", ChildKind.SUPERVISOR, children=[proc("b")]))
    d = diff(old, new)
    assert d.changed[0].path == "/root/a" and d.changed[0].restart
    assert "kind" in d.changed[0].keys and "command" in d.changed[0].keys


def test_children_added_or_removed_at_run_time_are_reported_not_undone():
    old = tree(proc("a"), proc("b"))
    running = Running.from_specs([proc("a"), proc("extra")])  # b removed, extra added by commands
    d = diff(old, old, running)
    assert d.added_at_run_time == ("/root/extra",)
    assert d.removed_at_run_time == ("/root/b",)
    assert d.added == () and d.removed == ()
    assert d.empty


def test_a_child_removed_at_run_time_comes_back_when_the_file_changes_it():
    old = tree(proc("a"), proc("b"))
    running = Running.from_specs([proc("a")])
    d = diff(old, tree(proc("a"), proc("b", "true")), running)
    assert d.added == ("/root/b",) and d.removed_at_run_time == ()


def test_a_child_the_file_now_names_is_compared_with_what_runs():
    old = tree(proc("a"))
    running = Running.from_specs([proc("a"), proc("extra")])
    assert diff(old, tree(proc("a"), proc("extra")), running).unchanged == 2
    d = diff(old, tree(proc("a"), proc("extra", "true")), running)
    assert d.changed == (ChildChange("/root/extra", ("command",), True),)


def test_a_kept_child_that_depends_on_a_removed_one_is_a_conflict():
    old = tree(proc("a"), proc("b"))
    running = Running.from_specs([proc("a"), proc("b"), proc("extra", dependencies=["b"])])
    with pytest.raises(ReloadConflict, match="extra.*depends on b"):
        diff(old, tree(proc("a")), running)


def test_numprocs_groups_diff_instance_by_instance():
    import yaml

    from supervisor.config.target import parse_target_config

    def spec(count: int, command: str = "60") -> SupervisorSpec:
        text = f"children: [{{name: web, kind: process, command: [sleep, '{command}'], numprocs: {count}}}]"
        return parse_target_config(yaml.safe_load(text), "/tmp").spec

    d = diff(spec(2), spec(3))
    assert d.added == ("/root/web/web_02",) and d.unchanged == 3  # web, web_00, web_01
    d = diff(spec(3), spec(2, "61"))
    assert d.removed == ("/root/web/web_02",)
    assert [c.path for c in d.changed] == ["/root/web/web_00", "/root/web/web_01"]
    assert all(c.keys == ("command",) and c.restart for c in d.changed)
