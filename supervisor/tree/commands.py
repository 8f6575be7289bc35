"""Operator commands: the request and outcome models and what each command does to the tree.

Every command is checked against the lifecycle table before it changes anything; a refused
one fails with ``illegal_transition``. When audit is on, each command is bracketed by
``command_received`` and ``command_completed`` events carrying the command id.
"""

from __future__ import annotations

import signal
from typing import Any, Callable

import attrs
from twisted.internet import defer

from supervisor.tree.children import ProcessRunner, signal_number
from supervisor.tree.lifecycle import HELD, LIVE, IllegalTransition, Lifecycle, Trigger, move_for
from supervisor.tree.model import (
    ROOT_PATH,
    SETTLED,
    ChildRuntime,
    SupervisorNode,
    child_at,
    child_id_of,
    fire,
    wait_for,
    walk,
)
from supervisor.tree.shutdown import TreeShutdown, stop_child
from supervisor.tree.spec import ChildKind, ChildSpec
from supervisor.tree.state import publish_topology
from supervisor.tree.supervision import Supervision
from supervisor.wire.errors import WireError
from supervisor.wire.vocabulary import COMMANDS


@attrs.frozen
class CommandRequest:
    """One operator command, as the tree sees it (wire details stay in the IPC layer)."""

    command: str
    command_id: str
    requested_by: str
    reason: str
    child_path: str | None = None
    child_manifest: Any = None
    #: the signal ``signal_child`` sends (``"HUP"`` or ``"SIGHUP"``)
    signal: str | None = None


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

_HOLDS = {"pause_child": Trigger.PAUSE, "quarantine_child": Trigger.QUARANTINE}


