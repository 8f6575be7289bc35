"""A child's lifecycle as one explicit state machine: the only place that says what may happen.

A child is always in one :class:`Phase`. Phases are finer than the contract's nine wire
``lifecycle_state`` values (:class:`Lifecycle`): a child waiting for its dependencies shows
``stopped`` or ``restarting`` on the wire, a child being paused shows ``stopping``; each
phase names the one wire value it shows (:attr:`Phase.wire`).

Everything that can happen to a child is a :class:`Trigger`. :data:`TABLE` holds one
:class:`Move` per allowed ``(phase, trigger)`` pair: the phase it leads to and the events
it emits, before and after the child's row changes. A pair missing from the table is
illegal and raises :class:`IllegalTransition` (the contract's ``illegal_transition``).
The table is applied by :func:`supervisor.tree.model.fire`; nothing else moves a child.
"""

from __future__ import annotations

import enum
from typing import Iterable

import attrs


class Lifecycle(str, enum.Enum):
    """The contract's ``lifecycle_state`` values (fixed; what rows and topology show)."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    QUARANTINED = "quarantined"
    FAILED = "failed"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    COMPLETED = "completed"


class Health(str, enum.Enum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    STALE = "stale"
    UNHEALTHY = "unhealthy"


class Readiness(str, enum.Enum):
    UNKNOWN = "unknown"
    READY = "ready"
    NOT_READY = "not_ready"


class ShutdownPhase(str, enum.Enum):
    """The stages of a stop, in order (a child's ``shutdown_state`` and the tree's phases)."""

    IDLE = "idle"
    REQUEST_STOP = "request_stop"
    GRACEFUL_DRAIN = "graceful_drain"
    ABORT_STRAGGLERS = "abort_stragglers"
    RECONCILE = "reconcile"
    COMPLETED = "completed"


L = Lifecycle


class Phase(enum.Enum):
    """Where a child is in its lifecycle; ``wire`` is the lifecycle_state it shows."""

    wire: Lifecycle
    # members are singletons: identity hashing keeps table lookups cheap on the restart path
    __hash__ = object.__hash__

    def __new__(cls, value: str, wire: Lifecycle) -> "Phase":
        member = object.__new__(cls)
        member._value_ = value
        member.wire = wire
        return member

    STOPPED = "stopped", L.STOPPED
    #: to be started once its dependencies are running and ready
    PENDING_START = "pending_start", L.STOPPED
    #: a restart was ordered while stopped; it waits for its dependencies
    STOPPED_PENDING_RESTART = "stopped_pending_restart", L.STOPPED
    STARTING = "starting", L.STARTING
    #: starting as a restart: announces ``child_restarted`` once running
    STARTING_AGAIN = "starting_again", L.STARTING
    #: running and ready
    RUNNING = "running", L.RUNNING
    #: running, waiting for the child to report readiness (``wait_ready``)
    RUNNING_UNREADY = "running_unready", L.RUNNING
    FAILED = "failed", L.FAILED
    #: a restart was ordered after the failure; it waits for its dependencies
    FAILED_PENDING_RESTART = "failed_pending_restart", L.FAILED
    COMPLETED = "completed", L.COMPLETED
    #: a restart was ordered after completion; it waits for its dependencies
    COMPLETED_PENDING_RESTART = "completed_pending_restart", L.COMPLETED
    #: a restart is scheduled (backoff) or the rest of its restart group is being stopped
    RESTARTING = "restarting", L.RESTARTING
    #: a restart is due; it waits for its dependencies
    PENDING_RESTART = "pending_restart", L.RESTARTING
    #: being stopped; settles in ``stopped``
    STOPPING = "stopping", L.STOPPING
    #: being stopped; settles in ``paused``
    PAUSING = "pausing", L.STOPPING
    #: being stopped; settles in ``quarantined``
    QUARANTINING = "quarantining", L.STOPPING
    #: being stopped; settles in ``restarting``
    STOPPING_TO_RESTART = "stopping_to_restart", L.STOPPING
    PAUSED = "paused", L.PAUSED
    QUARANTINED = "quarantined", L.QUARANTINED


P = Phase

#: A runner is up and nobody asked it to stop.
LIVE = frozenset({P.STARTING, P.STARTING_AGAIN, P.RUNNING, P.RUNNING_UNREADY})
#: A stop procedure is waiting for the runner to end.
STOPPING = frozenset({P.STOPPING, P.PAUSING, P.QUARANTINING, P.STOPPING_TO_RESTART})
#: Held back until every dependency is running and ready.
PENDING = frozenset({
    P.PENDING_START, P.STOPPED_PENDING_RESTART, P.FAILED_PENDING_RESTART,
    P.COMPLETED_PENDING_RESTART, P.PENDING_RESTART,
})
#: An operator hold: strategies and restarts leave such children alone.
HELD = frozenset({P.PAUSED, P.QUARANTINED})
#: Children a ``one_for_all`` / ``rest_for_one`` restart takes along with the failed one
#: (one that is only waiting to start has nothing to restart: it keeps waiting).
RESTART_GROUP = (
    LIVE | STOPPING | {P.RESTARTING, P.PENDING_RESTART, P.FAILED_PENDING_RESTART,
                       P.COMPLETED_PENDING_RESTART}
)
#: Children a scheduled group restart still applies to when its timer fires.
DUE_RESTART = frozenset({P.RESTARTING, P.PENDING_RESTART})
#: No runner, not held: what pause, quarantine and the restart command start from.
IDLE = frozenset(Phase) - LIVE - STOPPING - HELD


class Trigger(enum.Enum):
    """Everything that can happen to a child; the value is how refusals name it."""

    __hash__ = object.__hash__

    START = "starting"  # launch the first generation, or one after a resume
    DEFER_START = "waiting to start"  # a start meets dependencies that are not ready
    RESTART = "restarting"  # launch a generation as a restart (backoff expired, or command)
    DEFER_RESTART = "waiting to restart"  # a restart meets dependencies that are not ready
    DEPENDENCIES_MET = "dependencies met"  # a pending start or restart goes ahead
    UP = "running"  # the runner reports running; the child is ready at once
    UP_UNREADY = "running, not ready"  # the runner reports running; readiness comes later
    READY = "ready"  # the child reports readiness while running
    READY_EARLY = "ready before running"  # ... while still starting (kept for when it runs)
    HEARTBEAT = "heartbeat"
    STALE = "stale"  # heartbeats stopped for stale_after_ms
    FAIL = "failed"  # the runner ended abnormally
    FAIL_UNREPORTED = "failed while stopping"  # ... while its supervisor is stopping
    COMPLETE = "completed"  # the runner ended normally
    EXCEED_RESTARTS = "restart intensity exceeded"  # the child's restart limit: escalate
    EXCEED_FAILURES = "failure limit exceeded"  # the supervisor's failure limit: escalate
    SCHEDULE_RESTART = "scheduled to restart"
    STOP = "stopped"  # stop and settle in stopped
    PAUSE = "paused"  # stop and settle in paused
    QUARANTINE = "quarantined"  # stop and settle in quarantined
    STOP_FOR_RESTART = "stopped for a restart"  # stop and settle in restarting
    SETTLE = "settled"  # the stop procedure is done: the runner ended or was given up on
    CONFIRM_HOLD = "held"  # a pause or quarantine command completed
    RESUME = "resumed"
    ORDER_RESTART = "restarted"  # the restart command is accepted (the moves follow)
    ADOPT = "added"
    REMOVE = "removed"
    RECONFIGURE = "reconfigured"  # a config reload changed the child's settings


T = Trigger


@attrs.frozen
class Move:
    """One allowed move: from ``source`` on ``trigger`` to ``target``, and its events.

    ``before`` events are emitted before the child's fields change, ``after`` events once
    its new row is published and whoever waited for its new state has been told.
    """

    source: Phase
    trigger: Trigger
    target: Phase
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


def _moves(
    trigger: Trigger,
    sources: Iterable[Phase],
    target: Phase | None = None,
    before: tuple[str, ...] = (),
    after: tuple[str, ...] = (),
) -> list[Move]:
    """One move per source; ``target=None`` means the child stays in its phase."""
    return [Move(s, trigger, target or s, before, after) for s in sources]


_STOP_SETTLES = {
    T.STOP: P.STOPPED, T.PAUSE: P.PAUSED, T.QUARANTINE: P.QUARANTINED,
    T.STOP_FOR_RESTART: P.RESTARTING,
}
_STOP_PHASE = {
    T.STOP: P.STOPPING, T.PAUSE: P.PAUSING, T.QUARANTINE: P.QUARANTINING,
    T.STOP_FOR_RESTART: P.STOPPING_TO_RESTART,
}

_ROWS: list[Move] = [
    # launching a generation
    *_moves(T.START, {P.STOPPED}, P.STARTING, after=("child_started",)),
    *_moves(T.DEFER_START, {P.STOPPED}, P.PENDING_START),
    *_moves(T.RESTART, IDLE, P.STARTING_AGAIN, after=("child_started",)),
    *_moves(T.DEFER_RESTART, {P.RESTARTING, P.PENDING_RESTART}, P.PENDING_RESTART),
    *_moves(T.DEFER_RESTART, {P.STOPPED, P.PENDING_START, P.STOPPED_PENDING_RESTART},
            P.STOPPED_PENDING_RESTART),
    *_moves(T.DEFER_RESTART, {P.FAILED, P.FAILED_PENDING_RESTART}, P.FAILED_PENDING_RESTART),
    *_moves(T.DEFER_RESTART, {P.COMPLETED, P.COMPLETED_PENDING_RESTART},
            P.COMPLETED_PENDING_RESTART),
    *_moves(T.DEPENDENCIES_MET, {P.PENDING_START}, P.STARTING, after=("child_started",)),
    *_moves(T.DEPENDENCIES_MET, PENDING - {P.PENDING_START}, P.STARTING_AGAIN,
            after=("child_started",)),
    # running, readiness, liveness
    Move(P.STARTING, T.UP, P.RUNNING, after=("child_running", "child_ready")),
    Move(P.STARTING_AGAIN, T.UP, P.RUNNING,
         after=("child_running", "child_ready", "child_restarted")),
    Move(P.STARTING, T.UP_UNREADY, P.RUNNING_UNREADY, after=("child_running",)),
    Move(P.STARTING_AGAIN, T.UP_UNREADY, P.RUNNING_UNREADY,
         after=("child_running", "child_restarted")),
    Move(P.RUNNING_UNREADY, T.READY, P.RUNNING, after=("child_ready",)),
    *_moves(T.READY_EARLY, {P.STARTING, P.STARTING_AGAIN}),
    *_moves(T.HEARTBEAT, LIVE | STOPPING),
    *_moves(T.STALE, {P.RUNNING, P.RUNNING_UNREADY}, after=("child_heartbeat_stale",)),
    # exits and what the supervisor decides about them
    *_moves(T.FAIL, LIVE, P.FAILED, before=("child_exited",), after=("child_failed",)),
    *_moves(T.FAIL_UNREPORTED, LIVE, P.FAILED, before=("child_exited",)),
    *_moves(T.COMPLETE, LIVE, P.COMPLETED, before=("child_exited",)),
    *_moves(T.EXCEED_RESTARTS, {P.FAILED, P.COMPLETED}, after=("restart_intensity_exceeded",)),
    *_moves(T.EXCEED_FAILURES, {P.FAILED}),
    *_moves(T.SCHEDULE_RESTART, {P.FAILED, P.COMPLETED}, P.RESTARTING,
            before=("backoff_scheduled",), after=("child_restarting",)),
    # stopping: a live child enters the stopping phase of its target; one already stopping
    # is retargeted (the stop in progress settles it); an idle one settles at once
    *_moves(T.STOP, LIVE | STOPPING, P.STOPPING),
    *_moves(T.STOP_FOR_RESTART, LIVE | STOPPING, P.STOPPING_TO_RESTART),
    *_moves(T.PAUSE, LIVE, P.PAUSING),
    *_moves(T.QUARANTINE, LIVE, P.QUARANTINING),
    *_moves(T.STOP, IDLE | HELD, P.STOPPED),
    *_moves(T.PAUSE, IDLE, P.PAUSED),
    *_moves(T.QUARANTINE, IDLE | {P.PAUSED}, P.QUARANTINED),
    # a restart group is stopped one member after the other, so a member may have ended or
    # been held meanwhile: one that ended restarts with the group, a held one stays held,
    # one that is stopped or only waiting to start has no restart to take part in
    *_moves(T.STOP_FOR_RESTART, IDLE - {P.STOPPED, P.PENDING_START, P.STOPPED_PENDING_RESTART},
            P.RESTARTING),
    *_moves(T.STOP_FOR_RESTART, HELD | {P.STOPPED, P.PENDING_START, P.STOPPED_PENDING_RESTART}),
    *[Move(p, T.SETTLE, _STOP_SETTLES[t]) for t, p in _STOP_PHASE.items()],
    # operator commands
    Move(P.PAUSED, T.CONFIRM_HOLD, P.PAUSED, after=("child_paused",)),
    Move(P.QUARANTINED, T.CONFIRM_HOLD, P.QUARANTINED, after=("child_quarantined",)),
    *_moves(T.RESUME, HELD, P.STOPPED, before=("child_resumed",)),
    *_moves(T.ORDER_RESTART, LIVE | IDLE),
    *_moves(T.ADOPT, {P.STOPPED} | HELD, after=("child_added",)),
    Move(P.STOPPED, T.REMOVE, P.STOPPED, after=("child_removed",)),
    # a config reload writes new settings in any phase; a restart, if any, are moves of its own
    *_moves(T.RECONFIGURE, Phase, before=("child_reconfigured",)),
]


def _index(rows: list[Move]) -> dict[tuple[Phase, Trigger], Move]:
    table: dict[tuple[Phase, Trigger], Move] = {}
    for move in rows:
        key = (move.source, move.trigger)
        if key in table:
            raise AssertionError(f"two moves for {move.source.value} on {move.trigger.name}")
        table[key] = move
    return table


#: Every allowed move, by ``(phase, trigger)``. Anything else is a bug or a refused command.
TABLE: dict[tuple[Phase, Trigger], Move] = _index(_ROWS)

#: Each child event's payload keys, in wire order. ``child.x`` keys are read from the
#: child record when the event is emitted; the others are facts the caller states.
EVENT_PAYLOADS: dict[str, tuple[str, ...]] = {
    "child_started": ("child.generation", "child.attempt"),
    "child_running": ("child.generation",),
    "child_ready": (),
    "child_restarted": ("child.restart_count",),
    "child_exited": ("outcome", "normal"),
    "child_failed": ("reason",),
    "backoff_scheduled": ("delay_ms", "attempt"),
    "child_restarting": ("delay_ms", "strategy"),
    "restart_intensity_exceeded": ("scope", "limit", "window_ms"),
    "child_heartbeat_stale": ("silent_ms",),
    "child_paused": ("requested_by", "reason"),
    "child_quarantined": ("requested_by", "reason"),
    "child_resumed": ("requested_by", "reason"),
    "child_added": ("kind",),
    "child_removed": (),
    "child_reconfigured": ("keys", "restart"),
}


class IllegalTransition(Exception):
    """A move the table does not allow; becomes the ``illegal_transition`` error code."""

    def __init__(self, path: str, phase: Phase, trigger: Trigger) -> None:
        super().__init__(f"{path} cannot go from {phase.wire.value} to {trigger.value}")
        self.path = path
        self.phase = phase
        self.trigger = trigger
        #: the wire state the child was in
        self.current = phase.wire
        self.wanted = trigger.value


def move_for(path: str, phase: Phase, trigger: Trigger) -> Move:
    """The move ``trigger`` makes from ``phase``; raises :class:`IllegalTransition`."""
    move = TABLE.get((phase, trigger))
    if move is None:
        raise IllegalTransition(path, phase, trigger)
    return move
