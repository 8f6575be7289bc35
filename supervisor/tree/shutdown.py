"""Stopping: one child (polite stop, then abort, then settle), a whole level, the whole tree.

:func:`stop_child` is the one stop procedure; pause, quarantine, remove, restarts and
shutdowns all go through it. A staged stop reports its progress in the child's
``shutdown_state`` (``request_stop → graceful_drain → [abort_stragglers] → reconcile →
completed``). :class:`TreeShutdown` stops the tree in reverse start order and moves
the tree through the same phases as they really happen: ``abort_stragglers`` only once a
straggler anywhere in the tree is aborted.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from twisted.internet import defer
from twisted.logger import Logger

from supervisor.tree.children import Outcome
from supervisor.tree.context import Tree
from supervisor.tree.health import HeartbeatMonitor
from supervisor.tree.lifecycle import (
    LIVE,
    STOPPING,
    Health,
    Lifecycle,
    Readiness,
    ShutdownPhase,
    Trigger,
    move_for,
)
from supervisor.tree.model import (
    ROOT_PATH,
    ChildRuntime,
    SupervisorNode,
    enter_shutdown_phase,
    expect_exit,
    fire,
    forget_exit,
    start_order,
    wait_for,
)
from supervisor.tree.state import publish_topology

_log = Logger()

#: Where a stop in progress may settle; a second stop of the same child waits for it.
_SETTLED = frozenset({Lifecycle.STOPPED, Lifecycle.PAUSED, Lifecycle.QUARANTINED, Lifecycle.RESTARTING})

Report = dict[str, Any]


def graceful_seconds(child: ChildRuntime) -> float:
    """How long a polite stop may take; a subtree gets the sum of its members' budgets."""
    own = child.shutdown.graceful_timeout_ms / 1000
    if child.subtree is None:
        return own
    return own + sum(
        graceful_seconds(c) + c.shutdown.abort_wait_ms / 1000
        for c in child.subtree.children.values()
    )


def _within(tree: Tree, d: defer.Deferred[Any], seconds: float) -> defer.Deferred[bool]:
    """True if ``d`` fires within ``seconds`` of the tree's clock, else False (d is left alone)."""
    result: defer.Deferred[bool] = defer.Deferred()
    call = tree.clock.callLater(seconds, lambda: result.called or result.callback(False))

    def fired(value: object) -> object:
        if call.active():
            call.cancel()
        if not result.called:
            result.callback(True)
        return value

    d.addBoth(fired)
    return result


def stop_child(
    child: ChildRuntime,
    trigger: Trigger,
    staged: bool = False,
    fields: Mapping[str, Any] | None = None,
) -> defer.Deferred[Report]:
    """Stop politely, then forcefully, and settle where ``trigger`` says; fires with a report.

    ``trigger`` is one of ``STOP``, ``PAUSE``, ``QUARANTINE``, ``STOP_FOR_RESTART``; a
    move the table refuses raises :class:`IllegalTransition` before anything happens.
    ``fields`` are written with the stop's first move.
    """
    move_for(child.path, child.phase, trigger)
    return defer.Deferred.fromCoroutine(_stop(child, trigger, staged, dict(fields or {})))


async def _stop(child: ChildRuntime, trigger: Trigger, staged: bool, fields: dict[str, Any]) -> Report:
    tree = child.node.tree
    began = tree.now()
    child.node.cancel_restart(child.name)
    report: Report = {"child_path": child.path, "outcome": "already_stopped"}
    if staged:
        enter_shutdown_phase(child, ShutdownPhase.REQUEST_STOP)
    if child.phase in STOPPING:
        # another stop is under way: it settles the child where this one wants it
        fire(child, trigger, **fields)
        await wait_for(child, _SETTLED)
        report["outcome"] = "stopped"
    elif child.phase in LIVE:
        runner = child.runner
        assert runner is not None
        exited = expect_exit(child)
        fire(child, trigger, **fields)
        runner.request_stop()
        if staged:
            enter_shutdown_phase(child, ShutdownPhase.GRACEFUL_DRAIN)
        report["outcome"] = "stopped"
        if not await _within(tree, exited, graceful_seconds(child)):
            if staged:
                enter_shutdown_phase(child, ShutdownPhase.ABORT_STRAGGLERS)
            _straggler_aborted(tree)
            runner.abort()
            report["outcome"] = "aborted"
            if not await _within(tree, exited, child.shutdown.abort_wait_ms / 1000):
                report["outcome"] = "not_stopped"
                _log.error("child {path} did not stop even after abort", path=child.path)
        if staged:
            enter_shutdown_phase(child, ShutdownPhase.RECONCILE)
        if exited.called:
            report["exit"] = exited.result.description if isinstance(exited.result, Outcome) else None
        processes = getattr(runner, "processes", None)
        if processes is not None:
            report["processes"] = processes
        release = getattr(runner, "release", None)
        if release is not None:
            release()
        forget_exit(child, exited)
        fire(
            child,
            Trigger.SETTLE,
            token=None,
            runner=None,
            health=Health.UNKNOWN,
            readiness=Readiness.UNKNOWN,
        )
    else:
        fire(child, trigger, **fields)
    if child.subtree is not None:
        report["children"] = child.subtree.last_stop_reports
    if staged:
        enter_shutdown_phase(child, ShutdownPhase.COMPLETED)
    report["duration_ms"] = round((tree.now() - began) * 1000, 3)
    return report