class Commands:
    """Runs :class:`CommandRequest` objects against one tree."""

    def __init__(
        self,
        root: SupervisorNode,
        supervision: Supervision,
        shutdown: TreeShutdown,
        manifest_parser: ManifestParser | None,
    ) -> None:
        self._root = root
        self._tree = root.tree
        self._supervision = supervision
        self._shutdown = shutdown
        self._manifest_parser = manifest_parser

    def execute(self, request: CommandRequest) -> defer.Deferred[CommandOutcome]:
        """Run one command; always fires with a :class:`CommandOutcome`, never errbacks."""
        return defer.Deferred.fromCoroutine(self._execute(request))

    def _error(self, code: str, stage: str, message: str) -> WireError:
        return WireError(code, stage, message, self._tree.target_id)

    async def _execute(self, request: CommandRequest) -> CommandOutcome:
        tree = self._tree

        def refuse(code: str, message: str) -> CommandOutcome:
            return CommandOutcome(request.command_id, "rejected", self._error(code, "command_validate", message))

        if request.command not in COMMANDS:
            return refuse("unsupported_command", f"unknown command {request.command}")
        if not request.reason or not request.reason.strip():
            return refuse("empty_reason", "a non-blank reason is required")
        if not request.requested_by or not request.requested_by.strip():
            return refuse("validation_failed", "requested_by is required")
        path = request.child_path or ROOT_PATH
        audit = tree.observability.audit_enabled
        if audit:
            tree.emit(
                "command_received", path, child_id_of(path), request.command_id,
                {"command": request.command, "requested_by": request.requested_by, "reason": request.reason},
            )
        try:
            if tree.shutting_down:
                raise self._error("tree_shutting_down", "command_execute", "the tree is shutting down")
            affected, report = await self._dispatch(request)
            outcome = CommandOutcome(request.command_id, "completed", None, affected, report)
        except WireError as e:
            e.target_id = tree.target_id
            outcome = CommandOutcome(request.command_id, "failed", e)
        except IllegalTransition as e:
            error = self._error("illegal_transition", "command_execute", str(e))
            outcome = CommandOutcome(request.command_id, "failed", error, (e.path,))
        if audit:
            tree.emit(
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
            report = await self._shutdown.request(
                f"shutdown_tree by {request.requested_by}: {request.reason}"
            )
            return (), report
        if name == "add_child":
            return self._add(request)
        if not request.child_path:
            raise self._error("unknown_child", "command_execute", f"{name} needs a child_path")
        child = child_at(self._root, request.child_path)
        correlation = request.command_id
        if name in _HOLDS:
            return (child.path,), await self._hold(child, _HOLDS[name], who, correlation)
        if name == "resume_child":
            await self._resume(child, who, correlation)
            return (child.path,), None
        if name == "restart_child":
            await self._restart(child, correlation)
            return (child.path,), None
        if name == "remove_child":
            return (child.path,), await self._remove(child, correlation)
        if name == "signal_child":
            return self._signal(child, request.signal)
        raise self._error("unsupported_command", "command_validate", f"unknown command {name}")

    async def _hold(
        self, child: ChildRuntime, trigger: Trigger, who: dict[str, str], correlation: str
    ) -> Any:
        """Stop the child and hold it in ``paused`` or ``quarantined``."""
        report = await stop_child(child, trigger, fields={"correlation": correlation})
        held = Lifecycle.PAUSED if trigger is Trigger.PAUSE else Lifecycle.QUARANTINED
        fire(
            child,
            Trigger.CONFIRM_HOLD,
            who,
            message=f"{held.value} by {who['requested_by']}: {who['reason']}",
            last_policy_decision=f"{held.value} by command",
        )
        return report

    async def _resume(self, child: ChildRuntime, who: dict[str, str], correlation: str) -> None:
        """Release a hold with a clean slate (backoff, attempts, intensity) and start the child."""
        fire(
            child,
            Trigger.RESUME,
            who,
            correlation=correlation,
            backoff_attempt=0,
            attempt=0,
            failed_starts=0,
            intensity=child.intensity.fresh(),
            message=None,
            last_policy_decision="resumed",
        )
        self._supervision.start_when_ready(child)
        await wait_for(child, SETTLED)

    async def _restart(self, child: ChildRuntime, correlation: str) -> None:
        """Stop the child if it runs and start it again at once, as a restart."""
        move_for(child.path, child.phase, Trigger.ORDER_RESTART)
        fields: dict[str, Any] = {"correlation": correlation, "failed_starts": 0}
        if child.phase in LIVE:
            await stop_child(child, Trigger.STOP_FOR_RESTART, fields=fields)
        else:
            child.node.cancel_restart(child.name)
        self._supervision.start_when_ready(
            child,
            restart=True,
            restart_count=child.restart_count + 1,
            last_policy_decision="restarted by command",
            **fields,
        )
        if await wait_for(child, SETTLED) is Lifecycle.FAILED:
            raise self._error(
                "child_failed", "command_execute",
                f"{child.path} failed while restarting: {child.last_failure}",
            )

    def _signal(self, child: ChildRuntime, name: str | None) -> tuple[tuple[str, ...], Any]:
        """Send a named signal to a running process child, or to every one in a group."""
        try:
            if not name:
                raise ValueError("signal_child needs target.signal (a name such as HUP)")
            signum = signal_number(name)
        except ValueError as e:
            raise self._error("validation_failed", "command_validate", str(e)) from None
        canonical = signal.Signals(signum).name
        if child.spec.kind is ChildKind.PROCESS:
            members = [child]
        elif child.subtree is not None:
            members = [c for c in walk(child.subtree) if c.spec.kind is ChildKind.PROCESS]
        else:
            raise self._error("illegal_transition", "command_execute",
                              f"{child.path} is a {child.spec.kind.value} child, not a process")
        signalled = []
        for member in members:
            runner = member.runner
            if member.phase in LIVE and isinstance(runner, ProcessRunner) and runner.send_signal(signum):
                signalled.append({"child_path": member.path, "pid": runner.pid})
        if not signalled:
            raise self._error("illegal_transition", "command_execute",
                              f"no running process at {child.path} to send {canonical}")
        return tuple(s["child_path"] for s in signalled), {"signal": canonical, "signalled": signalled}

    async def _remove(self, child: ChildRuntime, correlation: str) -> Any:
        node = child.node
        dependents = [c.name for c in node.children.values() if child.name in c.spec.dependencies]
        if dependents:
            raise self._error(
                "illegal_transition", "command_execute",
                f"cannot remove {child.path}: {', '.join(dependents)} depend(s) on it",
            )
        report = await stop_child(child, Trigger.STOP, fields={"correlation": correlation})
        move_for(child.path, child.phase, Trigger.REMOVE)
        node.children.pop(child.name, None)
        publish_topology(self._root)
        fire(child, Trigger.REMOVE)
        return report

    def _supervisor_at(self, path: str | None) -> SupervisorNode:
        if path in (None, "", ROOT_PATH):
            return self._root
        assert path is not None
        child = child_at(self._root, path)
        if child.subtree is None:
            raise self._error("invalid_manifest", "command_execute", f"{path} is not a supervisor")
        return child.subtree

    def _add(self, request: CommandRequest) -> tuple[tuple[str, ...], Any]:
        node = self._supervisor_at(request.child_path)
        manifest = request.child_manifest
        if isinstance(manifest, ChildSpec):
            spec = manifest
        elif self._manifest_parser is None:
            raise self._error("invalid_manifest", "command_execute", "this tree accepts no child manifests")
        else:
            try:
                spec = self._manifest_parser(manifest)
            except WireError:
                raise
            except Exception as e:
                raise self._error("invalid_manifest", "command_execute", str(e)) from None
        if spec.name in node.children:
            raise self._error("child_exists", "command_execute", f"{node.path}/{spec.name} already exists")
        for dep in spec.dependencies:
            if dep not in node.children:
                raise self._error(
                    "invalid_manifest", "command_execute",
                    f"dependencies: {dep!r} is not a child of {node.path}",
                )
        child = self._supervision.adopt(node, spec)
        publish_topology(self._root)
        fire(child, Trigger.ADOPT, {"kind": spec.kind.value}, correlation=request.command_id)
        if child.phase not in HELD:
            self._supervision.start_when_ready(child)
        return (child.path,), None
