"""Operator commands: the request and outcome models and what each command does to the tree.

Every command is checked against the lifecycle table before it changes anything; a refused
one fails with ``illegal_transition``. When audit is on, each command is bracketed by
``command_received`` and ``command_completed`` events carrying the command id.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any, Callable

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from supervisor.tree.children import PROCESS_CONTROL, ProcessRunner, signal_number
from supervisor.tree.context import config_version
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
from supervisor.tree.spec import ChildKind, ChildSpec, SupervisorSpec
from supervisor.tree.state import publish_topology
from supervisor.tree.supervision import Supervision
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import encodable
from supervisor.wire.vocabulary import COMMANDS, DRY_RUN_COMMANDS

if TYPE_CHECKING:
    from supervisor.tree.reconfigure import ConfigLoader, Reloaded
    from supervisor.tree.specdiff import TreeDiff


@attrs.frozen
class CommandRequest:
    """One operator command, as the tree sees it (wire details stay in the IPC layer)."""

    #: every string is made encodable on entry (lone surrogates become U+FFFD)
    command: str = attrs.field(converter=encodable)
    command_id: str = attrs.field(converter=encodable)
    requested_by: str = attrs.field(converter=encodable)
    reason: str = attrs.field(converter=encodable)
    child_path: str | None = attrs.field(default=None, converter=encodable)
    child_manifest: Any = attrs.field(default=None, converter=encodable)
    #: where the command came from (``COMMAND_ORIGINS``) and, for ``direct_ipc``, the
    #: sending process (``{"pid": int, "uid": int}``): both land in the command's events
    origin: str = "in_process"
    peer: Any = None
    #: the signal ``signal_child`` sends (``"HUP"`` or ``"SIGHUP"``)
    signal: str | None = attrs.field(default=None, converter=encodable)
    #: report what the command would do and change nothing (``reload_config`` only)
    dry_run: bool = False


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

#: At most this many pids per list in a ``processes`` summary; the rest are counted in ``more``.
MAX_LISTED_PIDS = 64


def processes_of(report: Any) -> dict[str, Any]:
    """What a stop report says about OS processes, summed over nested reports.

    ``{"stopped": [pid], "killed": [pid], "survived": [pid]}`` (each list sorted and at most
    :data:`MAX_LISTED_PIDS` long), plus ``"more": n`` when pids were left out.
    """
    found: dict[str, list[int]] = {"stopped": [], "killed": [], "survived": []}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key, pids in (node.get("processes") or {}).items():
                found[key].extend(pids)
            walk(node.get("children"))

    walk(report)
    summary: dict[str, Any] = {}
    more = 0
    for key, pids in found.items():
        pids.sort()
        summary[key] = pids[:MAX_LISTED_PIDS]
        more += max(0, len(pids) - MAX_LISTED_PIDS)
    if more:
        summary["more"] = more
    return summary

_HOLDS = {"pause_child": Trigger.PAUSE, "quarantine_child": Trigger.QUARANTINE}


class Commands:
    """Runs :class:`CommandRequest` objects against one tree."""

    _log = Logger()

    def __init__(
        self,
        root: SupervisorNode,
        supervision: Supervision,
        shutdown: TreeShutdown,
        manifest_parser: ManifestParser | None,
        spec: SupervisorSpec,
        config_loader: ConfigLoader | None = None,
        on_reloaded: Callable[[Reloaded], None] | None = None,
    ) -> None:
        self._root = root
        self._tree = root.tree
        self._supervision = supervision
        self._shutdown = shutdown
        self.manifest_parser = manifest_parser
        #: the spec the tree was last built or reloaded from
        self.spec = spec
        self._config_loader = config_loader
        self._on_reloaded = on_reloaded
        self._reloading = False

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
        if request.dry_run and request.command not in DRY_RUN_COMMANDS:
            return refuse("invalid_command_params", f"{request.command} has no dry run")
        path = request.child_path or ROOT_PATH
        audit = tree.observability.audit_enabled
        if audit:
            received: dict[str, Any] = {
                "command": request.command, "requested_by": request.requested_by,
                "reason": request.reason, "origin": request.origin,
            }
            if request.peer is not None:
                received["peer"] = request.peer
            tree.emit("command_received", path, child_id_of(path), request.command_id, received)
        try:
            if tree.shutting_down:
                raise self._error("tree_shutting_down", "command_execute", "the tree is shutting down")
            affected, report = await self._dispatch(request)
            processes = processes_of(report)
            if processes["survived"]:
                survivors = ", ".join(str(pid) for pid in processes["survived"])
                error = self._error(
                    "processes_survived", "command_execute",
                    f"{request.command} done, but pid(s) {survivors} still run after SIGKILL",
                )
                outcome = CommandOutcome(request.command_id, "failed", error, affected, report)
            else:
                outcome = CommandOutcome(request.command_id, "completed", None, affected, report)
        except WireError as e:
            e.target_id = tree.target_id
            outcome = CommandOutcome(request.command_id, "failed", e)
        except IllegalTransition as e:
            error = self._error("illegal_transition", "command_execute", str(e))
            outcome = CommandOutcome(request.command_id, "failed", error, (e.path,))
        except PROCESS_CONTROL:
            raise
        except BaseException:
            # a bug, not a refusal: still answered (and audited) as what it is
            self._log.failure("command {command} {command_id} raised", command=request.command,
                              command_id=request.command_id)
            error = self._error("internal_error", "command_execute",
                                f"{request.command} raised; see the target's log")
            outcome = CommandOutcome(request.command_id, "failed", error)
        if audit:
            payload: dict[str, Any] = {
                "command": request.command,
                "status": outcome.status,
                "error": outcome.error.code if outcome.error else None,
                "origin": request.origin,
            }
            processes = processes_of(outcome.report)
            if any(processes.values()):
                payload["processes"] = processes
            tree.emit("command_completed", path, child_id_of(path), request.command_id, payload)
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
        if name == "reload_config":
            return (), await self._reload(request)
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
        elif self.manifest_parser is None:
            raise self._error("invalid_manifest", "command_execute", "this tree accepts no child manifests")
        else:
            try:
                spec = self.manifest_parser(manifest)
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

    async def _reload(self, request: CommandRequest) -> dict[str, Any]:
        """Read the config again, diff it against the running tree and (unless a dry run)
        apply it; the diff's wire form is the report. An invalid file changes nothing."""
        if self._config_loader is None:
            raise self._error("invalid_config", "command_execute",
                              "this tree was not built from a config file")
        if self._reloading:
            raise WireError("reload_in_progress", "command_execute",
                            "another reload_config is being applied", self._tree.target_id, True)
        # imported when a reload runs: start-up does not pay for them
        from supervisor.tree.reconfigure import Reconfigure, running_of
        from supervisor.tree.specdiff import diff_tree

        try:
            reloaded = self._config_loader()
            diff = diff_tree(self.spec, running_of(self._root), reloaded.spec)
        except WireError:
            raise
        except Exception as e:  # a config error names its key; a ReloadConflict its child
            raise self._error("invalid_config", "command_execute",
                              f"nothing was changed: {e}") from None
        diff = attrs.evolve(diff, not_applied=diff.not_applied + reloaded.not_applied)
        if request.dry_run:
            return diff.to_json()
        self._reloading = True
        try:
            await Reconfigure(self._root, self._supervision).apply(
                reloaded.spec, diff, request.command_id,
                {"requested_by": request.requested_by, "reason": request.reason},
            )
        finally:
            self._reloading = False
        self.spec = reloaded.spec
        self.manifest_parser = reloaded.manifest_parser
        self._reloaded(diff, request.command_id)
        if self._on_reloaded is not None:
            self._on_reloaded(reloaded)
        return diff.to_json()

    def _reloaded(self, diff: TreeDiff, correlation: str) -> None:
        """The tree-wide settings of the new spec, and the ``config_reloaded`` event."""
        tree = self._tree
        spec = self.spec
        tree.name = spec.name
        tree.observability = attrs.evolve(
            spec.observability,
            event_journal_capacity=tree.observability.event_journal_capacity,
            log_journal_capacity=tree.observability.log_journal_capacity,
            resources=tree.observability.resources,
            prometheus=tree.observability.prometheus,
        )
        tree.reloads += 1
        tree.config_version = config_version(spec, tree.reloads)
        tree.emit("config_reloaded", ROOT_PATH, None, correlation, {
            "added": len(diff.added),
            "removed": len(diff.removed),
            "changed": len(diff.changed),
            "restarted": len(diff.restarted),
            "unchanged": diff.unchanged,
            "added_at_run_time": len(diff.added_at_run_time),
            "removed_at_run_time": len(diff.removed_at_run_time),
            "not_applied": list(diff.not_applied),
        })
