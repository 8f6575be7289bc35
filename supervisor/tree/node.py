"""One supervisor level: its children, their lifecycle, restarts, strategies and stops.

The root supervisor and every nested one are a :class:`SupervisorNode`. A nested node is
persistent (its rows stay visible while it is stopped); starting and stopping it as a child
of its parent goes through :class:`SubtreeRunner`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from supervisor.tree.children import (
    ChildContext,
    Outcome,
    ProcessRunner,
    Runner,
    RunnerHooks,
    ServiceRunner,
    TaskRunner,
)
from supervisor.tree.lifecycle import (
    ACTIVE,
    HELD,
    Health,
    IllegalTransition,
    Lifecycle,
    Readiness,
    TRANSITIONS,
    ShutdownPhase,
    check_transition,
)
from supervisor.tree.policy import Backoff, IntensityWindow
from supervisor.tree.spec import (
    ChildKind,
    ChildSpec,
    Policy,
    RestartPolicy,
    ShutdownPolicy,
    Strategy,
)
from supervisor.wire.errors import WireError

if TYPE_CHECKING:
    from supervisor.tree.runtime import Tree

L = Lifecycle
ROOT_PATH = "/root"


def child_id_of(path: str) -> str | None:
    """The last component of a path; the root has none."""
    return None if path == ROOT_PATH else path.rsplit("/", 1)[-1]

#: States a caller waiting for a (re)start to settle is waiting for.
SETTLED = frozenset({L.RUNNING, L.FAILED, L.COMPLETED, L.STOPPED, L.PAUSED, L.QUARANTINED})


@attrs.define(eq=False)
class ChildRuntime:
    """Everything the supervisor knows about one child, across its generations."""

    spec: ChildSpec
    path: str
    node: "SupervisorNode"
    policy: Policy
    shutdown: ShutdownPolicy
    backoff: Backoff
    intensity: IntensityWindow
    subtree: "SupervisorNode | None" = None
    state: Lifecycle = L.STOPPED
    health: Health = Health.UNKNOWN
    readiness: Readiness = Readiness.UNKNOWN
    generation: int = 0
    attempt: int = 0
    restart_count: int = 0
    last_failure: str | None = None
    last_policy_decision: str | None = None
    shutdown_state: ShutdownPhase = ShutdownPhase.IDLE
    message: str | None = None
    since: float = 0.0
    correlation: str = ""
    runner: Runner | None = None
    token: object | None = None
    restart_call: Any = None
    waiting: bool = False
    waiting_restart: bool = False
    announce_restart: bool = False
    marked_ready: bool = False
    started_at: float | None = None
    last_heartbeat: float | None = None
    stop_target: Lifecycle = L.STOPPED
    exit_waiters: list[defer.Deferred[Outcome]] = attrs.Factory(list)
    state_waiters: list[tuple[frozenset[Lifecycle], defer.Deferred[Lifecycle]]] = attrs.Factory(
        list
    )

    @property
    def name(self) -> str:
        return self.spec.name


def _graceful_seconds(child: ChildRuntime) -> float:
    """How long a polite stop may take; a subtree gets the sum of its members' budgets."""
    own = child.shutdown.graceful_timeout_ms / 1000
    if child.subtree is None:
        return own
    return own + sum(
        _graceful_seconds(c) + c.shutdown.abort_wait_ms / 1000
        for c in child.subtree.children.values()
    )