def stop_in_order(
    children: Iterable[ChildRuntime],
    trigger: Trigger,
    staged: bool = False,
    fields: Mapping[str, Any] | None = None,
) -> defer.Deferred[list[Report]]:
    """Stop ``children`` one after the other, in the order given."""

    async def run() -> list[Report]:
        reports = []
        for child in children:
            reports.append(await stop_child(child, trigger, staged, fields))
        return reports

    return defer.Deferred.fromCoroutine(run())


def stop_all(node: SupervisorNode, staged: bool = True) -> defer.Deferred[list[Report]]:
    """Stop every child of ``node`` in reverse start order; nothing restarts meanwhile."""
    node.stopping_all = True
    for name in list(node.restart_timers):
        node.cancel_restart(name)

    def remember(reports: list[Report]) -> list[Report]:
        node.last_stop_reports = reports
        return reports

    children = list(reversed(start_order(node)))
    return stop_in_order(children, Trigger.STOP, staged).addCallback(remember)


def abort_all(node: SupervisorNode) -> None:
    """Abort every runner of ``node`` at once (its parent gave up waiting for a polite stop)."""
    for child in node.children.values():
        if child.runner is not None:
            child.runner.abort()


# ---------------------------------------------------------------------- the tree's shutdown


def _enter_tree_phase(tree: Tree, phase: ShutdownPhase, **payload: Any) -> None:
    tree.shutdown_phase = phase
    tree.emit(
        "shutdown_phase_changed", ROOT_PATH, None, tree.shutdown_correlation,
        {"phase": phase.value, **payload},
    )


def _straggler_aborted(tree: Tree) -> None:
    """A stop gave up waiting politely: while the tree drains, that starts abort_stragglers."""
    if tree.shutting_down and tree.shutdown_phase is ShutdownPhase.GRACEFUL_DRAIN:
        _enter_tree_phase(tree, ShutdownPhase.ABORT_STRAGGLERS)


class TreeShutdown:
    """The tree's staged shutdown; it runs once and every request gets its report."""

    _log = Logger()

    def __init__(self, root: SupervisorNode, heartbeats: HeartbeatMonitor) -> None:
        self._root = root
        self._heartbeats = heartbeats
        self._running: defer.Deferred[Report] | None = None
        self._observers: list[Callable[[Report], None]] = []

    def on_stopped(self, observer: Callable[[Report], None]) -> None:
        """Call ``observer(report)`` once the tree has completed its shutdown."""
        self._observers.append(observer)

    def request(self, reason: str) -> defer.Deferred[Report]:
        """Start the shutdown (a later request joins it); fires with the shutdown report."""
        if self._running is None:
            self._running = defer.Deferred.fromCoroutine(self._run(reason))
        result: defer.Deferred[Report] = defer.Deferred()

        def relay(report: Any) -> Any:
            result.callback(report)
            return report

        self._running.addBoth(relay)
        return result

    async def _run(self, reason: str) -> Report:
        root = self._root
        tree = root.tree
        began = tree.now()
        tree.shutdown_correlation = correlation = tree.new_correlation()
        _enter_tree_phase(tree, ShutdownPhase.REQUEST_STOP, reason=reason)
        tree.stop_reason = reason
        tree.status = "stopping"
        tree.shutting_down = True
        publish_topology(root)
        self._log.info("supervision tree stopping: {reason}", reason=reason)
        _enter_tree_phase(tree, ShutdownPhase.GRACEFUL_DRAIN, reason=reason)
        reports = await stop_all(root, staged=True)
        _enter_tree_phase(tree, ShutdownPhase.RECONCILE)
        self._heartbeats.stop()
        tree.status = "stopped"
        publish_topology(root)
        _enter_tree_phase(tree, ShutdownPhase.COMPLETED)
        report = {
            "reason": reason,
            "children": reports,
            "duration_ms": round((tree.now() - began) * 1000, 3),
        }
        tree.emit("tree_stopped", ROOT_PATH, None, correlation, {"reason": reason})
        for observer in self._observers:
            observer(report)
        return report
