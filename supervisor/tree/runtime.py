"""The public face of a supervision tree: an ``IService`` with a command API and a state model."""

from __future__ import annotations

import itertools
import random
from typing import Any, Callable

import attrs
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    ILogObserver,
    LogLevel,
    Logger,
    formatEvent,
    globalLogPublisher,
)
from zope.interface import provider

from supervisor.tree.journal import EventRecord, LogRecord, Ring
from supervisor.tree.lifecycle import IllegalTransition, Lifecycle
from supervisor.tree.node import ROOT_PATH, ChildRuntime, SupervisorNode, child_id_of
from supervisor.tree.spec import ChildSpec, SupervisorSpec
from supervisor.tree.state import dashboard_state, runtime_row, topology, walk
from supervisor.wire.vocabulary import COMMANDS, event_severity
from supervisor.wire.errors import WireError

_LEVELS = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warning",
    LogLevel.error: "error",
    LogLevel.critical: "error",
}

#: Marks log events that were already put in a tree's log ring by a child logger.
RECORDED_KEY = "supervisor_log_recorded"


def severity_of(level: LogLevel | None) -> str:
    return _LEVELS.get(level, "info") if level is not None else "info"


def config_version(spec: SupervisorSpec) -> str:
    """A short, human-readable digest of the settings that shape the tree's behaviour."""
    return (
        f"supervisor-{spec.strategy.value}"
        f"-policy-{spec.policy.child_restart_limit}-{spec.policy.supervisor_failure_limit}"
        f"-shutdown-{spec.shutdown.graceful_timeout_ms}"
        f"-observe-{spec.observability.event_journal_capacity}"
    )


