"""The rules that drive a tree: start children, hear from their runners, restart or escalate.

:class:`Supervision` builds each level (:class:`~supervisor.tree.model.SupervisorNode`),
launches runners respecting dependencies, turns every exit into a decision
(:mod:`supervisor.tree.decisions`) and carries it out through the lifecycle table. A
nested supervisor runs as one child of its parent through :class:`SubtreeRunner`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from supervisor.tree.children import (
    PROCESS_CONTROL,
    ChildContext,
    Outcome,
    ProcessRunner,
    Runner,
    RunnerHooks,
    ServiceRunner,
    TaskRunner,
    describe_failure,
)
from supervisor.tree.context import Tree
from supervisor.tree.decisions import (
    Escalate,
    NoRestart,
    Restart,
    decide_exit,
    group_note,
    ran_stably,
    restart_group,
    restart_note,
    unmet_dependencies,
    waiting_note,
)
from supervisor.tree.descendants import marks
from supervisor.tree.health import HeartbeatMonitor
from supervisor.tree.lifecycle import (
    DUE_RESTART,
    HELD,
    PENDING,
    STOPPING,
    TABLE,
    Health,
    Phase,
    Readiness,
    ShutdownPhase,
    Trigger,
)
from supervisor.tree.model import (
    ChildRuntime,
    SupervisorNode,
    child_id_of,
    deliver_exit,
    fire,
    start_order,
)
from supervisor.tree.policy import IntensityWindow
from supervisor.tree.shutdown import abort_all, stop_all, stop_in_order
from supervisor.tree.spec import ChildKind, ChildSpec, Policy, ShutdownPolicy, Strategy


class Supervision:
    """Starting, restarting and escalating, for every level of one tree."""

    _log = Logger()

    def __init__(
        self, tree: Tree, heartbeats: HeartbeatMonitor, root_escalated: Callable[[str], None]
    ) -> None:
        self._tree = tree
        self._heartbeats = heartbeats
        self._root_escalated = root_escalated

    # ------------------------------------------------------------------ building

    def build(
        self,
        path: str,
        strategy: Strategy,
        policy: Policy,
        shutdown: ShutdownPolicy,
        specs: Iterable[ChildSpec],
    ) -> SupervisorNode:
        """A level and its children (nested levels included), all stopped or held."""
        node = SupervisorNode(self._tree, path, strategy, policy, shutdown)
        for spec in specs:
            self.adopt(node, spec)
        return node

    def adopt(self, node: SupervisorNode, spec: ChildSpec) -> ChildRuntime:
        """A new child of ``node``, last in declaration order, stopped or held as it asks."""
        policy = spec.policy or node.policy
        shutdown = spec.shutdown or node.shutdown
        path = f"{node.path}/{spec.name}"
        subtree = None
        if spec.kind is ChildKind.SUPERVISOR:
            subtree = self.build(path, spec.strategy, policy, shutdown, spec.children)
        child = ChildRuntime(
            spec=spec,
            path=path,
            node=node,
            policy=policy,
            shutdown=shutdown,
            intensity=IntensityWindow(policy.child_restart_limit, policy.child_restart_window_ms / 1000),
            subtree=subtree,
            phase=Phase.STOPPED if spec.hold is None else Phase(spec.hold),
            message=None if spec.hold is None else f"{spec.hold} by configuration",
            since=self._tree.now(),
        )
        if subtree is not None:
            subtree.owner = child
        node.children[spec.name] = child
        return child

    # ------------------------------------------------------------------ starting

    def start(self, node: SupervisorNode) -> None:
        """Start every child that is not held, by priority then declaration order; a child
        whose dependencies are not running yet waits for them."""
        node.stopping_all = False
        node.escalated = False
        node.failures = node.fresh_failure_window()
        correlation = self._tree.new_correlation()
        for child in start_order(node):
            if child.phase not in HELD:
                self.start_when_ready(child, correlation=correlation)

    def start_when_ready(self, child: ChildRuntime, restart: bool = False, **fields: Any) -> None:
        """Launch now, or wait (in a pending phase) until the dependencies are running and ready.

        ``fields`` are written with the move that launches or defers.
        """
        node = child.node
        if node.stopping_all or self._tree.shutting_down:
            return
        missing = unmet_dependencies(child.spec.dependencies, node.children)
        if missing:
            fields["last_policy_decision"] = waiting_note(missing)
            fire(child, Trigger.DEFER_RESTART if restart else Trigger.DEFER_START, **fields)
            return
        self._launch(child, Trigger.RESTART if restart else Trigger.START, fields)

    def _dependencies_changed(self, node: SupervisorNode) -> None:
        """A child of ``node`` became running and ready: launch the pending ones it unblocked."""
        if not node.pending:
            return
        for child in [c for c in node.children.values() if c in node.pending]:
            if child.phase in PENDING and not unmet_dependencies(child.spec.dependencies, node.children):
                self._launch(child, Trigger.DEPENDENCIES_MET, {})

    def _launch(self, child: ChildRuntime, trigger: Trigger, fields: dict[str, Any]) -> None:
        token = object()
        ended: list[Outcome] = []

        def exited(outcome: Outcome) -> None:
            if not ended:
                ended.append(outcome)
                self._on_exit(child, token, outcome)

        hooks = RunnerHooks(
            running=lambda: self._on_running(child, token),
            exited=exited,
            heartbeat=lambda: self._on_heartbeat(child, token),
            ready=lambda: self._on_ready(child, token),
            log=lambda severity, message, log_fields: self._tree.log(
                severity, message, log_fields, child.correlation or None
            ),
            log_lines=lambda severity, messages, raw, log_fields: self._tree.log_lines(
                severity, messages, raw, log_fields, child.correlation or None
            ),
        )
        runner = self._make_runner(child, hooks)
        fire(
            child,
            trigger,
            token=token,
            generation=child.generation + 1,
            attempt=child.attempt + 1,
            last_heartbeat=None,
            marked_ready=False,
            health=Health.UNKNOWN,
            readiness=Readiness.NOT_READY,
            shutdown_state=ShutdownPhase.IDLE,
            message=None,
            runner=runner,
            **fields,
        )
        try:
            runner.start()
        except PROCESS_CONTROL:
            raise
        except BaseException:
            # a runner that raises fails its child, never the command or the caller above
            failure = Failure()
            self._log.failure("starting {path} raised", failure, path=child.path)
            exited(Outcome(False, "start failed: " + describe_failure(failure)))

    def _make_runner(self, child: ChildRuntime, hooks: RunnerHooks) -> Runner:
        kind = child.spec.kind
        tree = self._tree
        if kind is ChildKind.PROCESS:
            return ProcessRunner(
                child.spec, child.path, hooks, tree.reactor, tree.observability.max_output_line_bytes,
                marks=marks(tree.process_mark, child.path, tree.target_id),
                settle_seconds=child.shutdown.abort_wait_ms / 1000, clock=tree.clock,
                gate=tree.output_gate,
            )
        if kind is ChildKind.SUPERVISOR:
            assert child.subtree is not None
            return SubtreeRunner(self, child.subtree, hooks)
        ctx = ChildContext(child.path, hooks, tree.child_logger(child.path), tree.clock)
        if kind is ChildKind.TASK:
            return TaskRunner(child.spec, ctx, hooks)
        return ServiceRunner(child.spec, ctx, hooks)

    # ------------------------------------------------------------------ what runners report

    def _on_running(self, child: ChildRuntime, token: object) -> None:
        if token is not child.token:
            return
        waits = child.spec.wait_ready and not child.marked_ready
        trigger = Trigger.UP_UNREADY if waits else Trigger.UP
        if (child.phase, trigger) not in TABLE:
            return  # reported after a stop was requested
        fire(
            child,
            trigger,
            started_at=self._tree.now(),
            health=(
                Health.UNKNOWN
                if child.spec.kind is ChildKind.TASK and child.last_heartbeat is None
                else Health.HEALTHY
            ),
            readiness=Readiness.NOT_READY if waits else Readiness.READY,
            failed_starts=0,
        )
        self._dependencies_changed(child.node)

    def _on_ready(self, child: ChildRuntime, token: object) -> None:
        if token is not child.token:
            return
        if (child.phase, Trigger.READY) in TABLE:
            fire(child, Trigger.READY, readiness=Readiness.READY)
            self._dependencies_changed(child.node)
        elif (child.phase, Trigger.READY_EARLY) in TABLE:
            fire(child, Trigger.READY_EARLY, marked_ready=True)  # applied once it runs

    def _on_heartbeat(self, child: ChildRuntime, token: object) -> None:
        if token is child.token:
            self._heartbeats.heard(child)

    def _on_exit(self, child: ChildRuntime, token: object, outcome: Outcome) -> None:
        if token is not child.token:
            return
        if child.phase in STOPPING:
            deliver_exit(child, outcome)  # the stop procedure waiting on it owns what follows
            return
        self._handle_exit(child, outcome)

    # ------------------------------------------------------------------ exits and restarts

    def _handle_exit(self, child: ChildRuntime, outcome: Outcome) -> None:
        node = child.node
        tree = self._tree
        now = tree.now()
        failed = not outcome.normal
        decision = decide_exit(
            outcome,
            child.spec.restart_policy,
            stopping=node.stopping_all or tree.shutting_down,
            stable=ran_stably(child.started_at, now, child.policy.stable_after_ms),
            child_path=child.path,
            child_policy=child.policy,
            recent_restarts=child.intensity.count(now),
            supervisor_path=node.path,
            supervisor_policy=node.policy,
            recent_failures=node.failures.count(now),
            backoff_attempt=child.backoff_attempt,
            rand=tree.rng.random,
            failed_start=outcome.failed_start,
            failed_starts=child.failed_starts,
            start_retries=child.spec.startretries,
        )
        facts = {"outcome": outcome.description, "normal": outcome.normal, "reason": outcome.description}
        ended: dict[str, Any] = {
            "correlation": tree.new_correlation(),
            "token": None,
            "runner": None,
            "health": Health.UNHEALTHY if failed else Health.UNKNOWN,
            "readiness": Readiness.NOT_READY,
        }
        if failed:
            ended["last_failure"] = ended["message"] = outcome.description
        if outcome.failed_start:
            ended["failed_starts"] = child.failed_starts + 1
        if isinstance(decision, NoRestart):
            trigger = Trigger.COMPLETE
            if failed:
                trigger = Trigger.FAIL if decision.report_failure else Trigger.FAIL_UNREPORTED
            fire(child, trigger, facts, last_policy_decision=decision.note, **ended)
            return
        fire(child, Trigger.FAIL if failed else Trigger.COMPLETE, facts, **ended)
        child.intensity.record(now)
        if decision.count_failure:
            node.failures.record(now)
        # a child that ran stably starts counting attempts (and backing off) afresh
        forget = {"attempt": 0} if decision.reset else {}
        if isinstance(decision, Escalate):
            if decision.reset:
                forget["backoff_attempt"] = 0
            self._exceeded(child, decision, forget)
        else:
            self._schedule_restart(child, decision, forget)

    def _exceeded(self, child: ChildRuntime, decision: Escalate, forget: dict[str, int]) -> None:
        node = child.node
        scope = {"scope": decision.scope, "limit": decision.limit, "window_ms": decision.window_ms}
        if decision.scope == "child":
            fire(child, Trigger.EXCEED_RESTARTS, scope, last_policy_decision=decision.note, **forget)
        else:
            fire(child, Trigger.EXCEED_FAILURES, last_policy_decision=decision.note, **forget)
            self._tree.emit("restart_intensity_exceeded", node.path, None, child.correlation, scope)
        self.escalate(node, decision.reason)

    def _schedule_restart(self, child: ChildRuntime, decision: Restart, forget: dict[str, int]) -> None:
        node = child.node
        clock = self._tree.clock
        strategy = node.strategy
        group = restart_group(strategy, node.children.values(), child)
        others = [c for c in group if c is not child]
        delay_ms = decision.delay_ms
        fire(
            child,
            Trigger.SCHEDULE_RESTART,
            {"delay_ms": delay_ms, "attempt": decision.backoff_attempt, "strategy": strategy.value},
            last_policy_decision=restart_note(delay_ms, len(others), strategy),
            backoff_attempt=decision.backoff_attempt,
            **forget,
        )
        if others:
            stopped = stop_in_order(
                reversed(others),
                Trigger.STOP_FOR_RESTART,
                fields={"correlation": child.correlation, "last_policy_decision": group_note(child.path, strategy)},
            )
        else:
            stopped = defer.succeed([])

        def after_stop(_: object) -> None:
            if node.stopping_all or self._tree.shutting_down:
                return
            if decision.delay > 0:
                node.restart_timers[child.name] = clock.callLater(decision.delay, self._restart_now, node, group)
                return

            # With no backoff, still let one reactor turn pass: the I/O that reports the exit
            # (IPC pushes to dashboards) goes out before the new process is spawned.
            def next_turn() -> None:
                node.restart_timers[child.name] = clock.callLater(0, self._restart_now, node, group)

            node.restart_timers[child.name] = clock.callLater(0, next_turn)

        stopped.addCallback(after_stop)

    def _restart_now(self, node: SupervisorNode, group: list[ChildRuntime]) -> None:
        for member in group:
            node.restart_timers.pop(member.name, None)
        for member in group:
            if member.phase in DUE_RESTART and node.children.get(member.name) is member:
                self.start_when_ready(member, restart=True, restart_count=member.restart_count + 1)

    def escalate(self, node: SupervisorNode, reason: str) -> None:
        """Give up on a level: its parent restarts it as a failed child; the root stops the tree."""
        if node.escalated:
            return
        node.escalated = True
        self._tree.emit(
            "supervisor_escalated", node.path, child_id_of(node.path), self._tree.new_correlation(),
            {"reason": reason},
        )
        self._log.error("supervisor {path} escalated: {reason}", path=node.path, reason=reason)
        if node.owner is None:
            self._root_escalated(reason)
        elif isinstance(node.owner.runner, SubtreeRunner):
            node.owner.runner.escalated(reason)


class SubtreeRunner:
    """Runs a nested supervisor as one child of its parent."""

    def __init__(self, supervision: Supervision, node: SupervisorNode, hooks: RunnerHooks) -> None:
        self._supervision = supervision
        self._node = node
        self._hooks = hooks
        self._ended = False

    def start(self) -> None:
        self._supervision.start(self._node)
        if not self._ended:
            self._hooks.running()

    def _end(self, outcome: Outcome) -> None:
        if not self._ended:
            self._ended = True
            self._hooks.exited(outcome)

    def escalated(self, reason: str) -> None:
        """The level gave up: stop what is left of it and end as a failure."""
        stop_all(self._node).addCallback(lambda _: self._end(Outcome(False, f"escalated: {reason}")))

    def request_stop(self) -> None:
        stop_all(self._node).addCallback(lambda _: self._end(Outcome(True, "stopped")))

    def abort(self) -> None:
        abort_all(self._node)

    def fail(self, reason: str) -> None:
        self._supervision.escalate(self._node, reason)
