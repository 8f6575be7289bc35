"""The relay's switchboard: sessions, their bindings to targets, links, target lists, audit.

A session binds every registered target (its filter narrows events and logs, never the
binding), as soon as it is established and whenever a target registers later. Binding is what
opens a target's IPC link; the link closes when its last session unbinds. Registry and link
changes become ``target_list`` / ``connection_state`` messages; audit records become
``audit_event`` messages for the sessions bound to the record's target, and binding a target
replays its last ``limits.audit_replay`` records (the newest of them whose messages fit in
``limits.audit_replay_max_bytes``; a replay cut by that bound marks its first ``audit_event``
with ``"replay_truncated": true``). A filter change that widens a target's
stream asks for at most one fresh ``state`` per session and target at a time: changes while
one is being read ask for one more when it arrives, not one each.

``target_list`` is a snapshot, so bursts of changes are coalesced: one per reactor turn, and
at most one per session every :data:`TARGET_LIST_INTERVAL_SECONDS` (a change inside that
window is sent, newest content only, when it ends). A session binds a newly registered
target right after the ``target_list`` that names it, so its ``state`` never comes first.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from supervisor.config.relay import RelayConfig
from supervisor.relay.alerts import AlertEngine, WebhookSender
from supervisor.relay.audit import AuditRecord, AuditStore
from supervisor.relay.auth import Authorizer, Identity
from supervisor.relay.filters import FilterConditions
from supervisor.relay.commands import CommandProcessor
from supervisor.relay.metrics import RelayMetrics
from supervisor.relay.history import HistoryRequests
from supervisor.relay.ratelimit import SessionRates
from supervisor.relay.registry import Registry, TargetEntry
from supervisor.relay.session import Session, SessionTransport
from supervisor.relay.targetlink import CONNECTED, EXPIRED, REGISTERED, Connector, TargetLink
from supervisor.wire.ndjson import dumps
from supervisor.wire.registration import Registration

__all__ = ["RelayHub", "LinkFactory", "TARGET_LIST_INTERVAL_SECONDS"]

#: ``factory(hub, entry)`` → the link of a target the first session binds; the default makes
#: a :class:`TargetLink` (IPC); a gateway makes links that reach targets through their host
LinkFactory = Callable[["RelayHub", TargetEntry], Any]

TARGET_LIST_INTERVAL_SECONDS = 0.25


class RelayHub:
    """Owns sessions and target links; observes the registry and the links."""

    log = Logger()

    def __init__(self, config: RelayConfig, registry: Registry, audit: AuditStore, *,
                 reactor: Any, connector: Connector | None = None,
                 link_factory: LinkFactory | None = None,
                 processor: type[CommandProcessor] = CommandProcessor) -> None:
        self.config = config
        self.registry = registry
        self.audit = audit
        self._reactor = reactor
        self._connector = connector  # how links reach targets (Unix sockets by default)
        self._link_factory = link_factory
        self.sessions: dict[str, Session] = {}
        self.links: dict[str, TargetLink] = {}
        self.metrics = RelayMetrics()
        self.commands = processor(self, audit, Authorizer(config.authorization), reactor,
                                  count=lambda result: self.metrics.commands.labels(result).inc())
        #: the alert rules' engine (``None`` without rules)
        self.alerts: AlertEngine | None = None
        if config.alerts.rules:
            self.alerts = AlertEngine(config.alerts, reactor, WebhookSender(config.alerts, reactor))
            self.alerts.on_change = self._schedule_target_list
        self.history = HistoryRequests(self.links, config.timeouts.ipc_request_seconds)
        #: called (no arguments) whenever the target list changes (a fleet host republishes)
        self.on_target_list_change: list[Callable[[], None]] = []
        self._target_list_pending = False
        self._target_list_cache: str | None = None  # the current text; None after a change
        # per session: when its last target_list went out, and its deferred next one
        self._target_list_sent_at: dict[str, float] = {}
        self._target_list_due: dict[str, IDelayedCall] = {}
        self._closing = False
        # target_id -> instance_id of the last state read (one per registered target)
        self._instances: dict[str, str] = {}
        # per (session_id, target_id): live audit texts held back while the replay is read
        self._audit_replays: dict[tuple[str, str], list[tuple[str | None, str]]] = {}
        # per (session_id, target_id) with a filter refill being read: whether another
        # widening arrived meanwhile (so one more is read when it comes)
        self._refills: dict[tuple[str, str], bool] = {}
        registry.add_observer(self)

    # sessions
    def can_accept_session(self) -> bool:
        return len(self.sessions) < self.config.limits.max_sessions

    def open_session(self, identity: Identity, transport: SessionTransport) -> Session:
        """Create a session, register it and send ``server_hello``."""
        session = Session(self, identity, transport, session_id=str(uuid.uuid4()),
                          queue_limit=self.config.limits.session_queue,
                          queue_bytes=self.config.limits.session_queue_bytes,
                          pre_state_cap=max(1, self.config.limits.audit_replay),
                          rates=SessionRates.from_limits(self._reactor, self.config.limits))
        self.sessions[session.session_id] = session
        self.log.info("session {session_id} opened for {principal}",
                      session_id=session.session_id, principal=identity.principal)
        session.open()
        return session

    def session_established(self, session: Session) -> None:
        """After ``client_hello``: the target list, then bind (state follows per target)."""
        self._send_target_list(session)

    def session_closed(self, session: Session) -> None:
        self._target_list_sent_at.pop(session.session_id, None)
        due = self._target_list_due.pop(session.session_id, None)
        if due is not None and due.active():
            due.cancel()
        for target_id in list(session.bound):
            self._unbind(session, target_id)
        if self.sessions.pop(session.session_id, None) is not None:
            for counts in session.outbox.dropped.values():
                self.metrics.closed_drops[0] += counts[0]
                self.metrics.closed_drops[1] += counts[1]
        self.log.info("session {session_id} closed", session_id=session.session_id)

    def permitted_commands(self, identity: Identity) -> list[str]:
        """The commands ``identity`` may run (``server_hello.permitted_commands``)."""
        return self.commands.permitted(identity)

    def session_rate_limited(self, session: Session, limit: str) -> None:
        """A session exceeded a rate limit and closes (counted by limit)."""
        self.metrics.rate_limited.labels(limit).inc()

    def filter_changed(self, session: Session, previous: FilterConditions) -> None:
        """After a filter change: every bound target whose events or logs the new conditions
        may let through more of gets a fresh ``state``, so the session's history refills."""
        for target_id in sorted(session.bound):
            if not session.filter.widens(previous, target_id):
                continue
            key = (session.session_id, target_id)
            if key in self._refills:
                self._refills[key] = True  # one more when the pending one arrives
                continue
            self._fetch_refill(session, target_id)

    def _fetch_refill(self, session: Session, target_id: str) -> None:
        """Read one fresh ``state`` for a widened filter (at most one pending per key)."""
        link = self.links.get(target_id)
        if link is None or link.state != CONNECTED:
            return  # its next connection hands the session a state anyway
        key = (session.session_id, target_id)
        self._refills[key] = False

        def failed(f: Any) -> None:
            self.log.info("no fresh state of {target_id} after a filter change: {error}",
                          target_id=target_id, error=f.getErrorMessage())
            self._refill_done(session, target_id)

        link.fetch_state().addCallbacks(lambda state: self._refill(session, target_id, state),
                                        failed)

    def _refill(self, session: Session, target_id: str, state: dict[str, Any]) -> None:
        if not session.closed and target_id in session.bound:
            session.deliver_state(target_id, state)
        self._refill_done(session, target_id)

    def _refill_done(self, session: Session, target_id: str) -> None:
        again = self._refills.pop((session.session_id, target_id), False)
        if again and not session.closed and target_id in session.bound:
            self._fetch_refill(session, target_id)

    @property
    def refills_pending(self) -> int:
        """Fresh states being read for filter changes (at most one per session and target)."""
        return len(self._refills)

    def _bind(self, session: Session, target_id: str) -> None:
        entry = self.registry.get(target_id)
        if entry is None or target_id in session.bound:
            return
        session.bound.add(target_id)
        link = self._link_for(entry)
        self._replay_audit(session, target_id)
        link.bind(session)

    def _link_for(self, entry: TargetEntry) -> TargetLink:
        link = self.links.get(entry.target_id)
        if link is None:
            if self._link_factory is not None:
                link = self._link_factory(self, entry)
            else:
                link = TargetLink(entry, reactor=self._reactor, timeouts=self.config.timeouts,
                                  limits=self.config.limits, observer=self,
                                  connector=self._connector,
                                  registration=self.config.registration)
            self.links[entry.target_id] = link
        return link

    def attach(self, subscriber: Any, target_id: str) -> bool:
        """Bind a subscriber other than a session (a fleet host's stream) to a registered
        target's link, opening it as a session's binding would; False when unknown."""
        entry = self.registry.get(target_id)
        if entry is None or self._closing:
            return False
        self._link_for(entry).bind(subscriber)
        return True

    def detach(self, subscriber: Any, target_id: str) -> None:
        """Unbind a session or what :meth:`attach` bound; the link closes when nobody is
        left."""
        link = self.links.get(target_id)
        if link is not None and link.unbind(subscriber):
            self.links.pop(target_id, None)

    def start_alerts(self) -> None:
        """Evaluate alert rules from now on; ``watch: always`` links every registered target."""
        if self.alerts is None:
            return
        self.alerts.start()
        if self.alerts.watch_always:
            for entry in self.registry.entries():
                self._link_for(entry).bind(self.alerts.watcher)

    # what links carry, for the alert rules
    def link_pushed(self, target_id: str, push: dict[str, Any]) -> None:
        if self.alerts is not None:
            self.alerts.push(target_id, push)

    def link_state(self, target_id: str, state: dict[str, Any]) -> None:
        if self.alerts is not None:
            self.alerts.state(target_id, state)

    def _unbind(self, session: Session, target_id: str) -> None:
        session.forget(target_id)
        self._audit_replays.pop((session.session_id, target_id), None)
        self._refills.pop((session.session_id, target_id), None)
        self.detach(session, target_id)

    # target list
    def connection_state(self, target_id: str) -> str:
        """The link's state; without a link, what the registry says (a registry that knows
        a target cannot be reached offers ``unbound_state``), else ``registered``."""
        link = self.links.get(target_id)
        if link is not None:
            return link.state
        unbound = getattr(self.registry, "unbound_state", None)
        return unbound(target_id) if unbound is not None else REGISTERED

    def instance_id(self, target_id: str) -> str | None:
        """The target process instance the relay last read a state of (null before)."""
        return self._instances.get(target_id)

    def target_list(self) -> list[dict[str, Any]]:
        entries = []
        for e in self.registry.entries():
            row = {
                "target_id": e.target_id,
                "display_name": e.registration.display_name,
                "registration_state": "active",
                "connection_state": self.connection_state(e.target_id),
                "instance_id": self.instance_id(e.target_id),
                "supported_commands": [c.to_json() for c in e.registration.supported_commands],
            }
            extra = getattr(e, "list_fields", None)  # extension fields (a fleet's host_id)
            if extra is not None:
                row.update(extra())
            entries.append(row)
        if self.alerts is not None:  # extension field, only on a relay with alert rules
            for entry in entries:
                entry["active_alerts"] = self.alerts.for_target(entry["target_id"])
        return entries

    def _target_list_text(self) -> str:
        """The current ``target_list``, serialised once per change for every session."""
        if self._target_list_cache is None:
            self._target_list_cache = dumps({"type": "target_list",
                                             "targets": self.target_list()})
        return self._target_list_cache

    def _schedule_target_list(self) -> None:
        """Coalesce bursts of changes into one ``target_list`` per reactor turn."""
        self._target_list_cache = None
        for listener in self.on_target_list_change:
            listener()
        if not self._target_list_pending:
            self._target_list_pending = True
            self._reactor.callLater(0, self._broadcast_target_list)

    def _broadcast_target_list(self) -> None:
        self._target_list_pending = False
        for session in list(self.sessions.values()):
            if session.established:
                self._offer_target_list(session)

    def _offer_target_list(self, session: Session) -> None:
        """Send now, or once the session's interval since its last one has passed."""
        if session.session_id in self._target_list_due:
            return  # already coming, and it will carry the newest content
        last = self._target_list_sent_at.get(session.session_id)
        wait = 0.0 if last is None else last + TARGET_LIST_INTERVAL_SECONDS - \
            self._reactor.seconds()
        if wait <= 0:
            self._send_target_list(session)
            return
        self._target_list_due[session.session_id] = self._reactor.callLater(
            wait, self._due_target_list, session)

    def _due_target_list(self, session: Session) -> None:
        self._target_list_due.pop(session.session_id, None)
        if session.established:
            self._send_target_list(session)

    def _send_target_list(self, session: Session) -> None:
        """The current list to one session, then bind every target it names."""
        self._target_list_sent_at[session.session_id] = self._reactor.seconds()
        session.send_text("target_list", None, self._target_list_text())
        for entry in self.registry.entries():
            if not session.established:
                return  # its queue overflowed and it is closing
            self._bind(session, entry.target_id)

    # registry observer
    def target_added(self, entry: TargetEntry) -> None:
        self._schedule_target_list()
        if self.alerts is not None and self.alerts.watch_always and not self._closing:
            self._link_for(entry).bind(self.alerts.watcher)
        # sessions bind it when they are sent the target_list that names it

    def target_updated(self, entry: TargetEntry, previous: Registration) -> None:
        link = self.links.get(entry.target_id)
        if link is not None:
            link.update(entry, previous)
        self._schedule_target_list()

    def target_expired(self, entry: TargetEntry) -> None:
        target_id = entry.target_id
        self._instances.pop(target_id, None)
        link = self.links.pop(target_id, None)
        if link is not None:
            link.expire()
        if self.alerts is not None:
            self.alerts.connection_state(target_id, EXPIRED)
        for session in list(self.sessions.values()):
            if target_id in session.bound:
                session.deliver_connection_state(target_id, EXPIRED, force=True)
                session.forget(target_id)
                self._audit_replays.pop((session.session_id, target_id), None)
                self._refills.pop((session.session_id, target_id), None)
        self._schedule_target_list()

    # link observer
    def link_state_changed(self, link: TargetLink, state: str) -> None:
        if self.alerts is not None and not self._closing:
            self.alerts.connection_state(link.target_id, state)
        if state == EXPIRED or self._closing:
            return  # target_expired tells the sessions
        if state == CONNECTED and link.instance_id is not None:
            self._instances[link.target_id] = link.instance_id
        for session in list(link.sessions):
            session.deliver_connection_state(link.target_id, state)
        self._schedule_target_list()

    def link_events(self, link: TargetLink, events: list[Any]) -> None:
        """A target's events may settle commands a relay crash interrupted."""
        self.commands.reconcile(link.target_id, events)

    def ipc_round_trip(self, method: str, seconds: float) -> None:
        self.metrics.ipc_round_trip.labels(method).observe(seconds)

    def ipc_connect_refused(self, link: TargetLink, code: str) -> None:
        self.metrics.ipc_connect_refused.labels(code).inc()

    # audit fan-out
    def publish_audit(self, record: AuditRecord) -> AuditRecord:
        """Push one stored record to every session bound to its target."""
        target_id = record.target_id
        if target_id is None:
            return record
        text = dumps({"type": "audit_event", "target_id": target_id,
                      "audit": record.to_json()})
        for session in list(self.sessions.values()):
            if target_id not in session.bound:
                continue
            held = self._audit_replays.get((session.session_id, target_id))
            if held is not None:
                held.append((record.audit_id, text))
            else:
                session.deliver_audit(target_id, text)
        return record

    def _replay_audit(self, session: Session, target_id: str) -> None:
        limit = self.config.limits.audit_replay
        if limit <= 0:
            return
        key = (session.session_id, target_id)
        self._audit_replays[key] = []

        def replay(records: list[AuditRecord]) -> None:
            held = self._audit_replays.pop(key, None)
            if held is None or session.closed or target_id not in session.bound:
                return
            for text in self._replay_texts(target_id, records):
                session.deliver_audit(target_id, text)
            seen = {record.audit_id for record in records}
            for audit_id, text in held:
                if audit_id not in seen:
                    session.deliver_audit(target_id, text)

        def failed(f: Any) -> None:
            held = self._audit_replays.pop(key, None) or []
            self.log.error("audit replay for {target_id} failed: {error}", target_id=target_id,
                           error=f.getErrorMessage())
            for _, text in held:
                session.deliver_audit(target_id, text)

        self.audit.recent(target_id, limit).addCallbacks(replay, failed)

    def _replay_texts(self, target_id: str, records: list[AuditRecord]) -> list[str]:
        """The ``audit_event`` texts of a replay, oldest first: the newest records whose
        texts fit ``limits.audit_replay_max_bytes``; when older ones were left out the first
        text says so (``"replay_truncated": true``)."""
        budget = self.config.limits.audit_replay_max_bytes
        texts: list[str] = []
        for record in reversed(records):
            text = dumps({"type": "audit_event", "target_id": target_id,
                          "audit": record.to_json()})
            budget -= len(text.encode("utf-8"))
            if budget < 0:
                break
            texts.append(text)
        texts.reverse()
        if len(texts) < len(records):
            self.log.info("audit replay of {target_id} cut to its newest {kept} of {read} "
                          "records (limits.audit_replay_max_bytes)", target_id=target_id,
                          kept=len(texts), read=len(records))
            self.metrics.replays_truncated.inc()
            if texts:
                first = json.loads(texts[0])
                first["replay_truncated"] = True
                texts[0] = dumps(first)
        return texts

    def close(self) -> None:
        """Relay shutdown: close every session (1000, "relay shutting down"), then every link."""
        self._closing = True
        for due in self._target_list_due.values():
            if due.active():
                due.cancel()
        self._target_list_due.clear()
        if self.alerts is not None:
            self.alerts.stop()
        for session in list(self.sessions.values()):
            session.transport.close(1000, "relay shutting down")
            session.lost()
        for link in list(self.links.values()):
            link.close()
        self.links.clear()
