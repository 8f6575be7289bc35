"""Liveness: heartbeats make a running child healthy, their silence makes it stale."""

from __future__ import annotations

from twisted.internet import task

from supervisor.tree.context import Tree
from supervisor.tree.lifecycle import Health, Lifecycle, Trigger
from supervisor.tree.model import ChildRuntime, fire


class HeartbeatMonitor:
    """Watches the children that heartbeat, every ``interval`` seconds of the tree's clock."""

    def __init__(self, tree: Tree, interval: float) -> None:
        self._tree = tree
        self._interval = interval
        self._watched: set[ChildRuntime] = set()
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = tree.clock

    def start(self) -> None:
        self._loop.start(self._interval, now=False)

    def set_interval(self, interval: float) -> None:
        """Check every ``interval`` seconds from now on (a reloaded policy)."""
        if interval == self._interval:
            return
        self._interval = interval
        if self._loop.running:
            self._loop.stop()
            self._loop = task.LoopingCall(self.check)
            self._loop.clock = self._tree.clock
            self.start()

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def heard(self, child: ChildRuntime) -> None:
        """The child's current generation heartbeated: note it and watch it from now on."""
        if child.phase.wire is Lifecycle.RUNNING and child.health is not Health.HEALTHY:
            fire(child, Trigger.HEARTBEAT, last_heartbeat=self._tree.now(), health=Health.HEALTHY)
        else:
            fire(child, Trigger.HEARTBEAT, last_heartbeat=self._tree.now())
        self._watched.add(child)

    def check(self) -> None:
        """Mark children whose heartbeats stopped stale (and failed, when they ask for it)."""
        now = self._tree.now()
        for child in list(self._watched):
            if child.phase.wire is not Lifecycle.RUNNING or child.last_heartbeat is None:
                self._watched.discard(child)
                continue
            silent_ms = (now - child.last_heartbeat) * 1000
            if silent_ms >= child.policy.stale_after_ms and child.health is not Health.STALE:
                fire(child, Trigger.STALE, {"silent_ms": round(silent_ms)}, health=Health.STALE)
                if child.spec.stale_is_failure and child.runner is not None:
                    child.runner.fail(f"heartbeat stale for {round(silent_ms)} ms")
