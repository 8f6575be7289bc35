"""A fake target on a real Unix socket for socket-level relay tests: the in-memory §1 target
of ``supervisor.testing`` (:class:`~supervisor.testing.MemoryTarget`) served by a real
listener, so the relay's Unix-socket client, deadlines and connection losses are real."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory

from supervisor.testing import MemoryTarget
from supervisor.wire.unixsocket import listen_unix

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "contract_examples")


def fixture(name: str) -> Any:
    """One contract example (copied into the repo from CONTRACTS.md's examples)."""
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


def registration_payload(target_id: str, ipc_path: str, lease: int = 30,
                         display_name: str | None = None) -> dict[str, Any]:
    payload = fixture("registration.request.json")
    payload.update(target_id=target_id, ipc_path=ipc_path, lease_seconds=lease,
                   display_name=display_name or str(target_id).replace("-", " "))
    return payload


class FakeTarget(MemoryTarget):
    """A MemoryTarget listening on ``path``; ``stop()`` is the process dying (connections
    dropped, the socket gone), ``start()`` listens again."""

    def __init__(self, reactor: Any, target_id: str, path: str,
                 children: dict[str, str] | None = None) -> None:
        super().__init__(target_id, reactor, ipc_path=path,
                         children=children or {"worker": "running", "invoice_writer": "running"})
        self.path = path
        self.port: Any = None

    def start(self) -> "FakeTarget":
        super().start()
        self.port = listen_unix(self.clock, self.path, Factory.forProtocol(self.protocol), 0o600)
        return self

    def stop(self) -> Deferred[Any] | None:  # type: ignore[override]
        super().stop()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
