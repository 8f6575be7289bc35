"""The public face of a supervision tree: an ``IService`` with a command API and a state model."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from supervisor.tree.commands import Commands, CommandOutcome, CommandRequest, ManifestParser
from supervisor.tree.context import Tree
from supervisor.tree.health import HeartbeatMonitor
from supervisor.tree.journal import EventRecord, LogRecord, Ring
from supervisor.tree.model import ROOT_PATH, ChildRuntime, child_at, runtime_row
from supervisor.tree.resources import ProcSampler, ResourceMonitor, Sampler
from supervisor.tree.shutdown import TreeShutdown
from supervisor.tree.spec import SupervisorSpec
from supervisor.tree.state import dashboard_state, publish_topology, rows, status
from supervisor.tree.supervision import Supervision
from supervisor.wire.errors import WireError

if TYPE_CHECKING:
    from supervisor.tree.reconfigure import ConfigLoader, Reloaded


class Supervisor(Service):
    """A supervision tree as a Twisted service.

    ``Supervisor(spec, clock=reactor)`` builds the tree; ``setServiceParent(app)`` (or
    ``startService()``) starts it; ``stopService()`` runs the staged shutdown and fires with
    the per-child report. Children start by priority, then declaration order; they stop in
    reverse.
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
        sampler: Sampler | None = None,
        config_loader: ConfigLoader | None = None,
    ) -> None:
        if reactor is None or clock is None:
            from twisted.internet import reactor as default_reactor

            reactor = reactor if reactor is not None else default_reactor
            clock = clock if clock is not None else reactor
        self.setName("supervisor")
        self.tree = Tree(spec, clock, reactor, target_id, rng or random.Random())
        self._heartbeats = HeartbeatMonitor(self.tree, spec.policy.heartbeat_interval_ms / 1000)
        self._supervision = Supervision(self.tree, self._heartbeats, self._root_escalated)
        self.root = self._supervision.build(
            ROOT_PATH, spec.strategy, spec.policy, spec.shutdown, spec.children
        )
        self._shutdown = TreeShutdown(self.root, self._heartbeats)
        self._commands = Commands(self.root, self._supervision, self._shutdown, manifest_parser,
                                  spec, config_loader, self._reloaded)
        interval_ms = spec.observability.resources.interval_ms
        #: samples process children's CPU, memory, descriptors and threads (``None`` when off)
        self.resources: ResourceMonitor | None = None
        if interval_ms > 0:
            self.resources = ResourceMonitor(self.root, sampler or ProcSampler(), interval_ms / 1000)
            self._shutdown.on_stopped(lambda report: self.resources and self.resources.stop())

    @property
    def spec(self) -> SupervisorSpec:
        """The spec the tree was built from, or last reloaded from."""
        return self._commands.spec

    @property
    def _manifest_parser(self) -> ManifestParser | None:
        return self._commands.manifest_parser

    def _reloaded(self, reloaded: Reloaded) -> None:
        self._heartbeats.set_interval(reloaded.spec.policy.heartbeat_interval_ms / 1000)

    @property
    def events(self) -> Ring[EventRecord]:
        return self.tree.events

    @property
    def logs(self) -> Ring[LogRecord]:
        return self.tree.logs

    @property
    def target_id(self) -> str:
        return self.tree.target_id

    @property
    def status(self) -> str:
        """``running``, ``stopping`` or ``stopped``."""
        return self.tree.status

    @property
    def stop_reason(self) -> str | None:
        return self.tree.stop_reason

    # ------------------------------------------------------------------ service

    def startService(self) -> None:
        Service.startService(self)
        self.tree.status = "running"
        publish_topology(self.root)
        self._heartbeats.start()
        self._supervision.start(self.root)
        if self.resources is not None:
            self.resources.start()

    def stopService(self) -> defer.Deferred[dict[str, Any]]:
        Service.stopService(self)
        return self.shutdown("service stopped")

    def reload(self, *, requested_by: str, reason: str, dry_run: bool = False,
               command_id: str | None = None) -> defer.Deferred[CommandOutcome]:
        """Re-read the config (``config_loader``) and apply it: the ``reload_config`` command."""
        return self.command("reload_config", requested_by=requested_by, reason=reason,
                            dry_run=dry_run, command_id=command_id)

    def on_tree_stopped(self, observer: Callable[[dict[str, Any]], None]) -> None:
        """Call ``observer(report)`` once the tree has completed a shutdown."""
        self._shutdown.on_stopped(observer)

    def shutdown(self, reason: str) -> defer.Deferred[dict[str, Any]]:
        """Staged shutdown in reverse start order; fires with the shutdown report.

        Calling it again while a shutdown runs (or after) returns the same result.
        """
        return self._shutdown.request(reason)

    def _root_escalated(self, reason: str) -> None:
        self._log.critical("root supervisor escalated, stopping the tree: {reason}", reason=reason)
        self.shutdown(f"escalated: {reason}")

    # ------------------------------------------------------------------ inspection

    def state(self, display_name: str | None = None) -> dict[str, Any]:
        """The §1 DashboardState, computed now."""
        return dashboard_state(self.root, display_name or self.tree.target_id)

    def lean_status(self, display_name: str | None = None) -> dict[str, Any]:
        """The lean status read (one flat row per child), computed now."""
        return status(self.root, display_name or self.tree.target_id)

    def subscribe_state(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``listener(delta)`` after every change; returns the unsubscribe function."""
        return self.tree.subscribe_state(listener)

    def rows(self, paths: Any = None) -> list[dict[str, Any]]:
        """RuntimeState rows, all of them or those of ``paths`` that still exist."""
        if paths is None:
            return rows(self.root)
        found = []
        for path in paths:
            try:
                found.append(runtime_row(self.child(path)))
            except WireError:
                pass
        return found

    def child(self, path: str) -> ChildRuntime:
        """The child at ``path`` (``/root/a/b``); unknown paths raise ``unknown_child``."""
        return child_at(self.root, path)

    # ------------------------------------------------------------------ commands

    def execute(self, request: CommandRequest) -> defer.Deferred[CommandOutcome]:
        """Run one command; always fires with a :class:`CommandOutcome`, never errbacks."""
        return self._commands.execute(request)

    def command(self, command: str, child_path: str | None = None, *, requested_by: str, reason: str,
                command_id: str | None = None, child_manifest: Any = None,
                signal: str | None = None, dry_run: bool = False) -> defer.Deferred[CommandOutcome]:
        """Shorthand for :meth:`execute` from Python code."""
        request = CommandRequest(
            command=command,
            command_id=command_id or f"py-{self.tree.new_correlation()}",
            requested_by=requested_by,
            reason=reason,
            child_path=child_path,
            child_manifest=child_manifest,
            signal=signal,
            dry_run=dry_run,
        )
        return self.execute(request)


__all__ = ["Supervisor"]