class SupervisorNode:
    """Children of one supervisor, in declaration order, and the rules that drive them."""

    _log = Logger()

    def __init__(
        self,
        tree: "Tree",
        path: str,
        strategy: Strategy,
        policy: Policy,
        shutdown: ShutdownPolicy,
        specs: Iterable[ChildSpec],
        on_escalate: Callable[[str], None],
    ) -> None:
        self.tree = tree
        self.path = path
        self.strategy = strategy
        self.policy = policy
        self.shutdown = shutdown
        self.on_escalate = on_escalate
        self.children: dict[str, ChildRuntime] = {}
        self._waiting: set[ChildRuntime] = set()  # children held back by their dependencies
        self.failures = self._failure_window()
        self.stopping_all = False
        self.escalated = False
        self.last_stop_reports: list[dict[str, Any]] = []
        for spec in specs:
            self._adopt(spec)

    def _failure_window(self) -> IntensityWindow:
        return IntensityWindow(
            self.policy.supervisor_failure_limit, self.policy.supervisor_failure_window_ms / 1000
        )

    def _adopt(self, spec: ChildSpec) -> ChildRuntime:
        policy = spec.policy or self.policy
        shutdown = spec.shutdown or self.shutdown
        child = ChildRuntime(
            spec=spec,
            path=f"{self.path}/{spec.name}",
            node=self,
            policy=policy,
            shutdown=shutdown,
            backoff=Backoff(
                policy.initial_backoff_ms / 1000,
                policy.max_backoff_ms / 1000,
                policy.jitter_ratio,
                self.tree.rng,
            ),
            intensity=IntensityWindow(
                policy.child_restart_limit, policy.child_restart_window_ms / 1000
            ),
            since=self.tree.now(),
        )
        if spec.kind is ChildKind.SUPERVISOR:
            child.subtree = SupervisorNode(
                self.tree,
                child.path,
                spec.strategy,
                policy,
                shutdown,
                spec.children,
                on_escalate=lambda reason: None,
            )
        if spec.hold is not None:
            child.state = Lifecycle(spec.hold)
            child.message = f"{spec.hold} by configuration"
        self.children[spec.name] = child
        return child

    # ------------------------------------------------------------------ state changes

    def update(self, child: ChildRuntime, state: Lifecycle | None = None, **fields: Any) -> None:
        """Apply a lifecycle move (checked against the table) and field updates, then publish."""
        if state is not None and state is not child.state:
            check_transition(child.path, child.state, state)
            child.state = state
            child.since = self.tree.now()
        for name, value in fields.items():
            setattr(child, name, value)
        if "waiting" in fields:
            (self._waiting.add if child.waiting else self._waiting.discard)(child)
        self.tree.changed(child)
        if state is not None:
            waiting = child.state_waiters
            child.state_waiters = []
            for wanted, d in waiting:
                if child.state in wanted:
                    d.callback(child.state)
                else:
                    child.state_waiters.append((wanted, d))

    def emit(self, child: ChildRuntime, event_type: str, **payload: Any) -> None:
        self.tree.emit(event_type, child.path, child.name, child.correlation, payload)

    def wait_for(self, child: ChildRuntime, states: frozenset[Lifecycle]) -> defer.Deferred[Lifecycle]:
        """Fires with the child's state as soon as it is one of ``states``."""
        if child.state in states:
            return defer.succeed(child.state)
        d: defer.Deferred[Lifecycle] = defer.Deferred()
        child.state_waiters.append((states, d))
        return d

    # ------------------------------------------------------------------ starting

    def start(self) -> None:
        """Start every child that is not held, in declaration order, respecting dependencies."""
        self.stopping_all = False
        self.escalated = False
        self.failures = self._failure_window()
        correlation = self.tree.new_correlation()
        for child in list(self.children.values()):
            if child.state not in HELD:
                child.correlation = correlation
                self.start_when_ready(child, restarted=False)

    def _dependencies_ready(self, child: ChildRuntime) -> list[str]:
        """Names of the dependencies that are not yet running and ready."""
        missing = []
        for name in child.spec.dependencies:
            dep = self.children.get(name)
            if dep is None:
                continue
            if dep.state is not L.RUNNING or dep.readiness is Readiness.NOT_READY:
                missing.append(name)
        return missing

    def start_when_ready(self, child: ChildRuntime, restarted: bool) -> None:
        if self.stopping_all or self.tree.shutting_down:
            return
        missing = self._dependencies_ready(child)
        if missing:
            self.update(
                child,
                waiting=True,
                waiting_restart=restarted,
                last_policy_decision="waiting for " + ", ".join(missing),
            )
            return
        self._launch(child, restarted)

    def _recheck_waiting(self) -> None:
        if not self._waiting:
            return
        for child in [c for c in self.children.values() if c in self._waiting]:
            if child.waiting and not self._dependencies_ready(child):
                self._launch(child, child.waiting_restart)

    def _launch(self, child: ChildRuntime, restarted: bool) -> None:
        token = object()
        hooks = RunnerHooks(
            running=lambda: self._on_running(child, token),
            exited=lambda outcome: self._on_exit(child, token, outcome),
            heartbeat=lambda: self._on_heartbeat(child, token),
            ready=lambda: self._on_ready(child, token),
            log=lambda severity, message, fields: self.tree.log(
                severity, message, fields, child.correlation or None
            ),
        )
        self.update(
            child,
            L.STARTING,
            waiting=False,
            token=token,
            generation=child.generation + 1,
            attempt=child.attempt + 1,
            announce_restart=restarted,
            last_heartbeat=None,
            marked_ready=False,
            health=Health.UNKNOWN,
            readiness=Readiness.NOT_READY,
            shutdown_state=ShutdownPhase.IDLE,
            message=None,
            runner=self._make_runner(child, hooks),
        )
        self.emit(child, "child_started", generation=child.generation, attempt=child.attempt)
        assert child.runner is not None
        child.runner.start()

    def _make_runner(self, child: ChildRuntime, hooks: RunnerHooks) -> Runner:
        kind = child.spec.kind
        if kind is ChildKind.PROCESS:
            return ProcessRunner(
                child.spec, child.path, hooks, self.tree.reactor,
                self.tree.observability.max_output_line_bytes,
            )
        if kind is ChildKind.SUPERVISOR:
            assert child.subtree is not None
            return SubtreeRunner(child.subtree, hooks)
        ctx = ChildContext(child.path, hooks, self.tree.child_logger(child.path), self.tree.clock)
        if kind is ChildKind.TASK:
            return TaskRunner(child.spec, ctx, hooks)
        return ServiceRunner(child.spec, ctx, hooks)

    def _on_running(self, child: ChildRuntime, token: object) -> None:
        if token is not child.token or child.state is not L.STARTING:
            return
        waits = child.spec.wait_ready and not child.marked_ready
        self.update(
            child,
            L.RUNNING,
            started_at=self.tree.now(),
            health=(
                Health.UNKNOWN
                if child.spec.kind is ChildKind.TASK and child.last_heartbeat is None
                else Health.HEALTHY
            ),
            readiness=Readiness.NOT_READY if waits else Readiness.READY,
        )
        self.emit(child, "child_running", generation=child.generation)
        if not waits:
            self.emit(child, "child_ready")
        if child.announce_restart:
            self.emit(child, "child_restarted", restart_count=child.restart_count)
        self._recheck_waiting()

    def _on_ready(self, child: ChildRuntime, token: object) -> None:
        if token is not child.token or child.readiness is Readiness.READY:
            return
        if child.state is not L.RUNNING:
            child.marked_ready = True  # applied when the child is running
            return
        self.update(child, readiness=Readiness.READY)
        self.emit(child, "child_ready")
        self._recheck_waiting()

    def _on_heartbeat(self, child: ChildRuntime, token: object) -> None:
        if token is not child.token:
            return
        child.last_heartbeat = self.tree.now()
        self.tree.watch_heartbeat(child)
        if child.state is L.RUNNING and child.health is not Health.HEALTHY:
            self.update(child, health=Health.HEALTHY)

    def check_stale(self, child: ChildRuntime, now: float) -> bool:
        """Mark the child stale when its heartbeats stopped; False when no longer watched."""
        if child.state is not L.RUNNING or child.last_heartbeat is None:
            return False
        silent_ms = (now - child.last_heartbeat) * 1000
        if silent_ms >= child.policy.stale_after_ms and child.health is not Health.STALE:
            self.update(child, health=Health.STALE)
            self.emit(child, "child_heartbeat_stale", silent_ms=round(silent_ms))
            if child.spec.stale_is_failure and child.runner is not None:
                child.runner.fail(f"heartbeat stale for {round(silent_ms)} ms")
        return True

    # ------------------------------------------------------------------ exits and restarts

    def _on_exit(self, child: ChildRuntime, token: object, outcome: Outcome) -> None:
        if token is not child.token:
            return
        child.token = None
        child.runner = None
        if child.state is L.STOPPING:
            # the stop procedure waiting on this exit owns what happens next
            waiters, child.exit_waiters = child.exit_waiters, []
            for d in waiters:
                d.callback(outcome)
            return
        self._handle_exit(child, outcome)

    def _restart_wanted(self, child: ChildRuntime, outcome: Outcome) -> bool:
        policy = child.spec.restart_policy
        if policy is RestartPolicy.PERMANENT:
            return True
        if policy is RestartPolicy.TRANSIENT:
            return not outcome.normal
        return False

    def _handle_exit(self, child: ChildRuntime, outcome: Outcome) -> None:
        now = self.tree.now()
        child.correlation = self.tree.new_correlation()
        self.emit(child, "child_exited", outcome=outcome.description, normal=outcome.normal)
        failed = not outcome.normal
        after = L.FAILED if failed else L.COMPLETED
        common: dict[str, Any] = {
            "health": Health.UNHEALTHY if failed else Health.UNKNOWN,
            "readiness": Readiness.NOT_READY,
        }
        if failed:
            common["last_failure"] = outcome.description
            common["message"] = outcome.description
        if self.stopping_all or self.tree.shutting_down:
            self.update(child, after, last_policy_decision="not restarted (shutting down)", **common)
            return
        if not self._restart_wanted(child, outcome):
            policy = child.spec.restart_policy.value
            self.update(child, after, last_policy_decision=f"not restarted ({policy})", **common)
            if failed:
                self.emit(child, "child_failed", reason=outcome.description)
            return
        self.update(child, after, **common)
        if failed:
            self.emit(child, "child_failed", reason=outcome.description)
        if child.started_at is not None and (now - child.started_at) * 1000 >= child.policy.stable_after_ms:
            child.backoff.reset()
            child.attempt = 0
        if child.intensity.record(now):
            limit, window = child.policy.child_restart_limit, child.policy.child_restart_window_ms
            decision = f"restart intensity exceeded ({limit} in {window} ms): escalate"
            self.update(child, last_policy_decision=decision)
            self.emit(
                child, "restart_intensity_exceeded", scope="child", limit=limit, window_ms=window
            )
            self.escalate(f"{child.path} restarted more than {limit} times in {window} ms")
            return
        if failed and self.failures.record(now):
            limit, window = self.policy.supervisor_failure_limit, self.policy.supervisor_failure_window_ms
            self.update(child, last_policy_decision="supervisor failure limit exceeded: escalate")
            self.tree.emit(
                "restart_intensity_exceeded",
                self.path,
                None,
                child.correlation,
                {"scope": "supervisor", "limit": limit, "window_ms": window},
            )
            self.escalate(f"{self.path} saw more than {limit} failures in {window} ms")
            return
        self._schedule_restart(child)

    def _restart_group(self, child: ChildRuntime) -> list[ChildRuntime]:
        """The trigger plus the siblings its strategy restarts with it, in declaration order."""
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        siblings = list(self.children.values())
        if self.strategy is Strategy.REST_FOR_ONE:
            siblings = siblings[siblings.index(child) :]
        return [
            c
            for c in siblings
            if c is child or c.state in ACTIVE or c.state is L.RESTARTING or c.waiting
        ]

    def _schedule_restart(self, child: ChildRuntime) -> None:
        delay = child.backoff.next_delay()
        delay_ms = round(delay * 1000)
        group = self._restart_group(child)
        others = [c for c in group if c is not child]
        decision = f"restart after {delay_ms} ms (backoff)"
        if others:
            decision += f" with {len(others)} sibling(s) ({self.strategy.value})"
        self.emit(child, "backoff_scheduled", delay_ms=delay_ms, attempt=child.backoff.attempt)
        self.update(child, L.RESTARTING, last_policy_decision=decision)
        self.emit(child, "child_restarting", delay_ms=delay_ms, strategy=self.strategy.value)
        for sibling in others:
            sibling.correlation = child.correlation
            sibling.last_policy_decision = f"restart with {child.path} ({self.strategy.value})"
        stopped = self.stop_in_order(list(reversed(others)), L.RESTARTING)

        def after_stop(_: object) -> None:
            if self.stopping_all or self.tree.shutting_down:
                return
            if delay > 0:
                child.restart_call = self.tree.clock.callLater(delay, self._restart_now, group)
                return

            # With no backoff, still let one reactor turn pass: the I/O that reports the exit
            # (IPC pushes to dashboards) goes out before the new process is spawned.
            def next_turn() -> None:
                child.restart_call = self.tree.clock.callLater(0, self._restart_now, group)

            child.restart_call = self.tree.clock.callLater(0, next_turn)

        stopped.addCallback(after_stop)

    def _restart_now(self, group: list[ChildRuntime]) -> None:
        for member in group:
            member.restart_call = None
        for member in group:
            if member.state is L.RESTARTING and member.name in self.children:
                member.restart_count += 1
                self.start_when_ready(member, restarted=True)

    def escalate(self, reason: str) -> None:
        """Give up on this level: tell the parent (or, at the root, stop the tree)."""
        if self.escalated:
            return
        self.escalated = True
        self.tree.emit(
            "supervisor_escalated", self.path, child_id_of(self.path), self.tree.new_correlation(),
            {"reason": reason},
        )
        self._log.error("supervisor {path} escalated: {reason}", path=self.path, reason=reason)
        self.on_escalate(reason)

    # ------------------------------------------------------------------ stopping

    def _within(self, d: defer.Deferred[Any], seconds: float) -> defer.Deferred[bool]:
        """True if ``d`` fires within ``seconds`` of the tree's clock, else False (d is left alone)."""
        result: defer.Deferred[bool] = defer.Deferred()
        call = self.tree.clock.callLater(seconds, lambda: result.called or result.callback(False))

        def fired(value: object) -> object:
            if call.active():
                call.cancel()
            if not result.called:
                result.callback(True)
            return value

        d.addBoth(fired)
        return result

    def _phase(self, child: ChildRuntime, phase: ShutdownPhase, staged: bool) -> None:
        if staged:
            self.update(child, shutdown_state=phase)
            self.emit(child, "shutdown_phase_changed", phase=phase.value)

    def stop_child(
        self, child: ChildRuntime, target: Lifecycle, staged: bool = False
    ) -> defer.Deferred[dict[str, Any]]:
        """Stop politely, then forcefully, then settle in ``target``; fires with a report."""
        return defer.Deferred.fromCoroutine(self._stop(child, target, staged))

    async def _stop(
        self, child: ChildRuntime, target: Lifecycle, staged: bool
    ) -> dict[str, Any]:
        began = self.tree.now()
        if child.restart_call is not None and child.restart_call.active():
            child.restart_call.cancel()
        child.restart_call = None
        child.waiting = False
        self._waiting.discard(child)
        report: dict[str, Any] = {"child_path": child.path, "outcome": "already_stopped"}
        self._phase(child, ShutdownPhase.REQUEST_STOP, staged)
        if child.state is L.STOPPING:
            child.stop_target = target
            await self.wait_for(child, frozenset({target, L.STOPPED, L.PAUSED, L.QUARANTINED, L.RESTARTING}))
            report["outcome"] = "stopped"
        elif child.runner is None:
            if child.state is not target and target in TRANSITIONS[child.state]:
                self.update(child, target)
        else:
            runner = child.runner
            exited: defer.Deferred[Outcome] = defer.Deferred()
            child.exit_waiters.append(exited)
            self.update(child, L.STOPPING, stop_target=target)
            runner.request_stop()
            self._phase(child, ShutdownPhase.GRACEFUL_DRAIN, staged)
            report["outcome"] = "stopped"
            if not await self._within(exited, _graceful_seconds(child)):
                self._phase(child, ShutdownPhase.ABORT_STRAGGLERS, staged)
                runner.abort()
                report["outcome"] = "aborted"
                if not await self._within(exited, child.shutdown.abort_wait_ms / 1000):
                    report["outcome"] = "not_stopped"
                    self._log.error("child {path} did not stop even after abort", path=child.path)
            self._phase(child, ShutdownPhase.RECONCILE, staged)
            if exited.called:
                report["exit"] = exited.result.description if isinstance(exited.result, Outcome) else None
            child.exit_waiters = [d for d in child.exit_waiters if d is not exited]
            self.update(
                child,
                child.stop_target,
                token=None,
                runner=None,
                health=Health.UNKNOWN,
                readiness=Readiness.UNKNOWN,
            )
        if child.subtree is not None:
            report["children"] = child.subtree.last_stop_reports
        self._phase(child, ShutdownPhase.COMPLETED, staged)
        report["duration_ms"] = round((self.tree.now() - began) * 1000, 3)
        return report

    def stop_in_order(
        self, children: list[ChildRuntime], target: Lifecycle, staged: bool = False
    ) -> defer.Deferred[list[dict[str, Any]]]:
        """Stop ``children`` one after the other, in the order given."""

        async def run() -> list[dict[str, Any]]:
            reports = []
            for child in children:
                reports.append(await self.stop_child(child, target, staged))
            return reports

        return defer.Deferred.fromCoroutine(run())

    def stop_all(self, staged: bool = True) -> defer.Deferred[list[dict[str, Any]]]:
        """Stop every child in reverse declaration order; nothing restarts meanwhile."""
        self.stopping_all = True
        for child in self.children.values():
            if child.restart_call is not None and child.restart_call.active():
                child.restart_call.cancel()
            child.restart_call = None

        def remember(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
            self.last_stop_reports = reports
            return reports

        return self.stop_in_order(list(reversed(self.children.values())), L.STOPPED, staged).addCallback(remember)

    def abort_all(self) -> None:
        for child in self.children.values():
            if child.runner is not None:
                child.runner.abort()

    # ------------------------------------------------------------------ commands

    def pause(self, child: ChildRuntime, target: Lifecycle) -> defer.Deferred[dict[str, Any]]:
        """Stop and hold the child in ``paused`` or ``quarantined``."""
        if child.state is target or child.state is L.STOPPING or (
            target is L.PAUSED and child.state is L.QUARANTINED
        ):
            raise IllegalTransition(child.path, child.state, target)
        return self.stop_child(child, target)

    def resume(self, child: ChildRuntime) -> defer.Deferred[Lifecycle]:
        if child.state not in HELD:
            raise IllegalTransition(child.path, child.state, "resumed")
        child.backoff.reset()
        child.attempt = 0
        child.intensity = IntensityWindow(child.intensity.limit, child.intensity.window)
        self.update(child, L.STOPPED, message=None, last_policy_decision="resumed")
        self.start_when_ready(child, restarted=False)
        return self.wait_for(child, SETTLED)

    def restart(self, child: ChildRuntime) -> defer.Deferred[Lifecycle]:
        if child.state in HELD or child.state is L.STOPPING:
            raise IllegalTransition(child.path, child.state, "restarted")

        async def run() -> Lifecycle:
            if child.state in ACTIVE:
                await self.stop_child(child, L.RESTARTING)
            elif child.restart_call is not None and child.restart_call.active():
                child.restart_call.cancel()
                child.restart_call = None
            child.restart_count += 1
            child.last_policy_decision = "restarted by command"
            self.start_when_ready(child, restarted=True)
            return await self.wait_for(child, SETTLED)

        return defer.Deferred.fromCoroutine(run())

    def remove(self, child: ChildRuntime) -> defer.Deferred[dict[str, Any]]:
        dependents = [c.name for c in self.children.values() if child.name in c.spec.dependencies]
        if dependents:
            raise WireError(
                "illegal_transition",
                "command_execute",
                f"cannot remove {child.path}: {', '.join(dependents)} depend(s) on it",
            )

        async def run() -> dict[str, Any]:
            report = await self.stop_child(child, L.STOPPED)
            self.children.pop(child.name, None)
            self._waiting.discard(child)
            self.tree.topology_changed()
            self.emit(child, "child_removed")
            return report

        return defer.Deferred.fromCoroutine(run())

    def add(self, spec: ChildSpec, correlation: str) -> ChildRuntime:
        if spec.name in self.children:
            raise WireError(
                "child_exists", "command_execute", f"{self.path}/{spec.name} already exists"
            )
        for dep in spec.dependencies:
            if dep not in self.children:
                raise WireError(
                    "invalid_manifest",
                    "command_execute",
                    f"dependencies: {dep!r} is not a child of {self.path}",
                )
        child = self._adopt(spec)
        child.correlation = correlation
        self.tree.topology_changed()
        self.emit(child, "child_added", kind=spec.kind.value)
        self.start_when_ready(child, restarted=False)
        return child


class SubtreeRunner:
    """Runs a nested supervisor as one child of its parent."""

    def __init__(self, node: SupervisorNode, hooks: RunnerHooks) -> None:
        self._node = node
        self._hooks = hooks
        self._ended = False

    def start(self) -> None:
        self._node.on_escalate = self._escalated
        self._node.start()
        if not self._ended:
            self._hooks.running()

    def _end(self, outcome: Outcome) -> None:
        if not self._ended:
            self._ended = True
            self._hooks.exited(outcome)

    def _escalated(self, reason: str) -> None:
        self._node.stop_all().addCallback(
            lambda _: self._end(Outcome(False, f"escalated: {reason}"))
        )

    def request_stop(self) -> None:
        self._node.stop_all().addCallback(lambda _: self._end(Outcome(True, "stopped")))

    def abort(self) -> None:
        self._node.abort_all()

    def fail(self, reason: str) -> None:
        self._node.escalate(reason)
