"""A running target (tree + IPC socket) and a raw NDJSON client for IPC tests."""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import tempfile
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from supervisor.config.target import IpcConfig, RegistrationConfig, TargetConfig
from supervisor.ipc.service import ipc_services
from supervisor.testing import ManualTask
from supervisor.tree.runtime import Supervisor
from supervisor.tree.spec import ChildKind, ChildSpec, Policy, SupervisorSpec
from supervisor.wire.vocabulary import COMMANDS
from tests.waiting import eventually

TARGET_ID = "payments-worker-a"


class SocketBackedTransport(StringTransport):
    """An in-memory transport whose handle is a real socketpair end, so SO_PEERCRED works."""

    def __init__(self) -> None:
        super().__init__()
        self._pair = socket.socketpair()

    def getHandle(self):
        return self._pair[0]

    def loseConnection(self):
        super().loseConnection()
        for s in self._pair:
            s.close()


class LineClient(Protocol):
    """Collects every line the server sends; tests read them with :meth:`next`."""

    def __init__(self) -> None:
        self.buffer = b""
        self.lines: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.cursor = 0
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.raw.append(line)
            self.lines.append(json.loads(line))

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True

    def send(self, obj: Any) -> None:
        self.transport.write(json.dumps(obj).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        self.transport.write(data)

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        await eventually(lambda: len(self.lines) > self.cursor, timeout, "a line from the server")
        self.cursor += 1
        return self.lines[self.cursor - 1]

    async def call(self, method: str, params: Any = None, request_id: str = "r1") -> dict[str, Any]:
        self.send({"request_id": request_id, "method": method, "params": params})
        return await self.next()

    async def until(self, predicate, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            line = await self.next(timeout)
            if predicate(line):
                return line


class Target:
    """A tree with a few children and its IPC listener, on the real reactor."""

    def __init__(self, children: list[ChildSpec] | None = None, **ipc: Any) -> None:
        self.dir = tempfile.mkdtemp(prefix="ipc", dir="/tmp")
        self.path = f"{self.dir}/t.sock"
        self.worker = ManualTask()
        spec = SupervisorSpec(
            policy=Policy(initial_backoff_ms=50, max_backoff_ms=50, jitter_ratio=0),
            children=children if children is not None else [
                ChildSpec("worker", ChildKind.TASK, factory=self.worker),
                ChildSpec("invoice_writer", ChildKind.TASK, factory=ManualTask(), tags=["billing"]),
            ],
        )
        registration = ipc.pop("registration", RegistrationConfig())
        self.ipc = IpcConfig(enabled=True, target_id=TARGET_ID, path=self.path,
                             registration=registration, **ipc)
        config = TargetConfig(spec=spec, ipc=self.ipc, base_dir=self.dir)
        self.supervisor = Supervisor(spec, reactor=reactor, clock=reactor, target_id=TARGET_ID,
                                     manifest_parser=config.manifest_parser())
        self.services = ipc_services(config, self.supervisor, reactor)
        self.ipc_service = self.services[-1]
        self.clients: list[LineClient] = []

    def start(self) -> "Target":
        self.supervisor.startService()
        for service in self.services:
            service.startService()
        return self

    async def connect(self) -> LineClient:
        client = LineClient()
        await UNIXClientEndpoint(reactor, self.path, timeout=5).connect(Factory.forProtocol(lambda: client))
        self.clients.append(client)
        return client

    async def stop(self) -> None:
        for client in self.clients:
            if client.transport is not None:
                client.transport.loseConnection()
        for service in reversed(self.services):
            await defer.maybeDeferred(service.stopService)
        await self.supervisor.stopService()
        shutil.rmtree(self.dir, ignore_errors=True)


def contract_registration_payload() -> dict[str, Any]:
    """The contract's registration example, whose ``supported_commands`` are the contract's
    commands; ours advertise the vocabulary's extension commands after them, alike."""
    example = pathlib.Path(__file__).parent / "contract_examples" / "registration.request.json"
    payload = json.loads(example.read_text())
    listed = [c["name"] for c in payload["supported_commands"]]
    template = payload["supported_commands"][0]
    payload["supported_commands"] += [{**template, "name": name}
                                      for name in COMMANDS if name not in listed]
    return payload
