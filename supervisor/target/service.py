"""Build the target's service tree from a :class:`TargetConfig`."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from zope.interface import implementer

from supervisor.config.target import TargetConfig
from supervisor.tree.context import RECORDED_KEY, severity_of
from supervisor.tree.runtime import Supervisor


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


def supervisor_from_config(config: TargetConfig, reactor: Any = None) -> Supervisor:
    """A :class:`Supervisor` for the tree a YAML file describes (embed it anywhere)."""
    return Supervisor(
        config.spec,
        reactor=reactor,
        clock=reactor,
        target_id=config.ipc.target_id,
        manifest_parser=config.manifest_parser(),
    )


def target_service(config: TargetConfig, reactor: Any) -> tuple[MultiService, Supervisor]:
    """The whole target: log capture, the tree and, when enabled, IPC and registration."""
    top = MultiService()
    supervisor = supervisor_from_config(config, reactor)
    LogCapture(supervisor).setServiceParent(top)
    supervisor.setServiceParent(top)
    if config.ipc.enabled:
        from supervisor.ipc.service import ipc_services

        for service in ipc_services(config, supervisor, reactor):
            service.setServiceParent(top)
    return top, supervisor
