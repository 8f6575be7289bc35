"""The IPC listener as a service in the target's tree, plus its registration heartbeat."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, Service
from twisted.internet import defer
from twisted.logger import Logger

from supervisor.config.target import TargetConfig
from supervisor.history.store import HistoryStore
from supervisor.ipc.server import IpcServer
from supervisor.ipc.socketpath import SocketPathRefused, prepare_socket_path, remove_if_ours
from supervisor.tree.runtime import Supervisor
from supervisor.wire.unixsocket import listen_unix

if TYPE_CHECKING:
    from supervisor.ipc.registration import RegistrationHeartbeat


class IpcService(Service):
    """Listens on ``ipc.path`` with the configured mode in force from the first instant."""

    _log = Logger()

    def __init__(self, server: IpcServer, reactor: Any, heartbeat: RegistrationHeartbeat | None) -> None:
        self.server = server
        self._reactor = reactor
        self._heartbeat = heartbeat
        self._port: Any = None
        self._inode: int | None = None
        self.failure: str | None = None

    def _listen(self) -> None:
        config = self.server.config
        assert config.path is not None
        prepare_socket_path(config.path, config.bind_mode)
        self._port = listen_unix(self._reactor, config.path, self.server, config.permissions)
        self._inode = os.lstat(config.path).st_ino
        self._log.info("dashboard IPC listening on {path}", path=config.path)

    def privilegedStartService(self) -> None:
        """Under twistd: a socket path we may not use ends start-up with a clear message."""
        Service.privilegedStartService(self)
        try:
            self._listen()
        except (SocketPathRefused, OSError) as e:
            raise SystemExit(f"cannot listen on {self.server.config.path}: {e}") from None

    def startService(self) -> None:
        Service.startService(self)
        if self._port is None:
            try:
                self._listen()
            except (SocketPathRefused, OSError) as e:
                self.failure = f"cannot listen on {self.server.config.path}: {e}"
                self._log.critical("IPC disabled: {failure}", failure=self.failure)
                return
        if self._heartbeat is not None:
            self._heartbeat.begin()

    def stopService(self) -> defer.Deferred[None] | None:
        Service.stopService(self)
        for connection in list(self.server.connections):
            connection.close()
        if self._port is None:
            return None
        d = defer.maybeDeferred(self._port.stopListening)
        path, inode = self.server.config.path, self._inode
        self._port = None
        return d.addBoth(lambda _: remove_if_ours(path, inode))


def ipc_services(config: TargetConfig, supervisor: Supervisor, reactor: Any,
                 history: HistoryStore | None = None) -> list[IService]:
    """Heartbeat first (so it is running when the listener calls ``begin``), then the listener."""
    ipc = config.ipc
    heartbeat = payload = None
    if ipc.registration.enabled:
        # imported only here: a target that registers nowhere does not load the client
        # machinery (automat, endpoints) at start-up
        from supervisor.ipc.registration import RegistrationHeartbeat, registration_payload

        heartbeat = RegistrationHeartbeat(ipc, reactor)
        payload = registration_payload(ipc)
    server = IpcServer(supervisor, ipc, payload, reactor,
                       relay_process=lambda: heartbeat.relay_process if heartbeat is not None else None,
                       history=history)
    services: list[IService] = [heartbeat] if heartbeat is not None else []
    services.append(IpcService(server, reactor, heartbeat))
    return services
