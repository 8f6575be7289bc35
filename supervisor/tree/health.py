"""Liveness: heartbeats make a running child healthy, their silence makes it stale."""

from __future__ import annotations

from supervisor.tree.context import Tree
from supervisor.tree.lifecycle import Health, Lifecycle, Trigger
from supervisor.tree.model import ChildRuntime, fire
from supervisor.tree.ticks import GridLoop


class HeartbeatMonitor:
    """Watches the children that heartbeat, every ``interval`` seconds of the tree's clock.

    The clock only runs while some child heartbeats: a tree whose children never do is not
    woken for them (each wake of an idle target costs CPU).
    """

    def __init__(self, tree: Tree, interval: float) -> None:
        self._tree = tree
        self._interval = interval
        self._watched: set[ChildRuntime] = set()
        self._started = False
        self._loop = GridLoop(self.check, tree.clock)

    def start(self) -> None:
        self._started = True
        if self._watched:
            self._loop.start(self._interval)

    def set_interval(self, interval: float) -> None:
        """Check every ``interval`` seconds from now on (a reloaded policy)."""
        if interval == self._interval:
            return
        self._interval = interval
        if self._loop.running:
            self._loop.stop()
            self._loop.start(interval)

    def stop(self) -> None:
        self._started = False
        self._loop.stop()

    def heard(self, child: ChildRuntime) -> None:
        """The child's current generation heartbeated: note it and watch it from now on."""
        if child.phase.wire is Lifecycle.RUNNING and child.health is not Health.HEALTHY:
            fire(child, Trigger.HEARTBEAT, last_heartbeat=self._tree.now(), health=Health.HEALTHY)
        else:
            fire(child, Trigger.HEARTBEAT, last_heartbeat=self._tree.now())
        self._watched.add(child)
        if self._started:
            self._loop.start(self._interval)  # no-op while it runs

    def check(self) -> None:
        """Mark children whose heartbeats stopped stale (and failed, when they ask for it)."""
        now = self._tree.now()
        for child in list(self._watched):
            if child.phase.wire is not Lifecycle.RUNNING or child.last_heartbeat is None:
                self._watched.discard(child)
                continue
            silent_ms = (now - child.last_heartbeat) * 1000
            if silent_ms >= child.policy.stale_after_ms and child.health is not Health.STALE:
                self._watched.discard(child)  # watched again once it heartbeats
                fire(child, Trigger.STALE, {"silent_ms": round(silent_ms)}, health=Health.STALE)
                if child.spec.stale_is_failure and child.runner is not None:
                    child.runner.fail(f"heartbeat stale for {round(silent_ms)} ms")
        if not self._watched:
            self._loop.stop()
