"""The lifecycle table: every allowed move emits what it says, nothing else moves a child."""

from __future__ import annotations

import ast
import pathlib
import random

import attrs
import pytest
from twisted.internet.task import Clock

from supervisor import ChildKind, ChildSpec, Policy, ShutdownPolicy, SupervisorSpec
from supervisor.tree import lifecycle
from supervisor.tree.context import Tree
from supervisor.tree.lifecycle import (
    EVENT_PAYLOADS,
    HELD,
    IDLE,
    LIVE,
    PENDING,
    STOPPING,
    TABLE,
    IllegalTransition,
    Lifecycle,
    Phase,
    Trigger,
)
from supervisor.tree.model import ChildRuntime, SupervisorNode, fire
from supervisor.tree.policy import IntensityWindow
from supervisor.wire.vocabulary import EVENT_TYPES, LIFECYCLE_STATES

#: A value for every fact an event payload may need.
FACTS = {
    "outcome": "exit status 1", "normal": False, "reason": "why", "delay_ms": 5, "attempt": 2,
    "strategy": "one_for_one", "scope": "child", "limit": 3, "window_ms": 1000,
    "silent_ms": 3000, "requested_by": "CN=op", "kind": "task", "keys": ["tags"], "restart": False,
}


def record(phase: Phase):
    """A child record in ``phase`` under a real tree context, and one stream of what it emits."""
    tree = Tree(SupervisorSpec(), Clock(), Clock(), "t", random.Random(0))
    node = SupervisorNode(tree, "/root", SupervisorSpec().strategy, Policy(), ShutdownPolicy())
    child = ChildRuntime(
        spec=ChildSpec("c", ChildKind.TASK, factory=lambda ctx: None), path="/root/c", node=node,
        policy=Policy(), shutdown=ShutdownPolicy(), intensity=IntensityWindow(1, 1.0), phase=phase,
    )
    node.children["c"] = child
    stream: list[tuple[str, object]] = []
    tree.events.subscribe(lambda e: stream.append(("event", e.event_type)))
    tree.subscribe_state(lambda d: stream.append(("row", d["runtime_state"][0]["lifecycle_state"])))
    return child, stream


@pytest.mark.parametrize("move", list(TABLE.values()), ids=lambda m: f"{m.source.name}-{m.trigger.name}")
def test_every_allowed_move_goes_where_the_table_says_and_emits_its_events_around_the_row(move):
    child, stream = record(move.source)
    fire(child, move.trigger, FACTS)
    assert child.phase is move.target
    row = [("row", move.target.wire.value)] if move.target.wire is not move.source.wire else []
    assert stream == [("event", e) for e in move.before] + row + [("event", e) for e in move.after]
    for event in move.before + move.after:
        emitted = [e for e in child.node.tree.events if e.event_type == event][0]
        assert list(emitted.payload) == [k.removeprefix("child.") for k in EVENT_PAYLOADS[event]]
        assert emitted.target_path == "/root/c" and emitted.child_id == "c"


def test_a_move_that_writes_a_shown_field_publishes_the_row_even_in_the_same_phase():
    child, stream = record(Phase.RUNNING)
    fire(child, Trigger.HEARTBEAT, last_heartbeat=1.0)
    assert stream == []
    fire(child, Trigger.HEARTBEAT, last_heartbeat=2.0, health=lifecycle.Health.HEALTHY)
    assert stream == [("row", "running")]


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.name)
def test_every_move_outside_the_table_raises_and_changes_nothing(phase):
    for trigger in Trigger:
        if (phase, trigger) in TABLE:
            continue
        child, stream = record(phase)
        before = attrs.asdict(child, recurse=False)
        with pytest.raises(IllegalTransition) as refused:
            fire(child, trigger, FACTS, last_policy_decision="nope")
        assert (refused.value.phase, refused.value.trigger) == (phase, trigger)
        assert refused.value.current is phase.wire and refused.value.path == "/root/c"
        assert str(refused.value) == f"/root/c cannot go from {phase.wire.value} to {trigger.value}"
        assert attrs.asdict(child, recurse=False) == before and stream == []


def test_a_command_names_what_it_wanted_when_refused():
    child, _ = record(Phase.PAUSED)
    with pytest.raises(IllegalTransition, match="cannot go from paused to paused"):
        fire(child, Trigger.PAUSE)
    with pytest.raises(IllegalTransition, match="cannot go from paused to restarted"):
        fire(child, Trigger.ORDER_RESTART)


def test_phases_show_only_the_contracts_lifecycle_states_and_every_state_is_shown():
    assert {p.wire.value for p in Phase} == set(LIFECYCLE_STATES) == {s.value for s in Lifecycle}


def test_the_table_emits_only_contract_events_with_declared_payloads():
    emitted = {e for m in TABLE.values() for e in m.before + m.after}
    assert emitted <= set(EVENT_TYPES)
    assert emitted == set(EVENT_PAYLOADS)


def test_the_phase_groups_partition_the_phases():
    groups = [LIVE, STOPPING, HELD, IDLE]
    assert sum(len(g) for g in groups) == len(Phase) and set().union(*groups) == set(Phase)
    assert PENDING <= IDLE
    assert all(p.wire is Lifecycle.STOPPING for p in STOPPING)


def test_every_phase_is_reachable_and_every_trigger_is_used():
    reachable, frontier = {Phase.STOPPED, Phase.PAUSED, Phase.QUARANTINED}, [Phase.STOPPED]
    while frontier:
        phase = frontier.pop()
        for (source, _), move in TABLE.items():
            if source is phase and move.target not in reachable:
                reachable.add(move.target)
                frontier.append(move.target)
    assert reachable == set(Phase)
    assert {t for _, t in TABLE} == set(Trigger)


def test_stops_used_by_procedures_are_total_so_a_stop_never_breaks_half_way():
    for phase in Phase:
        assert (phase, Trigger.STOP) in TABLE
        assert (phase, Trigger.STOP_FOR_RESTART) in TABLE
    for phase in STOPPING:
        assert TABLE[(phase, Trigger.SETTLE)].target.wire is not Lifecycle.STOPPING


def test_pending_children_are_indexed_by_their_supervisor():
    child, _ = record(Phase.STOPPED)
    fire(child, Trigger.DEFER_START, last_policy_decision="waiting for db")
    assert child.node.pending == {child}
    fire(child, Trigger.DEFER_RESTART, last_policy_decision="waiting for db")
    assert child.node.pending == {child} and child.phase is Phase.STOPPED_PENDING_RESTART
    fire(child, Trigger.DEPENDENCIES_MET)
    assert child.node.pending == set() and child.phase is Phase.STARTING_AGAIN


CHILD_FIELDS = {f.name for f in attrs.fields(ChildRuntime)}
TREE = pathlib.Path(lifecycle.__file__).parent


@pytest.mark.parametrize("module", sorted(p.name for p in TREE.glob("*.py") if p.name != "model.py"))
def test_no_module_but_the_model_writes_a_child_field(module):
    """Child fields change only through the transition path in model.py."""
    tree = ast.parse((TREE / module).read_text())
    writes = [
        f"{module}:{node.lineno} {ast.unparse(target)}"
        for node in ast.walk(tree)
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute) and target.attr in CHILD_FIELDS
        and not (isinstance(target.value, ast.Name) and target.value.id == "self")
    ]
    assert writes == []
