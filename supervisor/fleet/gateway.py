"""The gateway's view of the fleet: every host's targets, and links that reach them over NATS.

:class:`FleetDirectory` is the registry a :class:`~supervisor.relay.hub.RelayHub` reads
(``get``, ``entries``, ``add_observer``, ``__len__``): it is fed by the hosts' heartbeats and
registry messages, asks a host for its ``registry`` when a heartbeat names an instance or
generation it has not seen, and marks a host's targets ``unavailable`` when its heartbeats
stop for ``gateway.host_timeout_ms`` (or at once, for every host, when the bus connection
drops). :class:`RemoteLink` stands in for the hub's IPC link: the first session bound
subscribes the target's stream and asks its host to ``bind`` it (binds are coalesced per
host and reactor turn, and renewed every third of the lease with the host's full set); the
last one leaving sends ``unbind``. Stream envelopes carry §3 messages already in fleet form;
a gap in their ``seq`` is counted, added to the sessions' dropped events and refilled by a
fresh ``state``. Everything read from the bus is bounded and checked; what is refused is
counted in :attr:`FleetDirectory.counts`.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import attrs
from cryptography import x509
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from supervisor.config._common import ConfigError
from supervisor.config.fleet import NatsConfig
from supervisor.config.gateway import GatewaySettings
from supervisor.fleet.bus import Bus, BusMessage, BusSubscription
from supervisor.fleet.subjects import (
    ALL_HEARTBEATS, ALL_REGISTRIES, MAX_PAYLOAD_BYTES, PREFIX, rpc_subject,
    split_fleet_target_id, stream_subject, valid_host_id,
)
from supervisor.relay.auth import principal_of
from supervisor.relay.commands import CommandProcessor
from supervisor.wire.bounds import (COMMAND_TIMEOUT_SECONDS_RANGE, DROPPED_COUNT_RANGE,
                                     SAFE_INT_MAX, int_in)
from supervisor.wire.client import RemoteError
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import dumps, encode, loads
from supervisor.wire.registration import (MAX_DISPLAY_NAME_CHARS, MAX_SUPPORTED_COMMANDS,
                                          MAX_TARGET_ID_CHARS, CommandSpec, Registration)

__all__ = ["FleetEntry", "FleetDirectory", "RemoteLink", "GatewayCommands",
           "gateway_principal", "MAX_STREAM_MESSAGES"]

# connection_state values (§3) a remote link can be in
REGISTERED = "registered"
CONNECTING = "connecting"
CONNECTED = "connected"
UNAVAILABLE = "unavailable"
EXPIRED = "expired"
_HOST_STATES = frozenset({REGISTERED, CONNECTING, CONNECTED, "reconnecting", UNAVAILABLE,
                          EXPIRED})
#: §3 messages a stream envelope may carry; anything else is ignored (counted)
_STREAM_TYPES = frozenset({"state", "event", "log", "state_delta", "dropped_count",
                           "connection_state"})
#: session messages in one stream envelope at most
MAX_STREAM_MESSAGES = 4096
_MAX_ID_CHARS = 256


def gateway_principal(nats: NatsConfig) -> str:
    """The gateway's principal on the bus: its NATS client certificate's subject, formatted
    as §3 formats a session's (RDNs in certificate order, ``", "``)."""
    if nats.tls is None:
        raise ConfigError("nats.tls", "is required")
    path = nats.tls.certificate_path
    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except OSError as e:
        raise ConfigError("nats.tls.certificate_path",
                          f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError("nats.tls.certificate_path",
                          f"{path} holds no usable PEM certificate: {e}") from None
    principal = principal_of(cert.subject)
    if not principal:
        raise ConfigError("nats.tls.certificate_path", f"{path}: the certificate has no subject")
    return principal


@attrs.define(eq=False)
class FleetEntry:
    """One host's target as the hub sees it: a registration under the fleet id, plus what
    the host's registry says of it."""

    registration: Registration
    host_id: str
    local_id: str
    #: the target instance the host last read (null before it linked the target)
    instance_id: str | None = None
    #: the host's own connection_state of the target
    host_state: str = REGISTERED
    active_alerts: list[Any] | None = None

    @property
    def target_id(self) -> str:
        return self.registration.target_id

    def list_fields(self) -> dict[str, Any]:
        """Extension fields of its ``target_list`` entry."""
        fields: dict[str, Any] = {"host_id": self.host_id}
        if self.instance_id is not None:
            fields["instance_id"] = self.instance_id
        if self.active_alerts is not None:
            fields["active_alerts"] = self.active_alerts
        return fields

    def same_as(self, other: "FleetEntry") -> bool:
        return (self.registration == other.registration and self.instance_id == other.instance_id
                and self.host_state == other.host_state
                and self.active_alerts == other.active_alerts)


@attrs.define(eq=False)
class _Host:
    """What the gateway knows of one host."""

    host_id: str
    last_seen: float
    available: bool = True
    #: instance and generation of the newest heartbeat
    instance_id: str | None = None
    generation: int = -1
    #: instance and generation of the registry applied
    applied: tuple[str, int] | None = None
    registry_pending: bool = False
    entries: dict[str, FleetEntry] = attrs.Factory(dict)  # local id -> entry
    #: local ids bound on behalf of sessions -> their link
    interest: dict[str, "RemoteLink"] = attrs.Factory(dict)
    #: local ids to bind / unbind at the end of this reactor turn
    to_bind: set[str] = attrs.Factory(set)
    to_unbind: set[str] = attrs.Factory(set)
    flush_scheduled: bool = False
    untrusted_logged: bool = False


def _malformed(why: str) -> ValueError:
    return ValueError(why)


def _text(value: Any, limit: int = _MAX_ID_CHARS) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _commands(raw: Any) -> tuple[CommandSpec, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_SUPPORTED_COMMANDS:
        raise _malformed("supported_commands must be a short list")
    specs = []
    for item in raw:
        if (not isinstance(item, dict) or not _text(item.get("name"), 64)
                or not isinstance(item.get("idempotent"), bool)
                or not int_in(item.get("timeout_seconds"), COMMAND_TIMEOUT_SECONDS_RANGE)):
            raise _malformed("a supported command needs name, idempotent, timeout_seconds")
        specs.append(CommandSpec(item["name"], item["idempotent"], item["timeout_seconds"]))
    return tuple(specs)


def _entry(raw: Any, host_id: str, lease: int) -> FleetEntry:
    """A registry entry of ``host_id`` read strictly (``ValueError`` when it is not one)."""
    if not isinstance(raw, dict):
        raise _malformed("a registry entry must be an object")
    fleet_id = raw.get("target_id")
    split = split_fleet_target_id(fleet_id) if _text(fleet_id, MAX_TARGET_ID_CHARS + 65) else None
    if split is None or split[0] != host_id or raw.get("host_id", host_id) != host_id:
        raise _malformed(f"target_id {str(fleet_id)[:80]!r} is not one of host {host_id}")
    if len(split[1]) > MAX_TARGET_ID_CHARS:
        raise _malformed("local target id too long")
    name = raw.get("display_name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_DISPLAY_NAME_CHARS):
        raise _malformed("display_name must be a short string")
    instance = raw.get("instance_id")
    if instance is not None and not _text(instance):
        raise _malformed("instance_id must be a short string or null")
    state = raw.get("connection_state", REGISTERED)
    if state not in _HOST_STATES:
        raise _malformed("unknown connection_state")
    alerts = raw.get("active_alerts")
    if alerts is not None and (not isinstance(alerts, list) or len(alerts) > 256):
        raise _malformed("active_alerts must be a short list")
    registration = Registration(target_id=fleet_id, display_name=name or fleet_id,
                                ipc_path="", lease_seconds=lease,
                                supported_commands=_commands(raw.get("supported_commands")))
    return FleetEntry(registration, host_id, split[1], instance, state, alerts)


#: reads (``state``, ``history.*``) on their way to hosts at once; more wait their turn, so
#: that the state reads of a thousand targets bound together leave room on the bus for the
#: binds, renewals and commands (``MAX_REQUESTS_IN_FLIGHT`` of the bus)
MAX_READS_IN_FLIGHT = 256


class FleetDirectory:
    """The fleet's targets and hosts (see module docstring); registry-like for the hub."""

    log = Logger()

    def __init__(self, bus: Bus, settings: GatewaySettings, *, clock: Any, principal: str,
                 max_targets: int, instance_id: str | None = None) -> None:
        self._bus = bus
        self._settings = settings
        self._clock = clock
        self.principal = principal
        self.instance_id = instance_id or str(uuid.uuid4())
        self._max_targets = max_targets
        self._hosts: dict[str, _Host] = {}
        self._count = 0  # entries over every host
        self._observers: list[Any] = []
        self._subscriptions: list[BusSubscription] = []
        self._running = False
        #: what was refused, ignored or lost, by kind (``fleet_gateway_refused``, docs/metrics.md)
        self.counts: dict[str, int] = {}
        self._lapse = LoopingCall(self._check_hosts)
        self._lapse.clock = clock
        self._renew = LoopingCall(self._renew_all)
        self._renew.clock = clock
        self._reads = DeferredSemaphore(MAX_READS_IN_FLIGHT)

    # lifecycle
    def start(self) -> None:
        """Listen for heartbeats and registries; watch the bus connection and the hosts."""
        self._running = True
        self._subscriptions = [self._bus.subscribe(ALL_HEARTBEATS, self._heartbeat),
                               self._bus.subscribe(ALL_REGISTRIES, self._registry_message)]
        self._bus.on_connection(self._connection)
        self._lapse.start(max(0.05, self._settings.host_timeout_ms / 4000.0), now=False)
        self._renew.start(self._settings.interest_lease_seconds / 3.0, now=False)

    def stop(self) -> None:
        """Send the unbinds still due (best effort), stop watching and listening."""
        for host in list(self._hosts.values()):
            if host.flush_scheduled:
                self._flush(host)
        self._running = False
        for loop in (self._lapse, self._renew):
            if loop.running:
                loop.stop()
        for subscription in self._subscriptions:
            subscription.unsubscribe()
        self._subscriptions = []

    def count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n

    # the registry interface
    def add_observer(self, observer: Any) -> None:
        self._observers.append(observer)

    def __len__(self) -> int:
        return self._count

    def get(self, target_id: str) -> FleetEntry | None:
        split = split_fleet_target_id(target_id)
        host = self._hosts.get(split[0]) if split is not None else None
        return host.entries.get(split[1]) if host is not None and split is not None else None

    def entries(self) -> list[FleetEntry]:
        """Every host's entries, ordered by fleet id."""
        found = [e for host in self._hosts.values() for e in host.entries.values()]
        return sorted(found, key=lambda e: e.target_id)

    def unbound_state(self, target_id: str) -> str:
        """``connection_state`` of a target no session binds: ``unavailable`` while its
        host is, else ``registered``."""
        split = split_fleet_target_id(target_id)
        host = self._hosts.get(split[0]) if split is not None else None
        return REGISTERED if host is not None and host.available else UNAVAILABLE

    def hosts(self) -> dict[str, bool]:
        """Known hosts and whether each is available."""
        return {h.host_id: h.available for h in self._hosts.values()}

    def link_for(self, hub: Any, entry: FleetEntry) -> "RemoteLink":
        """The hub's ``link_factory``."""
        return RemoteLink(self, entry, observer=hub)

    def host_available(self, host_id: str) -> bool:
        host = self._hosts.get(host_id)
        return host is not None and host.available and self._bus.connected

    # what hosts publish
    def _decode(self, message: BusMessage, kind: str) -> dict[str, Any] | None:
        if len(message.data) > MAX_PAYLOAD_BYTES:
            self.count(f"{kind}_oversize")
            return None
        try:
            value = loads(message.data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            self.count(f"{kind}_malformed")
            return None
        return value

    def _subject_host(self, subject: str) -> str | None:
        parts = subject.split(".")
        if len(parts) >= 4 and parts[0] == PREFIX and parts[1] == "host":
            return parts[2]
        return None

    def _host(self, host_id: str) -> _Host | None:
        host = self._hosts.get(host_id)
        if host is None:
            if len(self._hosts) >= self._settings.max_hosts:
                self.count("hosts_ignored")
                return None
            host = _Host(host_id, self._clock.seconds())
            self._hosts[host_id] = host
            self.log.info("fleet host {host_id} seen", host_id=host_id)
        return host

    def _heartbeat(self, message: BusMessage) -> None:
        body = self._decode(message, "heartbeat")
        host_id = self._subject_host(message.subject)
        if body is None:
            return
        instance, generation = body.get("instance_id"), body.get("generation")
        if (host_id is None or body.get("host_id") != host_id or not valid_host_id(host_id)
                or not _text(instance) or not int_in(generation, (0, SAFE_INT_MAX))):
            self.count("heartbeat_malformed")
            return
        host = self._host(host_id)
        if host is None:
            return
        restarted = host.instance_id is not None and host.instance_id != instance
        host.instance_id, host.generation = instance, generation
        host.last_seen = self._clock.seconds()
        if not host.available:
            self._set_available(host, True)
        elif restarted and host.interest:
            # a new host process holds none of our bindings: bind them again now
            self.log.info("fleet host {host_id} restarted; binding its targets again",
                          host_id=host_id)
            self._rebind(host)
        if host.applied != (instance, generation):
            self._ask_registry(host)

    def _registry_message(self, message: BusMessage) -> None:
        body = self._decode(message, "registry")
        host_id = self._subject_host(message.subject)
        if body is None:
            return
        if host_id is None or body.get("host_id") != host_id:
            self.count("registry_malformed")
            return
        self._apply_registry(host_id, body)

    def _ask_registry(self, host: _Host) -> None:
        if host.registry_pending:
            return
        host.registry_pending = True

        def got(result: Any) -> None:
            host.registry_pending = False
            if not isinstance(result, dict) or result.get("host_id") != host.host_id:
                self.count("registry_malformed")
                return
            self._apply_registry(host.host_id, result)

        def failed(f: Failure) -> None:
            host.registry_pending = False
            self.log.info("registry of fleet host {host_id} not read: {error}",
                          host_id=host.host_id, error=f.getErrorMessage())

        self.rpc(host.host_id, "registry", {}).addCallbacks(got, failed)

    def _apply_registry(self, host_id: str, body: dict[str, Any]) -> None:
        instance, generation, targets = (body.get("instance_id"), body.get("generation"),
                                         body.get("targets"))
        if (not valid_host_id(host_id) or not _text(instance)
                or not int_in(generation, (0, SAFE_INT_MAX)) or not isinstance(targets, list)):
            self.count("registry_malformed")
            return
        host = self._host(host_id)
        if host is None:
            return
        if host.applied is not None and host.applied[0] == instance and \
                generation <= host.applied[1]:
            return  # not newer than what we hold (a reply crossing a published one)
        lease = max(1, int(self._settings.interest_lease_seconds))
        read: dict[str, FleetEntry] = {}
        for raw in targets[: self._max_targets]:
            try:
                entry = _entry(raw, host_id, lease)
            except ValueError as e:
                self.count("registry_entries_malformed")
                self.log.debug("registry entry of {host_id} refused: {error}", host_id=host_id,
                               error=str(e))
                continue
            read[entry.local_id] = entry
        if len(targets) > self._max_targets:
            self.count("targets_ignored", len(targets) - self._max_targets)
        host.applied = (instance, generation)
        if host.instance_id is None:
            host.instance_id, host.generation = instance, generation
        host.last_seen = max(host.last_seen, self._clock.seconds())
        self._merge(host, read)

    def _merge(self, host: _Host, read: dict[str, FleetEntry]) -> None:
        gone = [e for local, e in host.entries.items() if local not in read]
        for entry in gone:
            del host.entries[entry.local_id]
            self._count -= 1
            for observer in list(self._observers):
                observer.target_expired(entry)
        for local, entry in sorted(read.items()):
            existing = host.entries.get(local)
            if existing is None:
                if self._count >= self._max_targets:
                    self.count("targets_ignored")
                    continue
                host.entries[local] = entry
                self._count += 1
                for observer in list(self._observers):
                    observer.target_added(entry)
            elif not existing.same_as(entry):
                previous = existing.registration
                existing.registration = entry.registration
                existing.instance_id = entry.instance_id
                existing.host_state = entry.host_state
                existing.active_alerts = entry.active_alerts
                for observer in list(self._observers):
                    observer.target_updated(existing, previous)

    # availability
    def _check_hosts(self) -> None:
        deadline = self._clock.seconds() - self._settings.host_timeout_ms / 1000.0
        for host in list(self._hosts.values()):
            if host.available and host.last_seen < deadline:
                self.log.warn("fleet host {host_id} sent no heartbeat for {ms} ms: its targets "
                              "are unavailable", host_id=host.host_id,
                              ms=self._settings.host_timeout_ms)
                self._set_available(host, False)

    def _connection(self, connected: bool) -> None:
        if not self._running:
            return
        if not connected:
            self.log.warn("NATS connection lost: every fleet host is unavailable")
            for host in list(self._hosts.values()):
                if host.available:
                    self._set_available(host, False)
        else:
            self.log.info("NATS connection back; hosts return with their heartbeats")

    def _set_available(self, host: _Host, available: bool) -> None:
        host.available = available
        if available:
            self.log.info("fleet host {host_id} is back", host_id=host.host_id)
        for link in list(host.interest.values()):
            link.host_changed(available)
        for entry in list(host.entries.values()):
            for observer in list(self._observers):
                observer.target_updated(entry, entry.registration)
        if available and host.interest:
            self._rebind(host)

    # interest: bind / unbind / renew
    def want(self, link: "RemoteLink") -> None:
        """A link got its first session: stream it, and bind it at the end of this turn."""
        host = self._host(link.host_id)
        if host is None:
            return
        host.interest[link.local_id] = link
        if link.local_id in host.to_unbind:
            host.to_unbind.discard(link.local_id)  # still bound there: only a state is needed
            link.bound()
            return
        host.to_bind.add(link.local_id)
        self._schedule_flush(host)

    def release(self, link: "RemoteLink", *, unbind: bool = True) -> None:
        """A link lost its last session (or its target): stop streaming and unbind it."""
        host = self._hosts.get(link.host_id)
        if host is None or host.interest.get(link.local_id) is not link:
            return
        del host.interest[link.local_id]
        if link.local_id in host.to_bind:
            host.to_bind.discard(link.local_id)  # never asked for: nothing to undo
            return
        if unbind:
            host.to_unbind.add(link.local_id)
            self._schedule_flush(host)

    def _schedule_flush(self, host: _Host) -> None:
        if not host.flush_scheduled:
            host.flush_scheduled = True
            self._clock.callLater(0, self._flush, host)

    def _flush(self, host: _Host) -> None:
        host.flush_scheduled = False
        if host.to_unbind:
            ids, host.to_unbind = sorted(host.to_unbind), set()
            if self.host_available(host.host_id):
                self.rpc(host.host_id, "unbind", {"target_ids": ids}).addErrback(
                    lambda f: self.log.info("unbind on {host_id} failed: {error}",
                                            host_id=host.host_id, error=f.getErrorMessage()))
        if host.to_bind:
            ids, host.to_bind = sorted(host.to_bind), set()
            self._bind(host, ids)

    def _rebind(self, host: _Host) -> None:
        host.to_bind |= set(host.interest)
        self._schedule_flush(host)

    def _renew_all(self) -> None:
        for host in list(self._hosts.values()):
            if host.interest and self.host_available(host.host_id):
                self._bind(host, sorted(host.interest))

    def _bind(self, host: _Host, ids: list[str]) -> None:
        if not self.host_available(host.host_id):
            return  # the host's return binds everything again
        lease = self._settings.interest_lease_seconds
        d = self.rpc(host.host_id, "bind", {"target_ids": ids, "lease_seconds": lease})

        def bound(result: Any) -> None:
            if not isinstance(result, dict) or not isinstance(result.get("bound"), list):
                self.count("replies_malformed")
                return
            unknown = result.get("unknown") if isinstance(result.get("unknown"), list) else []
            for local in result["bound"]:
                link = host.interest.get(local) if isinstance(local, str) else None
                if link is not None:
                    link.bound()
            for local in unknown:
                link = host.interest.get(local) if isinstance(local, str) else None
                if link is not None:
                    self.count("bind_unknown")
                    link.refused(f"host {host.host_id} does not know target {local}")
            if unknown:
                self._ask_registry(host)

        def failed(f: Failure) -> None:
            self.count("bind_failed")
            why = f.getErrorMessage()
            self.log.info("bind on fleet host {host_id} failed: {error}; tried again at the "
                          "next renewal", host_id=host.host_id, error=why)
            for local in ids:
                link = host.interest.get(local)
                if link is not None:
                    link.refused(why)

        d.addCallbacks(bound, failed)

    # requests
    def rpc(self, host_id: str, op: str, fields: dict[str, Any],
            timeout: float | None = None) -> Deferred[Any]:
        """One request to ``host_id``; the reply's ``result``, or a :class:`WireError`
        (:class:`RemoteError` when the host refused)."""
        wait = timeout if timeout is not None else self._settings.request_timeout_seconds
        request = {"op": op, "gateway_principal": self.principal,
                   "gateway_instance": self.instance_id, **fields}
        data = encode(request)
        if len(data) > MAX_PAYLOAD_BYTES:
            d: Deferred[Any] = Deferred()
            d.errback(WireError("request_too_large", "fleet",
                                f"{op} request of {len(data)} bytes exceeds the bus limit"))
            return d
        d = self._bus.request(rpc_subject(host_id, self.principal), data, wait)
        d.addCallback(self._reply, host_id, op)
        return d

    def read(self, host_id: str, fields: dict[str, Any], timeout: float) -> Deferred[Any]:
        """Op ``request`` once fewer than ``MAX_READS_IN_FLIGHT`` reads are out."""
        return self._reads.run(self.rpc, host_id, "request", fields, timeout)

    @property
    def reads_waiting(self) -> int:
        return len(self._reads.waiting)

    def _reply(self, data: bytes, host_id: str, op: str) -> Any:
        if len(data) > MAX_PAYLOAD_BYTES:
            self.count("replies_oversize")
            raise WireError("invalid_fleet_response", "fleet",
                            f"host {host_id} answered {op} with an oversize reply", None, True)
        try:
            reply = loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            reply = None
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            self.count("replies_malformed")
            raise WireError("invalid_fleet_response", "fleet",
                            f"host {host_id} answered {op} with something that is not a reply",
                            None, True)
        if reply["ok"]:
            return reply.get("result")
        error = reply.get("error")
        if not isinstance(error, dict):
            self.count("replies_malformed")
            raise WireError("invalid_fleet_response", "fleet",
                            f"host {host_id} refused {op} without an error", None, True)
        refusal = RemoteError.from_json(error)
        refusal.message = refusal.message[:1024]
        refusal.code = refusal.code[:64]
        if refusal.code == "gateway_not_trusted":
            self.count("not_trusted")
            host = self._hosts.get(host_id)
            if host is not None and not host.untrusted_logged:
                host.untrusted_logged = True
                self.log.error("fleet host {host_id} does not trust this gateway ({principal}):"
                               " add it to the host's fleet.trusted_gateways", host_id=host_id,
                               principal=self.principal)
        raise refusal

    # streams
    def subscribe_stream(self, link: "RemoteLink") -> BusSubscription:
        return self._bus.subscribe(stream_subject(link.host_id, link.local_id), link.stream)

    def envelope(self, message: BusMessage, fleet_id: str) -> tuple[int, list[dict]] | None:
        """``(seq, messages)`` of a stream envelope for ``fleet_id``, or None (counted)."""
        body = self._decode(message, "stream")
        if body is None:
            return None
        seq, messages = body.get("seq"), body.get("messages")
        if (body.get("target_id") != fleet_id or not int_in(seq, (1, SAFE_INT_MAX))
                or not isinstance(messages, list) or len(messages) > MAX_STREAM_MESSAGES):
            self.count("stream_malformed")
            return None
        kept = []
        for item in messages:
            if (isinstance(item, dict) and item.get("type") in _STREAM_TYPES
                    and item.get("target_id") == fleet_id):
                kept.append(item)
            else:
                self.count("stream_messages_ignored")
        return seq, kept


class RemoteLink:
    """A host's target, as the hub's link to it (the interface of ``TargetLink`` the hub,
    CommandProcessor and HistoryRequests use); see module docstring."""

    log = Logger()

    def __init__(self, directory: FleetDirectory, entry: FleetEntry, *, observer: Any) -> None:
        self._directory = directory
        self.entry = entry
        self._observer = observer
        self.state = REGISTERED
        self.instance_id: str | None = None
        self.attached: set[Any] = set()
        self.waiting: set[Any] = set()
        self._subscription: BusSubscription | None = None
        self._seq = 0  # the last stream seq read (0: none since subscribing)
        self._has_state = False  # a state arrived since (re)binding
        self._fetching = False
        self._host_dropped = (0, 0)  # what the host reported
        self._lost_events = 0  # envelopes lost on the bus, counted as events
        #: stream envelopes lost on the bus (seq gaps)
        self.gaps = 0

    @property
    def target_id(self) -> str:
        return self.entry.target_id

    @property
    def host_id(self) -> str:
        return self.entry.host_id

    @property
    def local_id(self) -> str:
        return self.entry.local_id

    @property
    def sessions(self) -> set[Any]:
        return self.attached | self.waiting

    @property
    def dropped(self) -> tuple[int, int]:
        """(events, logs) dropped on the way, cumulative: the host's own counts, plus every
        stream envelope lost on the bus counted as one event."""
        return self._host_dropped[0] + self._lost_events, self._host_dropped[1]

    # the hub's side
    def bind(self, session: Any) -> None:
        """Bind a session: it gets a fresh state, then live messages."""
        if session in self.sessions:
            return
        self.waiting.add(session)
        if self.state == REGISTERED:
            self._seq, self._has_state = 0, False
            self._subscription = self._directory.subscribe_stream(self)
            self._enter(CONNECTING if self._directory.host_available(self.host_id)
                        else UNAVAILABLE)
            self._directory.want(self)
        elif self.state == CONNECTED:
            self._fetch_for_waiting()

    def unbind(self, session: Any) -> bool:
        """Unbind a session; True when none is left (the host is told to unbind)."""
        self.attached.discard(session)
        self.waiting.discard(session)
        if self.sessions:
            return False
        self._let_go(unbind=True)
        self._enter(REGISTERED)
        return True

    def update(self, entry: FleetEntry, previous: Registration) -> None:
        self.entry = entry

    def close(self) -> None:
        """Gateway shutdown: stop streaming and unbind."""
        self.attached.clear()
        self.waiting.clear()
        self._let_go(unbind=True)
        self._enter(REGISTERED)

    def expire(self) -> None:
        """The host no longer lists the target."""
        self._let_go(unbind=False)
        self._enter(EXPIRED)

    def request(self, method: str, params: Any, timeout: float) -> Deferred[dict[str, Any]]:
        """Op ``request`` (``state``, ``history.*``) on the host; its result (fleet ids)."""
        if not self._directory.host_available(self.host_id):
            return self._unavailable()
        local = {**params, "target_id": self.local_id} if isinstance(params, dict) else \
            {"target_id": self.local_id}
        d = self._directory.read(self.host_id, {
            "target_id": self.local_id, "method": method, "params": local,
            "timeout": timeout}, timeout + self._directory._settings.request_timeout_seconds)
        d.addCallback(self._result, method)
        return d

    def command(self, session: Any, method: str, params: dict[str, Any],
                timeout: float) -> Deferred[dict[str, Any]]:
        """Op ``command`` with the operator's identity and session; the IPC result."""
        if not self._directory.host_available(self.host_id):
            return self._unavailable()
        d = self._directory.rpc(self.host_id, "command", {
            "target_id": self.local_id, "operator": session.identity.to_json(),
            "session_id": session.session_id, "method": method,
            "params": {**params, "target_id": self.local_id}, "timeout": timeout},
            timeout + self._directory._settings.request_timeout_seconds)

        def timed_out(f: Failure) -> Failure:
            if f.check(WireError) and not f.check(RemoteError) and f.value.code == "bus_timeout":
                return Failure(WireError("ipc_timeout", "command_forward", f.value.message,
                                         self.target_id, True))
            return f

        d.addCallback(self._result, method)
        d.addErrback(timed_out)
        return d

    def fetch_state(self) -> Deferred[dict[str, Any]]:
        """A fresh ``state`` (the DashboardState object) through the host."""
        d = self.request("state", {}, self._directory._settings.request_timeout_seconds)

        def state_of(answer: dict[str, Any]) -> dict[str, Any]:
            state = answer.get("state")
            if answer.get("type") != "state" or not isinstance(state, dict):
                raise WireError("invalid_fleet_response", "state",
                                "state answer has no state object", self.target_id, True)
            return state

        d.addCallback(state_of)
        return d

    def _result(self, result: Any, method: str) -> dict[str, Any]:
        if not isinstance(result, dict):
            self._directory.count("replies_malformed")
            raise WireError("invalid_fleet_response", "fleet",
                            f"{method} answer of {self.target_id} is not an object",
                            self.target_id, True)
        return result

    def _unavailable(self) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        d.errback(WireError("target_unavailable", "command_forward",
                            f"host {self.host_id} of target {self.target_id} is unavailable",
                            self.target_id, True))
        return d

    # from the directory
    def bound(self) -> None:
        """The host bound the target: sessions still waiting without a state get one (and
        a link that was unavailable reads a fresh one for every session)."""
        if self.state == UNAVAILABLE and self._directory.host_available(self.host_id):
            self.waiting |= self.attached
            self.attached.clear()
            self._has_state = False
        if self.waiting and not self._has_state and self.state in (CONNECTING, UNAVAILABLE):
            self._fetch_for_waiting()

    def refused(self, why: str) -> None:
        if self.state in (CONNECTING, CONNECTED):
            self.log.info("{target_id} cannot be streamed: {why}", target_id=self.target_id,
                          why=why)
            self._enter(UNAVAILABLE)

    def host_changed(self, available: bool) -> None:
        if self.state in (REGISTERED, EXPIRED):
            return
        if available:
            self._has_state = False
            self._enter(CONNECTING)
        else:
            self.waiting |= self.attached  # a fresh state when the host is back
            self.attached.clear()
            self._enter(UNAVAILABLE)

    def stream(self, message: BusMessage) -> None:
        """One stream envelope from the host."""
        if self.state in (REGISTERED, EXPIRED):
            return
        read = self._directory.envelope(message, self.target_id)
        if read is None:
            return
        seq, messages = read
        gap = 0
        if seq == 1 or self._seq == 0:
            pass  # the stream (re)starts: a bind of a not-yet-streaming target
        elif seq <= self._seq:
            self._directory.count("stream_stale")
            return
        elif seq > self._seq + 1:
            gap = seq - self._seq - 1
        self._seq = seq
        for item in messages:
            self._deliver(item)
        if gap:
            self.gaps += gap
            self._lost_events += gap
            self._directory.count("stream_lost", gap)
            self.log.info("{target_id}: {gap} stream messages lost on the bus; counted as "
                          "dropped events, a fresh state follows", target_id=self.target_id,
                          gap=gap)
            self._tell_dropped()
            self.waiting |= self.attached
            self.attached.clear()
            self._fetch_for_waiting()

    # delivery
    def _deliver(self, item: dict[str, Any]) -> None:
        kind = item["type"]
        if kind == "state":
            state = item.get("state")
            if isinstance(state, dict):
                self._use_state(state, everyone=True)
            return
        if kind == "connection_state":
            state = item.get("state")
            if state == CONNECTED:
                if self._has_state:
                    self._enter(CONNECTED)
            elif state in _HOST_STATES:
                self._enter(UNAVAILABLE if state == EXPIRED else
                            CONNECTING if state == REGISTERED else state)
            return
        if kind == "dropped_count":
            events, logs = item.get("dropped_event_count"), item.get("dropped_log_count")
            if int_in(events, DROPPED_COUNT_RANGE) and int_in(logs, DROPPED_COUNT_RANGE):
                self._host_dropped = (events, logs)
                self._tell_dropped()
            return
        if kind == "event":
            self._observer.link_events(self, [item.get("event")])
        if not self.attached:
            return
        text = dumps(item)
        for session in list(self.attached):
            session.deliver_push(self.target_id, item, text)

    def _use_state(self, state: dict[str, Any], *, everyone: bool) -> None:
        self._has_state = True
        target = state.get("target")
        instance = target.get("instance_id") if isinstance(target, dict) else None
        self.instance_id = instance if isinstance(instance, str) else None
        if self._directory.host_available(self.host_id):
            self._enter(CONNECTED)
        receivers = self.sessions if everyone else set(self.waiting)
        for session in list(receivers):
            session.deliver_state(self.target_id, state)
        self.attached |= receivers
        self.waiting -= receivers

    def _fetch_for_waiting(self) -> None:
        if self._fetching:
            return  # the answer in flight serves every session waiting when it comes
        self._fetching = True

        def got(state: dict[str, Any]) -> None:
            self._fetching = False
            if self.state not in (REGISTERED, EXPIRED) and self.waiting:
                self._use_state(state, everyone=False)

        def failed(f: Failure) -> None:
            self._fetching = False
            self.log.info("no fresh state of {target_id}: {error}", target_id=self.target_id,
                          error=f.getErrorMessage())

        self.fetch_state().addCallbacks(got, failed)

    def _tell_dropped(self) -> None:
        events, logs = self.dropped
        for session in list(self.sessions):
            session.deliver_dropped(self.target_id, events, logs)

    def _let_go(self, *, unbind: bool) -> None:
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None
            self._directory.release(self, unbind=unbind)

    def _enter(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._observer.link_state_changed(self, state)


class GatewayCommands(CommandProcessor):
    """The relay's command handling (authorization, audit, rate limits) that forwards to
    the target's host with op ``command``, carrying the operator's identity and session."""

    def forward(self, link: Any, session: Any, method: str, params: dict[str, Any],
                timeout: float) -> Deferred[dict[str, Any]]:
        return link.command(session, method, params, timeout)


class DirectoryCollector(Collector):
    """``fleet_gateway_hosts`` (by availability), ``fleet_gateway_refused`` (what the
    directory counted, by kind) and ``fleet_gateway_reads_waiting`` at each scrape."""

    def __init__(self, directory: FleetDirectory) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Any]:
        hosts = GaugeMetricFamily("fleet_gateway_hosts", "fleet hosts known, by availability",
                                  labels=["available"])
        known = self._directory.hosts()
        up = sum(1 for v in known.values() if v)
        hosts.add_metric(["true"], up)
        hosts.add_metric(["false"], len(known) - up)
        yield hosts
        counted = CounterMetricFamily("fleet_gateway_refused",
                                      "bus messages refused, ignored or lost, by kind",
                                      labels=["kind"])
        for kind, n in sorted(self._directory.counts.items()):
            counted.add_metric([kind], n)
        yield counted
        yield GaugeMetricFamily("fleet_gateway_reads_waiting",
                                "state and history reads waiting for a free slot",
                                value=self._directory.reads_waiting)
