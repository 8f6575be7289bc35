"""The relay's logic in memory for unit tests: a RelayHub with sessions on in-memory
transports, targets from ``supervisor.testing.MemoryTarget``, an in-memory audit, one fake
clock. Nothing here opens a socket or a thread; time moves only with :meth:`advance`."""

from __future__ import annotations

import json
import types
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from zope.interface import implementer

from relay_helpers import config_dict
from supervisor.config.relay import parse_relay_config
from supervisor.relay.audit import AuditRecord
from supervisor.relay.auth import Identity
from supervisor.relay.hub import RelayHub
from supervisor.relay.registration import parse_registration
from supervisor.relay.registry import Registry, TargetEntry
from supervisor.relay.session import Session
from supervisor.testing import MemoryTarget
from supervisor.wire.registration import Registration

OPERATOR = Identity("mtls_cert_fingerprint:" + "a" * 64, "CN=demo operator", "mtls")
ORDERED_OPERATOR = Identity("mtls_cert_fingerprint:" + "b" * 64,
                            "O=Example Ops, CN=demo operator", "mtls")
VIEWER = Identity("mtls_cert_fingerprint:" + "c" * 64, "O=Example Ops, CN=viewer", "mtls")
HELLO = {"type": "client_hello", "client_store_id": "store-1", "resume_cursor": {}}


def filter_message(**conditions: Any) -> dict[str, Any]:
    """A ``log_event_filter_conditions`` message: no condition but those given."""
    message = {"type": "log_event_filter_conditions", "target_ids": [], "child_paths": [],
               "lifecycle_states": [], "event_types": [], "severities": [],
               "sequence_min": None, "correlation_id": None}
    message.update(conditions)
    return message
_PKI = types.SimpleNamespace(server_cert_path="/memory/relay.pem",
                             server_key_path="/memory/relay-key.pem", ca_path="/memory/ca.pem")


def settle(clock: Clock, seconds: float = 0.0) -> None:
    """Move fake time forward call by call, so timers set along the way also run."""
    target = clock.seconds() + seconds
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() <= target]
        if not due:
            break
        clock.advance(max(0.0, min(due) - clock.seconds()))
    clock.advance(max(0.0, target - clock.seconds()))


@implementer(IStreamClientEndpoint)
class Nowhere:
    """An endpoint for a path nobody listens on."""

    def connect(self, factory: Any) -> Deferred[Any]:
        return fail(ConnectionRefusedError("nobody listens here"))


class MemoryTransport:
    """A session's transport: keeps every message sent; a close ends the session a turn
    later (as the WebSocket closing handshake does)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.sent: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.session: Session | None = None

    def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self._clock.callLater(0, self.session.lost)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]

    def of_type(self, kind: str, target_id: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == kind
                and (target_id is None or m.get("target_id") == target_id)]

    def last(self, kind: str) -> dict[str, Any]:
        found = self.of_type(kind)
        assert found, f"no {kind} among {self.types()}"
        return found[-1]


class MemoryAudit:
    """The audit store's interface in memory. ``failing`` makes writes fail; with
    ``holding`` (writes) or ``holding_reads`` each call waits until :meth:`release`."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.failing = False
        self.holding = False
        self.holding_reads = False
        self._held: list[tuple[Deferred[Any], Any]] = []

    @property
    def held(self) -> list[AuditRecord]:
        """The records whose writes wait."""
        return [what for _, what in self._held if isinstance(what, AuditRecord)]

    def append(self, record: AuditRecord) -> Deferred[AuditRecord]:
        if self.failing:
            return fail(OSError("database is locked"))
        if self.holding:
            d: Deferred[AuditRecord] = Deferred()
            self._held.append((d, record))
            return d
        return succeed(self._store(record))

    def recent(self, target_id: str, limit: int) -> Deferred[list[AuditRecord]]:
        found = [r for r in self.records if r.target_id == target_id][-limit:]
        if self.holding_reads:
            d: Deferred[list[AuditRecord]] = Deferred()
            self._held.append((d, found))
            return d
        return succeed(found)

    def release(self) -> None:
        """Complete every waiting call, in the order they were made."""
        held, self._held = self._held, []
        for d, what in held:
            d.callback(self._store(what) if isinstance(what, AuditRecord) else what)

    def _store(self, record: AuditRecord) -> AuditRecord:
        stored = attrs.evolve(record, audit_id=f"a-{len(self.records) + 1:06d}")
        self.records.append(stored)
        return stored

    def results(self) -> list[tuple[str | None, str]]:
        return [(r.command_id, r.result) for r in self.records]


class MemoryRelay:
    """RelayHub + Registry on a fake clock; targets reached by ipc path, in memory."""

    def __init__(self, **sections: Any) -> None:
        sections.setdefault("registration", {})
        sections["registration"] = {"allowed_ipc_path_prefixes": ["/memory/"],
                                    **sections["registration"]}
        self.clock = Clock()
        self.config = parse_relay_config(config_dict("/memory", _PKI, **sections), "/memory")
        self.registry = Registry(self.clock, self.config.limits.max_targets)
        self.audit = MemoryAudit()
        self.targets: dict[str, MemoryTarget] = {}
        self.hub = RelayHub(self.config, self.registry, self.audit, reactor=self.clock,
                            connector=self.endpoint)

    def endpoint(self, path: str) -> IStreamClientEndpoint:
        target = self.targets.get(path)
        return target.endpoint() if target is not None else Nowhere()

    def target(self, target_id: str = "payments-worker-a", **kw: Any) -> MemoryTarget:
        target = MemoryTarget(target_id, self.clock, ipc_path=f"/memory/{target_id}.sock", **kw)
        self.targets[target.ipc_path] = target
        return target

    def registration(self, target: MemoryTarget, lease: int = 30, **changes: Any
                     ) -> Registration:
        """The target's §2 payload as the registration listener validates it."""
        payload = {**target.registration(lease), **changes}
        return parse_registration(json.dumps(payload).encode(), self.config.registration)

    def register(self, target: MemoryTarget, lease: int = 30, **changes: Any) -> TargetEntry:
        entry = self.registry.register(self.registration(target, lease, **changes),
                                       "unix_uid:1000")
        self.settle()
        return entry

    def session(self, identity: Identity = OPERATOR, *, hello: bool = True
                ) -> tuple[Session, MemoryTransport]:
        transport = MemoryTransport(self.clock)
        session = self.hub.open_session(identity, transport)
        transport.session = session
        if hello:
            self.send(session, HELLO)
        return session, transport

    def send(self, session: Session, message: Any) -> None:
        session.receive(json.dumps(message).encode(), False)
        self.settle()

    def settle(self, seconds: float = 0.0) -> None:
        settle(self.clock, seconds)