class Tree:
    """What every level of one tree shares: time, the journals, the state generation."""

    def __init__(
        self,
        spec: SupervisorSpec,
        clock: IReactorTime,
        reactor: Any,
        target_id: str,
        rng: random.Random,
    ) -> None:
        self.clock = clock
        self.reactor = reactor
        self.target_id = target_id
        self.rng = rng
        self.observability = spec.observability
        self.config_version = config_version(spec)
        self.events: Ring[EventRecord] = Ring(spec.observability.event_journal_capacity)
        self.logs: Ring[LogRecord] = Ring(spec.observability.log_journal_capacity)
        self.state_generation = 0
        self.shutting_down = False
        self.metrics: dict[str, int] = {}
        self._state_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._heartbeating: set[ChildRuntime] = set()
        self._correlations = itertools.count(1)
        self.topology_source: Callable[[], dict[str, Any]] = lambda: {}
        self.rows_source: Callable[[], list[dict[str, Any]]] = lambda: []

    def now(self) -> float:
        return self.clock.seconds()

    def new_correlation(self) -> str:
        return f"incident-{next(self._correlations)}"

    def emit(
        self,
        event_type: str,
        path: str,
        child_id: str | None,
        correlation: str,
        payload: dict[str, Any],
    ) -> EventRecord:
        """Append one event to the journal (and count it when metrics are on)."""
        if self.observability.metrics_enabled:
            self.metrics[event_type] = self.metrics.get(event_type, 0) + 1
        now = self.now()
        return self.events.append(
            lambda sequence: EventRecord(
                target_id=self.target_id,
                sequence=sequence,
                correlation_id=correlation or self.new_correlation(),
                event_type=event_type,
                severity=event_severity(event_type),
                target_path=path,
                child_id=child_id,
                occurred_at=now,
                config_version=self.config_version,
                payload=payload,
            )
        )

    def log(
        self,
        severity: str,
        message: str,
        fields: dict[str, Any],
        correlation: str | None = None,
    ) -> LogRecord:
        now = self.now()
        return self.logs.append(
            lambda sequence: LogRecord(
                target_id=self.target_id,
                sequence=sequence,
                correlation_id=correlation,
                severity=severity,
                message=message,
                fields=fields,
                occurred_at=now,
            )
        )

    def child_logger(self, path: str) -> Logger:
        """A logger whose events land in this tree's log ring and then in the global log."""

        @provider(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            fields = {
                k: v
                for k, v in event.items()
                if not k.startswith("log_") and isinstance(v, (str, int, float, bool, type(None)))
            }
            fields["child_path"] = path
            self.log(severity_of(event.get("log_level")), formatEvent(event), fields)
            event[RECORDED_KEY] = True
            globalLogPublisher(event)

        return Logger(namespace=f"supervisor.child{path.replace('/', '.')}", observer=observe)

    # state publication

    def subscribe_state(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._state_listeners.append(listener)
        return lambda: self._state_listeners.remove(listener) if listener in self._state_listeners else None

    def _publish(self, delta: dict[str, Any]) -> None:
        for listener in list(self._state_listeners):
            listener(delta)

    def changed(self, child: ChildRuntime) -> None:
        self.state_generation += 1
        if self._state_listeners:
            self._publish({"state_generation": self.state_generation, "runtime_state": [runtime_row(child)]})

    def topology_changed(self) -> None:
        self.state_generation += 1
        if self._state_listeners:
            self._publish(
                {
                    "state_generation": self.state_generation,
                    "topology": self.topology_source(),
                    "runtime_state": self.rows_source(),
                }
            )

    # heartbeat staleness

    def watch_heartbeat(self, child: ChildRuntime) -> None:
        self._heartbeating.add(child)

    def check_heartbeats(self) -> None:
        now = self.now()
        for child in list(self._heartbeating):
            if not child.node.check_stale(child, now):
                self._heartbeating.discard(child)


@attrs.frozen
class CommandRequest:
    """One operator command, as the tree sees it (wire details stay in the IPC layer)."""

    command: str
    command_id: str
    requested_by: str
    reason: str
    child_path: str | None = None
    child_manifest: Any = None


@attrs.frozen
class CommandOutcome:
    """What a command did: ``completed``, or ``rejected``/``failed`` with an error."""

    command_id: str
    status: str
    error: WireError | None = None
    affected: tuple[str, ...] = ()
    report: Any = None

    @property
    def accepted(self) -> bool:
        return self.status == "completed"


ManifestParser = Callable[[Any], ChildSpec]


class Supervisor(Service):
    """A supervision tree as a Twisted service.

    ``Supervisor(spec, clock=reactor)`` builds the tree; ``setServiceParent(app)`` (or
    ``startService()``) starts it; ``stopService()`` runs the staged shutdown and fires with
    the per-child report. Children are started in declaration order, stopped in reverse.
    """

    _log = Logger()

    def __init__(
        self,
        spec: SupervisorSpec,
        *,
        clock: IReactorTime | None = None,
        reactor: Any = None,
        target_id: str = "local",
        rng: random.Random | None = None,
        manifest_parser: ManifestParser | None = None,
    ) -> None:
        if reactor is None or clock is None:
            from twisted.internet import reactor as default_reactor

            reactor = reactor if reactor is not None else default_reactor
            clock = clock if clock is not None else reactor
        self.spec = spec
        self.setName("supervisor")
        self.tree = Tree(spec, clock, reactor, target_id, rng or random.Random())
        self.root = SupervisorNode(
            self.tree,
            ROOT_PATH,
            spec.strategy,
            spec.policy,
            spec.shutdown,
            spec.children,
            on_escalate=self._root_escalated,
        )
        self.tree.topology_source = lambda: topology(self)
        self.tree.rows_source = lambda: [runtime_row(c) for c in walk(self.root)]
        self._manifest_parser = manifest_parser
        self._stale_loop = task.LoopingCall(self.tree.check_heartbeats)
        self._stale_loop.clock = clock
        self._shutdown: defer.Deferred[dict[str, Any]] | None = None
        self._stopped_observers: list[Callable[[dict[str, Any]], None]] = []
        self.status = "stopped"
        self.stop_reason: str | None = None

    @property
    def events(self) -> Ring[EventRecord]:
        return self.tree.events

    @property
    def logs(self) -> Ring[LogRecord]:
        return self.tree.logs

    @property
    def target_id(self) -> str:
        return self.tree.target_id

    # ------------------------------------------------------------------ service

    def startService(self) -> None:
        Service.startService(self)
        self.status = "running"
        self.tree.topology_changed()
        self._stale_loop.start(self.spec.policy.heartbeat_interval_ms / 1000, now=False)
        self.root.start()

    def stopService(self) -> defer.Deferred[dict[str, Any]]:
        Service.stopService(self)
        return self.shutdown("service stopped")

    def on_tree_stopped(self, observer: Callable[[dict[str, Any]], None]) -> None:
        """Call ``observer(report)`` once the tree has completed a shutdown."""
        self._stopped_observers.append(observer)

    def shutdown(self, reason: str) -> defer.Deferred[dict[str, Any]]:
        """Staged shutdown in reverse declaration order; fires with the shutdown report.

        Calling it again while a shutdown runs (or after) returns the same result.
        """
        if self._shutdown is None:
            self._shutdown = defer.Deferred.fromCoroutine(self._run_shutdown(reason))
        result: defer.Deferred[dict[str, Any]] = defer.Deferred()

        def relay(report: Any) -> Any:
            result.callback(report)
            return report

        self._shutdown.addBoth(relay)
        return result

    async def _run_shutdown(self, reason: str) -> dict[str, Any]:
        began = self.tree.now()
        self.stop_reason = reason
        self.status = "stopping"
        self.tree.shutting_down = True
        self.tree.topology_changed()
        correlation = self.tree.new_correlation()
        self._log.info("supervision tree stopping: {reason}", reason=reason)
        for phase in ("request_stop", "graceful_drain"):
            self.tree.emit("shutdown_phase_changed", ROOT_PATH, None, correlation, {"phase": phase, "reason": reason})
        reports = await self.root.stop_all(staged=True)
        if any(r["outcome"] in ("aborted", "not_stopped") for r in _flatten(reports)):
            self.tree.emit("shutdown_phase_changed", ROOT_PATH, None, correlation, {"phase": "abort_stragglers"})
        for phase in ("reconcile", "completed"):
            self.tree.emit("shutdown_phase_changed", ROOT_PATH, None, correlation, {"phase": phase})
        if self._stale_loop.running:
            self._stale_loop.stop()
        self.status = "stopped"
        self.tree.topology_changed()
        report = {
            "reason": reason,
            "children": reports,
            "duration_ms": round((self.tree.now() - began) * 1000, 3),
        }
        self.tree.emit("tree_stopped", ROOT_PATH, None, correlation, {"reason": reason})
        for observer in self._stopped_observers:
            observer(report)
        return report

    def _root_escalated(self, reason: str) -> None:
        self._log.critical("root supervisor escalated, stopping the tree: {reason}", reason=reason)
        self.shutdown(f"escalated: {reason}")

    # ------------------------------------------------------------------ inspection

    def state(self, display_name: str | None = None) -> dict[str, Any]:
        """The §1 DashboardState, computed now."""
        return dashboard_state(self, display_name or self.tree.target_id)

    def subscribe_state(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``listener(delta)`` after every change; returns the unsubscribe function."""
        return self.tree.subscribe_state(listener)

    def rows(self, paths: Any = None) -> list[dict[str, Any]]:
        """RuntimeState rows, all of them or those of ``paths`` that still exist."""
        if paths is None:
            return [runtime_row(c) for c in walk(self.root)]
        found = []
        for path in paths:
            try:
                found.append(runtime_row(self.child(path)))
            except WireError:
                pass
        return found

    def child(self, path: str) -> ChildRuntime:
        """The child at ``path`` (``/root/a/b``); unknown paths raise ``unknown_child``."""
        node = self.root
        parts = path.split("/")
        if len(parts) < 3 or parts[0] != "" or parts[1] != "root":
            raise WireError("unknown_child", "command_execute", f"no child at {path}", self.target_id)
        found: ChildRuntime | None = None
        for name in parts[2:]:
            if node is None or name not in node.children:
                raise WireError("unknown_child", "command_execute", f"no child at {path}", self.target_id)
            found = node.children[name]
            node = found.subtree
        assert found is not None
        return found

    def supervisor_node(self, path: str | None) -> SupervisorNode:
        if path in (None, "", ROOT_PATH):
            return self.root
        child = self.child(path)
        if child.subtree is None:
            raise WireError(
                "invalid_manifest", "command_execute", f"{path} is not a supervisor", self.target_id
            )
        return child.subtree

    # ------------------------------------------------------------------ commands

    def execute(self, request: CommandRequest) -> defer.Deferred[CommandOutcome]:
        """Run one command; always fires with a :class:`CommandOutcome`, never errbacks."""
        return defer.Deferred.fromCoroutine(self._execute(request))

    async def _execute(self, request: CommandRequest) -> CommandOutcome:
        def refuse(status: str, code: str, stage: str, message: str) -> CommandOutcome:
            error = WireError(code, stage, message, self.target_id)
            return CommandOutcome(request.command_id, status, error)

        if request.command not in COMMANDS:
            return refuse("rejected", "unsupported_command", "command_validate", f"unknown command {request.command}")
        if not request.reason or not request.reason.strip():
            return refuse("rejected", "empty_reason", "command_validate", "a non-blank reason is required")
        if not request.requested_by or not request.requested_by.strip():
            return refuse("rejected", "validation_failed", "command_validate", "requested_by is required")
        path = request.child_path or ROOT_PATH
        audit = self.tree.observability.audit_enabled
        if audit:
            self.tree.emit(
                "command_received", path, child_id_of(path), request.command_id,
                {"command": request.command, "requested_by": request.requested_by, "reason": request.reason},
            )
        try:
            if self.tree.shutting_down:
                raise WireError("tree_shutting_down", "command_execute", "the tree is shutting down", self.target_id)
            affected, report = await self._dispatch(request)
            outcome = CommandOutcome(request.command_id, "completed", None, affected, report)
        except WireError as e:
            e.target_id = self.target_id
            outcome = CommandOutcome(request.command_id, "failed", e)
        except IllegalTransition as e:
            error = WireError("illegal_transition", "command_execute", str(e), self.target_id)
            outcome = CommandOutcome(request.command_id, "failed", error, (e.path,))
        if audit:
            self.tree.emit(
                "command_completed", path, child_id_of(path), request.command_id,
                {
                    "command": request.command,
                    "status": outcome.status,
                    "error": outcome.error.code if outcome.error else None,
                },
            )
        return outcome

    async def _dispatch(self, request: CommandRequest) -> tuple[tuple[str, ...], Any]:
        who = {"requested_by": request.requested_by, "reason": request.reason}
        name = request.command
        if name == "shutdown_tree":
            report = await self.shutdown(f"shutdown_tree by {request.requested_by}: {request.reason}")
            return (), report
        if name == "add_child":
            return self._add(request, who)
        if not request.child_path:
            raise WireError("unknown_child", "command_execute", f"{name} needs a child_path", self.target_id)
        child = self.child(request.child_path)
        child.correlation = request.command_id
        node = child.node
        if name in ("pause_child", "quarantine_child"):
            held = Lifecycle.PAUSED if name == "pause_child" else Lifecycle.QUARANTINED
            report = await node.pause(child, held)
            child.message = f"{held.value} by {request.requested_by}: {request.reason}"
            node.update(child, last_policy_decision=f"{held.value} by command")
            node.emit(child, "child_paused" if held is Lifecycle.PAUSED else "child_quarantined", **who)
            return (child.path,), report
        if name == "resume_child":
            node.emit(child, "child_resumed", **who)
            await node.resume(child)
            return (child.path,), None
        if name == "restart_child":
            final = await node.restart(child)
            if final is Lifecycle.FAILED:
                raise WireError(
                    "child_failed", "command_execute",
                    f"{child.path} failed while restarting: {child.last_failure}", self.target_id,
                )
            return (child.path,), None
        if name == "remove_child":
            report = await node.remove(child)
            return (child.path,), report
        raise WireError("unsupported_command", "command_validate", f"unknown command {name}", self.target_id)

    def _add(self, request: CommandRequest, who: dict[str, str]) -> tuple[tuple[str, ...], Any]:
        node = self.supervisor_node(request.child_path)
        manifest = request.child_manifest
        if isinstance(manifest, ChildSpec):
            spec = manifest
        elif self._manifest_parser is None:
            raise WireError("invalid_manifest", "command_execute", "this tree accepts no child manifests", self.target_id)
        else:
            try:
                spec = self._manifest_parser(manifest)
            except WireError:
                raise
            except Exception as e:
                raise WireError("invalid_manifest", "command_execute", str(e), self.target_id) from None
        child = node.add(spec, request.command_id)
        return (child.path,), None

    # ------------------------------------------------------------------ Python conveniences

    def command(self, command: str, child_path: str | None = None, *, requested_by: str, reason: str,
                command_id: str | None = None, child_manifest: Any = None) -> defer.Deferred[CommandOutcome]:
        """Shorthand for :meth:`execute` from Python code."""
        request = CommandRequest(
            command=command,
            command_id=command_id or f"py-{self.tree.new_correlation()}",
            requested_by=requested_by,
            reason=reason,
            child_path=child_path,
            child_manifest=child_manifest,
        )
        return self.execute(request)


def _flatten(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for report in reports:
        flat.append(report)
        flat.extend(_flatten(report.get("children") or []))
    return flat


__all__ = ["CommandOutcome", "CommandRequest", "RECORDED_KEY", "Supervisor", "severity_of"]
