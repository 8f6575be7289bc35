"""A child's lifecycle as one explicit state machine: states, allowed moves, typed error."""

from __future__ import annotations

import enum


class Lifecycle(str, enum.Enum):
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
    IDLE = "idle"
    REQUEST_STOP = "request_stop"
    GRACEFUL_DRAIN = "graceful_drain"
    ABORT_STRAGGLERS = "abort_stragglers"
    RECONCILE = "reconcile"
    COMPLETED = "completed"


L = Lifecycle

#: Every allowed move. Anything else is a bug or a refused command.
TRANSITIONS: dict[Lifecycle, frozenset[Lifecycle]] = {
    L.STOPPED: frozenset({L.STARTING, L.PAUSED, L.QUARANTINED}),
    L.STARTING: frozenset({L.RUNNING, L.FAILED, L.STOPPING, L.COMPLETED}),
    L.RUNNING: frozenset({L.FAILED, L.COMPLETED, L.STOPPING}),
    L.FAILED: frozenset({L.RESTARTING, L.STOPPED, L.PAUSED, L.QUARANTINED, L.STARTING}),
    L.COMPLETED: frozenset({L.RESTARTING, L.STOPPED, L.PAUSED, L.QUARANTINED, L.STARTING}),
    L.RESTARTING: frozenset({L.STARTING, L.STOPPED, L.PAUSED, L.QUARANTINED}),
    L.STOPPING: frozenset({L.STOPPED, L.PAUSED, L.QUARANTINED, L.RESTARTING, L.FAILED}),
    L.PAUSED: frozenset({L.STARTING, L.QUARANTINED, L.STOPPED}),
    L.QUARANTINED: frozenset({L.STARTING, L.STOPPED}),
}

#: States in which the child has a live runner (a task, process, service or subtree).
ACTIVE = frozenset({L.STARTING, L.RUNNING, L.STOPPING})

#: States an operator hold puts a child in; strategies and restarts leave such children alone.
HELD = frozenset({L.PAUSED, L.QUARANTINED})


class IllegalTransition(Exception):
    """A move the table does not allow; becomes the ``illegal_transition`` error code."""

    def __init__(self, path: str, current: Lifecycle, wanted: Lifecycle | str) -> None:
        wanted_text = wanted.value if isinstance(wanted, Lifecycle) else wanted
        super().__init__(f"{path} cannot go from {current.value} to {wanted_text}")
        self.path = path
        self.current = current
        self.wanted = wanted


def check_transition(path: str, current: Lifecycle, new: Lifecycle) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(path, current, new)
