"""The live tree's records and the one path by which a child's state changes.

A :class:`SupervisorNode` holds one supervisor level's children (a :class:`ChildRuntime`
each, in declaration order). :func:`fire` applies a move of the lifecycle table
(:mod:`supervisor.tree.lifecycle`) to a child: it checks the move, emits the move's events,
writes the fields the caller gives, publishes the child's row and wakes whoever waits for
the child's state. Child fields are written there (and, for the shutdown stage, in
:func:`enter_shutdown_phase`) and nowhere else.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from supervisor.tree.children import Outcome, Runner
from supervisor.tree.context import Tree
from supervisor.tree.lifecycle import (
    EVENT_PAYLOADS,
    PENDING,
    TABLE,
    Health,
    IllegalTransition,
    Lifecycle,
    Phase,
    Readiness,
    ShutdownPhase,
    Trigger,
)
from supervisor.tree.policy import IntensityWindow
from supervisor.tree.spec import ChildSpec, Policy, ShutdownPolicy, Strategy
from supervisor.wire.errors import WireError

ROOT_PATH = "/root"

#: Wire states a caller waiting for a (re)start to settle is waiting for.
SETTLED = frozenset({
    Lifecycle.RUNNING, Lifecycle.FAILED, Lifecycle.COMPLETED, Lifecycle.STOPPED,
    Lifecycle.PAUSED, Lifecycle.QUARANTINED,
})

#: Child fields the wire does not show: moves that only write these publish no row.
_UNSHOWN = frozenset({
    "token", "runner", "marked_ready", "started_at", "last_heartbeat", "correlation",
    "backoff_attempt", "intensity", "failed_starts",
})

#: ``EVENT_PAYLOADS`` parsed once: ``(key, read from the child?)`` per payload key.
_PAYLOADS = {
    event: tuple((key.removeprefix("child."), key.startswith("child.")) for key in keys)
    for event, keys in EVENT_PAYLOADS.items()
}


def child_id_of(path: str) -> str | None:
    """The last component of a path; the root has none."""
    return None if path == ROOT_PATH else path.rsplit("/", 1)[-1]


@attrs.define(eq=False)
class ChildRuntime:
    """Everything the supervisor knows about one child, across its generations."""

    spec: ChildSpec
    path: str
    node: "SupervisorNode"
    policy: Policy
    shutdown: ShutdownPolicy
    #: its restarts in the child_restart_window_ms
    intensity: IntensityWindow
    #: the nested level, for a supervisor child
    subtree: "SupervisorNode | None" = None
    phase: Phase = Phase.STOPPED
    health: Health = Health.UNKNOWN
    readiness: Readiness = Readiness.UNKNOWN
    generation: int = 0
    attempt: int = 0
    restart_count: int = 0
    #: restarts since the last stable run: the next backoff delay is computed from it
    backoff_attempt: int = 0
    #: starts in a row that ended within ``startsecs`` (``startretries`` bounds them)
    failed_starts: int = 0
    last_failure: str | None = None
    last_policy_decision: str | None = None
    shutdown_state: ShutdownPhase = ShutdownPhase.IDLE
    #: the diagnostics message of the topology node
    message: str | None = None
    #: when the wire state last changed
    since: float = 0.0
    #: the correlation id of the incident or command the child's events belong to
    correlation: str = ""
    #: the current generation's runner and the token its reports must carry
    runner: Runner | None = None
    token: object | None = None
    #: the generation reported readiness before it reported running
    marked_ready: bool = False
    started_at: float | None = None
    last_heartbeat: float | None = None
    #: the stop procedure waiting for the runner to end
    exit_waiters: list[defer.Deferred[Outcome]] = attrs.Factory(list)
    #: callers waiting for the child to reach one of some wire states
    state_waiters: list[tuple[frozenset[Lifecycle], defer.Deferred[Lifecycle]]] = attrs.Factory(
        list
    )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> Lifecycle:
        """The wire lifecycle_state."""
        return self.phase.wire


@attrs.define(eq=False)
class SupervisorNode:
    """One supervisor level: its children in declaration order and what the level itself tracks."""

    tree: Tree
    path: str
    strategy: Strategy
    policy: Policy
    shutdown: ShutdownPolicy
    #: the child this level is the subtree of; ``None`` at the root
    owner: ChildRuntime | None = None
    children: dict[str, ChildRuntime] = attrs.Factory(dict)
    #: children in a pending phase (held back by their dependencies), kept by :func:`fire`
    pending: set[ChildRuntime] = attrs.Factory(set)
    #: scheduled restarts, by the name of the child whose failure scheduled them
    restart_timers: dict[str, IDelayedCall] = attrs.Factory(dict)
    failures: IntensityWindow = attrs.field(init=False)
    #: set while the whole level is being stopped: nothing starts or restarts meanwhile
    stopping_all: bool = False
    #: set once the level escalated; it escalates once per start
    escalated: bool = False
    last_stop_reports: list[dict[str, Any]] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.failures = self.fresh_failure_window()

    def fresh_failure_window(self) -> IntensityWindow:
        return IntensityWindow(
            self.policy.supervisor_failure_limit, self.policy.supervisor_failure_window_ms / 1000
        )

    def reconfigure(self, strategy: Strategy, policy: Policy, shutdown: ShutdownPolicy) -> None:
        """Take a reloaded config's settings; restarts and failures counted so far still count."""
        self.strategy = strategy
        self.shutdown = shutdown
        if policy != self.policy:
            self.policy = policy
            self.failures = self.failures.resized(
                policy.supervisor_failure_limit, policy.supervisor_failure_window_ms / 1000
            )

    def cancel_restart(self, name: str) -> None:
        """Cancel the restart ``name``'s failure scheduled, if any."""
        call = self.restart_timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()


