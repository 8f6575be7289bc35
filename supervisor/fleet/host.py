"""A host relay's part in the fleet: heartbeats, its registry, and the gateways' requests.

:class:`FleetHost` runs beside a relay's :class:`~supervisor.relay.hub.RelayHub` when
``fleet.enabled``. Every ``fleet.heartbeat_ms`` it publishes a heartbeat naming its instance
and registry generation; the registry (the hub's ``target_list`` rows under fleet ids, with
``host_id``) is published when it changes, at most every :data:`REGISTRY_INTERVAL_SECONDS`,
and answered to op ``registry``. Requests arrive on ``fleet.rpc.<host_id>.<gateway token>``
and are served only when the token is that of the principal the request names and the
principal is in ``fleet.trusted_gateways``.

Nothing is bound at registration: op ``bind`` records a gateway instance's interest in a
target with a lease, and only then does the host bind the target's IPC link (as a session
would) and stream what it carries onto the target's stream subject, in envelopes
``{target_id, seq, messages}`` (``seq`` from 1 for each new stream). ``unbind`` or a lease
that runs out without renewal removes the interest; the last one gone unbinds the link.

Commands (op ``command``) are checked (``requested_by`` is the operator's principal, the
command is one of §4's, the target is connected), audited in the relay's own audit store
with the operator's identity and the gateway's principal (session ``fleet:<session id>``),
forwarded on the link and answered with the target's ``command_result``. The gateway has
already applied its own authorization; the host's ``authorization`` governs its own
sessions only.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from supervisor.config.fleet import FleetConfig
from supervisor.fleet.bus import Bus, BusMessage, BusSubscription
from supervisor.fleet.subjects import (MAX_PAYLOAD_BYTES, fleet_target_id, gateway_token,
                                       heartbeat_subject, host_rpc_pattern, registry_subject,
                                       stream_subject)
from supervisor.relay.audit import AuditRecord
from supervisor.relay.auth import Identity
from supervisor.relay.commands import MAX_ID_CHARS
from supervisor.wire.bounds import COMMAND_TIMEOUT_SECONDS_RANGE, int_in
from supervisor.wire.client import RemoteError
from supervisor.wire.commands import CommandResult
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import dumps, encode, loads
from supervisor.wire.timestamps import rfc3339
from supervisor.wire.vocabulary import COMMANDS, ipc_method

__all__ = ["FleetHost", "HostCollector", "REGISTRY_INTERVAL_SECONDS"]

#: the registry is published at most this often (changes in between are coalesced)
REGISTRY_INTERVAL_SECONDS = 0.25
#: session messages in one stream envelope at most (as the gateway accepts)
MAX_ENVELOPE_MESSAGES = 4096
#: gateway instances whose interest one host keeps at most
MAX_GATEWAY_INSTANCES = 16
#: requests being served at once at most (commands and reads wait on targets)
MAX_IN_FLIGHT = 256
_REQUEST_METHODS = frozenset({"state", "history.logs", "history.events"})
_OPS = ("registry", "bind", "unbind", "request", "command")
_ENVELOPE_SLACK = 256  # bytes of an envelope besides its messages


def _error(code: str, message: str, target_id: str | None = None, *,
           stage: str = "fleet", retryable: bool = False) -> dict[str, Any]:
    return {"ok": False, "error": WireError(code, stage, message[:1024], target_id,
                                            retryable).to_json()}


def _fleet_ids(value: Any, local: str, fleet: str) -> Any:
    """``value`` with every ``target_id`` that names ``local`` naming ``fleet`` instead."""
    if isinstance(value, dict):
        return {k: (fleet if k == "target_id" and v == local else _fleet_ids(v, local, fleet))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_fleet_ids(v, local, fleet) for v in value]
    return value


def _text(value: Any, limit: int = MAX_ID_CHARS) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


class _Stream:
    """The link subscriber that carries one target onto its stream subject while some
    gateway wants it; messages of one reactor turn go out as one envelope."""

    def __init__(self, host: "FleetHost", local: str) -> None:
        self._host = host
        self.local = local
        self.fleet = fleet_target_id(host.host_id, local)
        self.subject = stream_subject(host.host_id, local)
        self.seq = 0
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._scheduled = False

    # the link's side (LinkSubscriber)
    def deliver_state(self, target_id: str, state: dict[str, Any]) -> None:
        self._add({"type": "state", "target_id": self.fleet,
                   "state": _fleet_ids(state, self.local, self.fleet)})

    def deliver_push(self, target_id: str, push: dict[str, Any], text: str) -> None:
        self._add(_fleet_ids(push, self.local, self.fleet))

    def deliver_dropped(self, target_id: str, events: int, logs: int) -> None:
        self._add({"type": "dropped_count", "target_id": self.fleet,
                   "dropped_event_count": events, "dropped_log_count": logs})

    def deliver_connection_state(self, target_id: str, state: str, force: bool = False) -> None:
        self._add({"type": "connection_state", "target_id": self.fleet, "state": state})

    # envelopes
    def _add(self, message: dict[str, Any]) -> None:
        text = dumps(message)
        size = len(text.encode("utf-8")) + 1
        if size + _ENVELOPE_SLACK > MAX_PAYLOAD_BYTES:
            # cannot cross the bus: its seq is skipped, so the gateway counts it lost and
            # reads a fresh state
            self.flush()
            self.seq += 1
            self._host.count("stream_oversize")
            self._host.log.warn("{target_id}: a {kind} message of {size} bytes exceeds the bus "
                                "limit; counted as lost", target_id=self.local,
                                kind=message.get("type"), size=size)
            return
        if (self._pending_bytes + size + _ENVELOPE_SLACK > MAX_PAYLOAD_BYTES
                or len(self._pending) >= MAX_ENVELOPE_MESSAGES):
            self.flush()
        self._pending.append(text)
        self._pending_bytes += size
        if not self._scheduled:
            self._scheduled = True
            self._host.clock.callLater(0, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        texts, self._pending, self._pending_bytes = self._pending, [], 0
        self.seq += 1
        data = ('{"target_id":' + dumps(self.fleet) + ',"seq":' + str(self.seq)
                + ',"messages":[' + ",".join(texts) + "]}\n").encode("utf-8")
        self._host.streamed(len(texts))
        self._host.bus.publish(self.subject, data)


@attrs.define(eq=False)
class _Request:
    op: str
    principal: str
    instance: str
    body: dict[str, Any]


class FleetHost:
    """A relay's fleet side (see module docstring); ``start``/``stop`` with the relay."""

    log = Logger()

    def __init__(self, hub: Any, bus: Bus, config: FleetConfig, *, clock: Any,
                 instance_id: str | None = None) -> None:
        self.hub = hub
        self.bus = bus
        self.config = config
        self.clock = clock
        self.host_id = config.host_id
        self.instance_id = instance_id or str(uuid.uuid4())
        self.generation = 0
        self._registry_text: str | None = None  # the targets of the last generation
        self._registry_due = False
        self._registry_sent_at: float | None = None
        self._subscription: BusSubscription | None = None
        self._running = False
        # (gateway instance, local target id) -> lease deadline
        self._interest: dict[tuple[str, str], float] = {}
        self._streams: dict[str, _Stream] = {}
        self._in_flight = 0
        self._untrusted_logged: set[str] = set()
        #: requests served, by op
        self.requests: dict[str, int] = {}
        #: what was refused or lost, by kind (``fleet_host_refused``)
        self.counts: dict[str, int] = {}
        #: session messages streamed onto the bus
        self.stream_messages = 0
        self._beat = LoopingCall(self._heartbeat)
        self._beat.clock = clock
        self._sweep = LoopingCall(self._expire_interest)
        self._sweep.clock = clock
        hub.registry.add_observer(self)
        hub.on_target_list_change.append(self._registry_changed)

    @property
    def bound(self) -> int:
        """Targets streamed for gateways now."""
        return len(self._streams)

    def count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n

    def streamed(self, n: int) -> None:
        self.stream_messages += n

    # lifecycle
    def start(self) -> None:
        self._running = True
        self._subscription = self.bus.subscribe(host_rpc_pattern(self.host_id), self._rpc)
        self._refresh_registry()
        self._beat.start(self.config.heartbeat_ms / 1000.0, now=True)
        self._sweep.start(max(0.25, min(1.0, self.config.interest_lease_seconds / 4)),
                          now=False)
        self.log.info("fleet host {host_id} (instance {instance}) joined the fleet",
                      host_id=self.host_id, instance=self.instance_id)

    def stop(self) -> None:
        """Stop serving and streaming; every link bound for gateways is let go."""
        self._running = False
        for loop in (self._beat, self._sweep):
            if loop.running:
                loop.stop()
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None
        for local in list(self._streams):
            self._end_stream(local)
        self._interest.clear()

    # heartbeat and registry
    def _heartbeat(self) -> None:
        self.bus.publish(heartbeat_subject(self.host_id), encode({
            "host_id": self.host_id, "instance_id": self.instance_id,
            "generation": self.generation, "sent_at": rfc3339(self.clock.seconds()),
            "interval_ms": self.config.heartbeat_ms}))

    def _rows(self) -> list[dict[str, Any]]:
        rows = []
        for row in self.hub.target_list():
            local = row["target_id"]
            row["target_id"] = fleet_target_id(self.host_id, local)
            row["host_id"] = self.host_id
            rows.append(row)
        return rows

    def _refresh_registry(self) -> bool:
        """Read the registry; a new generation when it changed (True then)."""
        rows = self._rows()
        budget = MAX_PAYLOAD_BYTES - 512
        texts = []
        for row in rows:
            text = dumps(row)
            budget -= len(text.encode("utf-8")) + 1
            if budget < 0:
                self.count("registry_truncated", len(rows) - len(texts))
                self.log.warn("fleet registry cut to {kept} of {all} targets: it must fit "
                              "{limit} bytes", kept=len(texts), all=len(rows),
                              limit=MAX_PAYLOAD_BYTES)
                break
            texts.append(text)
        text = "[" + ",".join(texts) + "]"
        if text == self._registry_text:
            return False
        self._registry_text = text
        self.generation += 1
        return True

    def _registry_body(self) -> bytes:
        return ('{"host_id":' + dumps(self.host_id) + ',"instance_id":'
                + dumps(self.instance_id) + ',"generation":' + str(self.generation)
                + ',"targets":' + (self._registry_text or "[]") + "}\n").encode("utf-8")

    def _registry_changed(self) -> None:
        if self._registry_due or not self._running:
            return
        self._registry_due = True
        now = self.clock.seconds()
        last = self._registry_sent_at
        wait = 0.0 if last is None else max(0.0, last + REGISTRY_INTERVAL_SECONDS - now)
        self.clock.callLater(wait, self._publish_registry)

    def _publish_registry(self) -> None:
        self._registry_due = False
        if not self._running:
            return
        self._registry_sent_at = self.clock.seconds()
        if self._refresh_registry():
            self.bus.publish(registry_subject(self.host_id), self._registry_body())

    # registry observer
    def target_added(self, entry: Any) -> None:
        pass  # the hub's target_list change announces it

    def target_updated(self, entry: Any, previous: Any) -> None:
        pass

    def target_expired(self, entry: Any) -> None:
        local = entry.target_id
        stream = self._streams.pop(local, None)
        for key in [k for k in self._interest if k[1] == local]:
            del self._interest[key]
        if stream is not None:
            stream.deliver_connection_state(local, "expired")
            stream.flush()

    # interest
    def _want(self, instance: str, local: str, lease: float) -> bool:
        key = (instance, local)
        if key not in self._interest:
            instances = {k[0] for k in self._interest}
            if instance not in instances and len(instances) >= MAX_GATEWAY_INSTANCES:
                self.count("interest_refused")
                return False
        self._interest[key] = self.clock.seconds() + lease
        if local not in self._streams:
            stream = _Stream(self, local)
            self._streams[local] = stream
            self.hub.attach(stream, local)
        return True

    def _drop(self, instance: str, local: str) -> None:
        self._interest.pop((instance, local), None)
        if not any(k[1] == local for k in self._interest):
            self._end_stream(local)

    def _end_stream(self, local: str) -> None:
        stream = self._streams.pop(local, None)
        if stream is not None:
            stream.flush()
            self.hub.detach(stream, local)

    def _expire_interest(self) -> None:
        now = self.clock.seconds()
        lapsed = [k for k, deadline in self._interest.items() if deadline <= now]
        for instance, local in lapsed:
            self.log.info("interest of gateway instance {instance} in {target_id} lapsed",
                          instance=instance, target_id=local)
            self._drop(instance, local)
        if lapsed:
            self.count("interest_lapsed", len(lapsed))

    # requests
    def _rpc(self, message: BusMessage) -> None:
        if message.reply is None:
            self.count("requests_without_reply")
            return
        request = self._read(message)
        if isinstance(request, dict):  # an error reply
            self.bus.reply(message, encode(request))
            return
        self.requests[request.op] = self.requests.get(request.op, 0) + 1
        if self._in_flight >= MAX_IN_FLIGHT:
            self.count("busy")
            self.bus.reply(message, encode(_error(
                "host_busy", f"{MAX_IN_FLIGHT} requests are being served", retryable=True)))
            return
        self._in_flight += 1
        d = Deferred.fromCoroutine(self._serve(request))

        def answered(reply: dict[str, Any]) -> None:
            self._in_flight -= 1
            data = encode(reply)
            if len(data) > MAX_PAYLOAD_BYTES:
                self.count("replies_oversize")
                data = encode(_error("reply_too_large", f"the {request.op} reply of "
                                     f"{len(data)} bytes exceeds the bus limit"))
            self.bus.reply(message, data)

        def failed(f: Any) -> None:
            self._in_flight -= 1
            self.log.failure("fleet request {op} failed", f, op=request.op)
            self.bus.reply(message, encode(_error("internal_error", "internal error")))

        d.addCallbacks(answered, failed)

    def _read(self, message: BusMessage) -> _Request | dict[str, Any]:
        """The request, or the error reply it gets."""
        if len(message.data) > MAX_PAYLOAD_BYTES:
            self.count("requests_oversize")
            return _error("request_too_large", "request exceeds the bus limit")
        try:
            body = loads(message.data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            self.count("requests_malformed")
            return _error("invalid_fleet_request", "a request must be a JSON object")
        principal = body.get("gateway_principal")
        token = message.subject.rsplit(".", 1)[-1]
        if (not _text(principal, 1024) or gateway_token(principal) != token
                or principal not in self.config.trusted_gateways):
            self.count("not_trusted")
            name = str(principal)[:200]
            if name not in self._untrusted_logged and len(self._untrusted_logged) < 64:
                self._untrusted_logged.add(name)
                self.log.error("fleet request from gateway {principal}, which is not in "
                               "fleet.trusted_gateways (or asked under another's subject): "
                               "refused", principal=name)
            return _error("gateway_not_trusted", f"gateway {name} is not trusted by host "
                          f"{self.host_id}")
        op, instance = body.get("op"), body.get("gateway_instance")
        if op not in _OPS or not _text(instance):
            self.count("requests_malformed")
            return _error("invalid_fleet_request", "op must be one of "
                          f"{', '.join(_OPS)} and gateway_instance a short string")
        return _Request(op, principal, instance, body)

    async def _serve(self, request: _Request) -> dict[str, Any]:
        body = request.body
        if request.op == "registry":
            self._refresh_registry()
            return {"ok": True, "result": loads(self._registry_body().decode("utf-8"))}
        if request.op in ("bind", "unbind"):
            ids = body.get("target_ids")
            if (not isinstance(ids, list) or len(ids) > self.hub.config.limits.max_targets
                    or not all(_text(i, 1024) for i in ids)):
                self.count("requests_malformed")
                return _error("invalid_fleet_request", "target_ids must be a list of ids")
            if request.op == "unbind":
                for local in ids:
                    self._drop(request.instance, local)
                return {"ok": True, "result": {"unbound": ids}}
            lease = body.get("lease_seconds", self.config.interest_lease_seconds)
            if not isinstance(lease, (int, float)) or isinstance(lease, bool) or \
                    not 1 <= lease <= 3600:
                lease = self.config.interest_lease_seconds
            bound, unknown = [], []
            for local in ids:
                if self.hub.registry.get(local) is not None and \
                        self._want(request.instance, local, float(lease)):
                    bound.append(local)
                else:
                    unknown.append(local)
            return {"ok": True, "result": {"bound": bound, "unknown": unknown}}
        local = body.get("target_id")
        if not _text(local, 1024) or self.hub.registry.get(local) is None:
            return _error("unknown_target", f"host {self.host_id} has no target "
                          f"{str(local)[:200]}", None)
        fleet = fleet_target_id(self.host_id, local)
        if request.op == "request":
            return await self._request(body, local, fleet)
        return await self._command(request, local, fleet)

    async def _request(self, body: dict[str, Any], local: str, fleet: str) -> dict[str, Any]:
        method, params = body.get("method"), body.get("params")
        if method not in _REQUEST_METHODS or not isinstance(params, dict):
            return _error("invalid_fleet_request", "request method must be one of "
                          f"{', '.join(sorted(_REQUEST_METHODS))} with params", fleet)
        link = self.hub.links.get(local)
        if link is None:
            return _error("target_unavailable", f"target {local} is not bound", fleet,
                          retryable=True)
        timeout = self.hub.config.timeouts.ipc_request_seconds
        try:
            if method == "state":
                state = await link.fetch_state()
                result = {"type": "state", "target_id": fleet,
                          "state": _fleet_ids(state, local, fleet)}
            else:
                answer = await link.request(method, {**params, "target_id": local}, timeout)
                result = _fleet_ids(answer, local, fleet)
        except WireError as e:
            return {"ok": False, "error": _fleet_ids(e.to_json(), local, fleet)}
        return {"ok": True, "result": result}

    async def _command(self, request: _Request, local: str, fleet: str) -> dict[str, Any]:
        body = request.body
        operator, params = body.get("operator"), body.get("params")
        session_id, method = body.get("session_id"), body.get("method")
        if (not isinstance(operator, dict) or not isinstance(params, dict)
                or not all(_text(operator.get(k), 1024)
                           for k in ("client_identity", "principal", "source"))
                or not _text(session_id)):
            self.count("requests_malformed")
            return _error("invalid_fleet_request", "a command needs operator, session_id and "
                          "params", fleet)
        identity = Identity(operator["client_identity"], operator["principal"],
                            operator["source"])
        command = params.get("command")
        problem: WireError | None = None
        if params.get("requested_by") != identity.principal:
            problem = WireError("requested_by_mismatch", "command_validate",
                                "requested_by is not the operator's principal", fleet)
        elif command not in COMMANDS or method != ipc_method(command):
            problem = WireError("unsupported_command", "command_validate",
                                f"{str(command)[:64]!r} is not a command", fleet)
        elif not _text(params.get("command_id")):
            problem = WireError("invalid_message_schema", "command_validate",
                                "command_id must be a short string", fleet)
        link = self.hub.links.get(local)
        if problem is None and (link is None or link.state != "connected"):
            problem = WireError("target_unavailable", "command_forward",
                                f"target {local} is not connected", fleet, True)
        record = AuditRecord(
            session_id=f"fleet:{session_id}", identity=identity, target_id=local,
            command_id=params.get("command_id") if _text(params.get("command_id")) else None,
            command=command if isinstance(command, str) else None,
            target=params.get("target") if isinstance(params.get("target"), dict) else None,
            reason=str(params.get("reason", ""))[:self.hub.config.limits.max_reason_chars],
            confirmed=params.get("confirmed") is True, result="accepted",
            detail=f"forwarded by gateway {request.principal}"[:1024],
            occurred_at=self.clock.seconds())
        if problem is not None:
            self.count("commands_refused")
            await self._audit(attrs.evolve(record, result="rejected", detail=(
                f"{problem.code}: {problem.message} (from gateway {request.principal})")[:1024]))
            return {"ok": False, "error": problem.to_json()}
        try:
            accepted = await self.hub.audit.append(record)
        except Exception as e:
            self.log.error("audit write failed; refusing fleet command {command_id}: {error}",
                           command_id=record.command_id, error=str(e))
            return _error("audit_unavailable", "command refused: its audit record could not "
                          "be written", fleet, stage="audit", retryable=True)
        self.hub.publish_audit(accepted)
        timeout = body.get("timeout")
        if not int_in(int(timeout) if isinstance(timeout, (int, float)) and
                      not isinstance(timeout, bool) else None, COMMAND_TIMEOUT_SECONDS_RANGE):
            timeout = 30
        result: CommandResult = await self.hub.commands.outcome(
            link, None, command, {**params, "target_id": local}, float(timeout))
        error = result.error
        detail = (result.status if error is None
                  else f"{result.status}: {error.code}: {error.message}")
        final = attrs.evolve(accepted, audit_id=None,
                             result="completed" if result.succeeded else "failed",
                             detail=f"{detail} (forwarded by gateway {request.principal})"[:1024],
                             occurred_at=self.clock.seconds())
        await self._audit(final)
        if result.status == "rejected" and isinstance(error, RemoteError):
            return {"ok": False, "error": _fleet_ids(error.to_json(), local, fleet)}
        return {"ok": True, "result": _fleet_ids(result.to_message(), local, fleet)}

    async def _audit(self, record: AuditRecord) -> None:
        try:
            stored = await self.hub.audit.append(record)
        except Exception as e:
            self.log.error("cannot audit fleet command {command_id}: {error}",
                           command_id=record.command_id, error=str(e))
            return
        self.hub.publish_audit(stored)


class HostCollector(Collector):
    """``fleet_host_bound``, ``fleet_host_requests`` (by op), ``fleet_host_refused`` (by
    kind) and ``fleet_host_stream_messages`` at each scrape."""

    def __init__(self, host: FleetHost) -> None:
        self._host = host

    def collect(self) -> Iterator[Any]:
        host = self._host
        yield GaugeMetricFamily("fleet_host_bound", "targets streamed for fleet gateways",
                                value=host.bound)
        requests = CounterMetricFamily("fleet_host_requests", "gateway requests, by op",
                                       labels=["op"])
        for op in _OPS:
            requests.add_metric([op], host.requests.get(op, 0))
        yield requests
        refused = CounterMetricFamily("fleet_host_refused",
                                      "requests refused and messages lost, by kind",
                                      labels=["kind"])
        for kind, n in sorted(host.counts.items()):
            refused.add_metric([kind], n)
        yield refused
        yield CounterMetricFamily("fleet_host_stream_messages",
                                  "session messages streamed onto the bus",
                                  value=host.stream_messages)
