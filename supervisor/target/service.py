"""Build the target's service tree from a :class:`TargetConfig`."""

from __future__ import annotations

import time
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, Logger, formatEvent, globalLogPublisher
from zope.interface import implementer

from supervisor.config.target import TargetConfig
from supervisor.tree.commands import CommandOutcome
from supervisor.history.store import HistoryStore
from supervisor.tree.context import RECORDED_KEY, severity_of
from supervisor.tree.descendants import Orphans, alive, become_subreaper, kill_leftovers
from supervisor.tree.runtime import Supervisor
from supervisor.tree.ticks import GridLoop


@implementer(ILogObserver)
class LogCapture(Service):
    """Copies the process's twisted.logger events into the tree's log ring while running."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get(RECORDED_KEY):
            return
        fields = {"namespace": event.get("log_namespace", "")}
        self._supervisor.tree.log(severity_of(event.get("log_level")), formatEvent(event), fields)

    def startService(self) -> None:
        Service.startService(self)
        globalLogPublisher.addObserver(self)

    def stopService(self) -> None:
        Service.stopService(self)
        globalLogPublisher.removeObserver(self)


#: How often the target reaps descendants reparented to it (a bound on lingering zombies).
ORPHAN_SWEEP_SECONDS = 2.0
#: How long start-up waits for the processes of a dead previous instance to be gone.
LEFTOVER_WAIT_SECONDS = 5.0


class ProcessOwnership(Service):
    """Makes the target own every descendant of its process children, across restarts.

    On start, before the tree: SIGKILL what a previous instance of this target (same
    ``target_id``, its process gone) left running, so no child runs twice; become the child
    subreaper, so descendants whose parents exit come back to the target rather than to
    init; then reap those every :data:`ORPHAN_SWEEP_SECONDS`.
    """

    _log = Logger()

    def __init__(self, target_id: str, reactor: Any) -> None:
        self._target_id = target_id
        self._reactor = reactor
        self.orphans = Orphans()
        self.subreaper = False
        self.killed: list[tuple[int, str]] = []
        self._sweep = GridLoop(self.orphans.sweep, reactor)

    def startService(self) -> None:
        Service.startService(self)
        self.killed = kill_leftovers(self._target_id, self._log)
        deadline = time.monotonic() + LEFTOVER_WAIT_SECONDS
        while any(alive(pid) for pid, _ in self.killed) and time.monotonic() < deadline:
            time.sleep(0.01)  # start-up, before the reactor runs: nothing else to do meanwhile
        self.subreaper = become_subreaper()
        if self.subreaper:
            self._sweep.start(ORPHAN_SWEEP_SECONDS)
        else:
            self._log.warn("cannot become a child subreaper: orphaned descendants go to init")

    def stopService(self) -> None:
        Service.stopService(self)
        self._sweep.stop()
        self.orphans.sweep()


class HistoryService(Service):
    """Keeps the tree's records on disk (``observability.history``) while running.

    It begins before the tree starts and ends after the tree's shutdown completed, so the
    shutdown's own events are kept too.
    """

    def __init__(self, supervisor: Supervisor, store: HistoryStore) -> None:
        self._supervisor = supervisor
        self.store = store
        store.report = self._publish_loss
        store.congestion = supervisor.tree.output_gate.set_paused

    def startService(self) -> None:
        Service.startService(self)
        self.store.start()
        self._supervisor.tree.record_sink = self.store

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        d = self._supervisor.shutdown("service stopped")
        d.addBoth(lambda _: self._end())
        return d

    def _end(self) -> None:
        self._supervisor.tree.record_sink = None
        self.store.stop()

    def _publish_loss(self) -> None:
        tree = self._supervisor.tree
        tree.state_changed(lambda: {"dropped_event_count": tree.dropped_count("events"),
                                    "dropped_log_count": tree.dropped_count("logs")})


def supervisor_from_config(config: TargetConfig, reactor: Any = None) -> Supervisor:
    """A :class:`Supervisor` for the tree a YAML file describes (embed it anywhere)."""
    return Supervisor(
        config.spec,
        reactor=reactor,
        clock=reactor,
        target_id=config.ipc.target_id,
        manifest_parser=config.manifest_parser(),
        config_loader=config.config_loader(),
    )


_log = Logger()


def reload_logged(supervisor: Supervisor, command_id: str) -> Deferred[CommandOutcome]:
    """``reload_config`` on behalf of a ``SIGHUP``, its outcome logged (what and why)."""

    def report(outcome: CommandOutcome) -> CommandOutcome:
        if outcome.accepted:
            diff = outcome.report or {}
            _log.info(
                "config reloaded ({command_id}): {added} added, {removed} removed, "
                "{changed} changed, {unchanged} unchanged",
                command_id=command_id, added=len(diff.get("added", [])),
                removed=len(diff.get("removed", [])), changed=len(diff.get("changed", [])),
                unchanged=diff.get("unchanged", 0),
            )
        else:
            assert outcome.error is not None
            _log.error("config reload refused ({command_id}): {code}: {message}",
                       command_id=command_id, code=outcome.error.code,
                       message=outcome.error.message)
        return outcome

    d = supervisor.reload(requested_by="signal:SIGHUP", reason="SIGHUP received",
                          command_id=command_id)
    return d.addCallback(report)


def target_service(config: TargetConfig, reactor: Any) -> tuple[MultiService, Supervisor]:
    """The whole target: history and log capture when enabled, the tree, IPC and registration."""
    top = MultiService()
    supervisor = supervisor_from_config(config, reactor)
    history = config.spec.observability.history
    store = HistoryStore(history, reactor) if history.enabled else None
    if store is not None:
        HistoryService(supervisor, store).setServiceParent(top)
    LogCapture(supervisor).setServiceParent(top)
    ProcessOwnership(config.ipc.target_id, reactor).setServiceParent(top)
    supervisor.setServiceParent(top)
    ipc: list[IService] = []
    server = None
    if config.ipc.enabled:
        from supervisor.ipc.service import IpcService, ipc_services

        ipc = ipc_services(config, supervisor, reactor, store)
        server = next((s.server for s in ipc if isinstance(s, IpcService)), None)
    listen = config.spec.observability.prometheus.listen
    if listen is not None:
        from supervisor.target.metrics import metrics_service

        metrics_service(supervisor, reactor, listen, server).setServiceParent(top)
    for service in ipc:
        service.setServiceParent(top)
    return top, supervisor