# ---------------------------------------------------------------------- the transition path


def fire(child: ChildRuntime, trigger: Trigger, facts: Mapping[str, Any] | None = None,
         /, **fields: Any) -> None:
    """Apply the table's move for ``trigger`` to ``child``; raises IllegalTransition.

    ``facts`` supply the payload keys of the move's events that are not child fields;
    ``fields`` are written to the child (a ``correlation`` first, so that the move's
    events carry it). The child's row is published when its wire state or a field the
    wire shows changed; then, when its wire state changed, whoever waits for the new state
    is woken, and the move's ``after`` events follow.
    """
    source = child.phase
    move = TABLE.get((source, trigger))
    if move is None:
        raise IllegalTransition(child.path, source, trigger)
    tree = child.node.tree
    if "correlation" in fields:
        child.correlation = fields.pop("correlation")
    for event in move.before:
        _emit(tree, child, event, facts)
    target = move.target
    moved = target.wire is not source.wire
    child.phase = target
    if moved:
        child.since = tree.now()
    for name, value in fields.items():
        setattr(child, name, value)
    if (target in PENDING) is not (source in PENDING):
        (child.node.pending.add if target in PENDING else child.node.pending.discard)(child)
    if moved or not _UNSHOWN.issuperset(fields):
        tree.state_changed(lambda: {"runtime_state": [runtime_row(child)]})
    if moved and child.state_waiters:
        _wake(child)
    for event in move.after:
        _emit(tree, child, event, facts)


def enter_shutdown_phase(child: ChildRuntime, phase: ShutdownPhase) -> None:
    """Record how far the child's stop got, publish it and emit ``shutdown_phase_changed``."""
    child.shutdown_state = phase
    tree = child.node.tree
    tree.state_changed(lambda: {"runtime_state": [runtime_row(child)]})
    tree.emit(
        "shutdown_phase_changed", child.path, child.name, child.correlation, {"phase": phase.value}
    )


def _emit(tree: Tree, child: ChildRuntime, event: str, facts: Mapping[str, Any] | None) -> None:
    payload = {}
    for key, from_child in _PAYLOADS[event]:
        payload[key] = getattr(child, key) if from_child else facts[key]  # type: ignore[index]
    tree.emit(event, child.path, child.spec.name, child.correlation, payload)


def _wake(child: ChildRuntime) -> None:
    state = child.phase.wire
    waiting, child.state_waiters = child.state_waiters, []
    for wanted, d in waiting:
        if state in wanted:
            d.callback(state)
        else:
            child.state_waiters.append((wanted, d))


def wait_for(child: ChildRuntime, states: frozenset[Lifecycle]) -> defer.Deferred[Lifecycle]:
    """Fires with the child's wire state as soon as it is one of ``states``."""
    if child.phase.wire in states:
        return defer.succeed(child.phase.wire)
    d: defer.Deferred[Lifecycle] = defer.Deferred()
    child.state_waiters.append((states, d))
    return d


def expect_exit(child: ChildRuntime) -> defer.Deferred[Outcome]:
    """Fires with the outcome of the child's current generation (for a stop in progress)."""
    d: defer.Deferred[Outcome] = defer.Deferred()
    child.exit_waiters.append(d)
    return d


def deliver_exit(child: ChildRuntime, outcome: Outcome) -> None:
    """Hand the outcome to the stop procedure waiting for it."""
    waiters, child.exit_waiters = child.exit_waiters, []
    for d in waiters:
        d.callback(outcome)


def forget_exit(child: ChildRuntime, d: defer.Deferred[Outcome]) -> None:
    """Stop waiting for the exit ``d`` was waiting for (its stop gave up)."""
    child.exit_waiters = [w for w in child.exit_waiters if w is not d]


# ---------------------------------------------------------------------- the wire row, lookups


def runtime_row(child: ChildRuntime) -> dict[str, Any]:
    """The child's RuntimeState (CONTRACTS.md §1)."""
    return {
        "child_path": child.path,
        "lifecycle_state": child.phase.wire.value,
        "health": child.health.value,
        "readiness": child.readiness.value,
        "generation": child.generation,
        "attempt": child.attempt,
        "restart_count": child.restart_count,
        "last_failure": child.last_failure,
        "last_policy_decision": child.last_policy_decision,
        "shutdown_state": child.shutdown_state.value,
        "resources": None if child.runner is None else child.node.tree.resources_of(child.path),
    }


def start_order(node: SupervisorNode) -> list[ChildRuntime]:
    """``node``'s children by ``priority`` (lower first), declaration order among equals:
    the order they start in; they stop in the reverse."""
    return sorted(node.children.values(), key=lambda c: c.spec.priority)


def walk(node: SupervisorNode) -> Iterator[ChildRuntime]:
    """Every child below ``node`` in declaration order, depth first."""
    for child in node.children.values():
        yield child
        if child.subtree is not None:
            yield from walk(child.subtree)


def child_at(root: SupervisorNode, path: str) -> ChildRuntime:
    """The child at ``path`` (``/root/a/b``); unknown paths raise ``unknown_child``."""
    target_id = root.tree.target_id
    node: SupervisorNode | None = root
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] != "root":
        raise WireError("unknown_child", "command_execute", f"no child at {path}", target_id)
    found: ChildRuntime | None = None
    for name in parts[2:]:
        if node is None or name not in node.children:
            raise WireError("unknown_child", "command_execute", f"no child at {path}", target_id)
        found = node.children[name]
        node = found.subtree
    assert found is not None
    return found
