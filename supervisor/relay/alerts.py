"""Alerts: rules evaluated on what the relay's target links carry, webhooks told of each change.

An :class:`AlertEngine` hears every state, push and connection state of every open link (the
hub forwards them). A rule that matches opens an alert (``firing``); when its condition ends
the alert is ``resolved``. Each change is one JSON document (docs/metrics.md) POSTed to every
webhook by a :class:`WebhookSender`: a bounded queue, a few requests in flight, a timeout on
each, retries with the project's backoff. A rule with ``watch: always`` makes the relay keep a
link open to every registered target even when no session watches it (the one exception to
on-demand streaming).
"""

from __future__ import annotations

import collections
import itertools
import json
from typing import Any, Iterator

import attrs
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from supervisor._backoff import backoff_delay
from supervisor.config.relay import AlertRule, AlertsConfig, WebhookConfig
from supervisor.wire.timestamps import rfc3339

#: seconds between evaluations of the duration rules (unavailable, stale) and storm windows
TICK_SECONDS = 1.0
#: webhook requests in flight at once
MAX_IN_FLIGHT = 4


@attrs.define
class Alert:
    """One open (or just resolved) alert."""

    alert_id: str
    rule: AlertRule
    target_id: str
    child_path: str | None
    summary: str
    started_at: float
    details: dict[str, Any]
    resolved_at: float | None = None

    def document(self, status: str) -> dict[str, Any]:
        """The JSON document a webhook receives (docs/metrics.md)."""
        return {
            "type": "alert",
            "status": status,
            "alert_id": self.alert_id,
            "rule": self.rule.name,
            "kind": self.rule.kind,
            "target_id": self.target_id,
            "child_path": self.child_path,
            "summary": self.summary,
            "started_at": rfc3339(self.started_at),
            "resolved_at": None if self.resolved_at is None else rfc3339(self.resolved_at),
            "details": self.details,
        }


class _Watcher:
    """The link subscriber that keeps ``watch: always`` links open; the engine hears the rest."""

    def deliver_state(self, target_id: str, state: dict[str, Any]) -> None:
        pass

    def deliver_push(self, target_id: str, push: dict[str, Any], text: str) -> None:
        pass

    def deliver_dropped(self, target_id: str, events: int, logs: int) -> None:
        pass

    def deliver_connection_state(self, target_id: str, state: str, force: bool = False) -> None:
        pass


class AlertEngine:
    """Evaluates the rules per target and child; fires and resolves alerts."""

    log = Logger()

    def __init__(self, config: AlertsConfig, reactor: Any, sender: "WebhookSender") -> None:
        self._config = config
        self._clock = reactor
        self._sender = sender
        self.watcher = _Watcher()
        self.active: dict[tuple[str, str, str | None], Alert] = {}
        self.fired = 0
        self.resolved = 0
        self._ids = itertools.count(1)
        self._restarts: dict[tuple[str, str], collections.deque[float]] = {}
        self._unavailable_since: dict[str, float] = {}
        self._stale_since: dict[tuple[str, str], float] = {}
        self._instances: dict[str, str] = {}
        self._loop = LoopingCall(self.tick)
        self._loop.clock = reactor
        #: called after an alert fired or resolved (the hub re-sends the target list)
        self.on_change: Any = lambda: None

    @property
    def watch_always(self) -> bool:
        """Whether some rule asks the relay to watch every registered target."""
        return any(rule.watch == "always" for rule in self._config.rules)

    def start(self) -> None:
        if self._config.rules and not self._loop.running:
            self._loop.start(TICK_SECONDS, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self._sender.stop()

    def _rules(self, kind: str) -> list[AlertRule]:
        return [r for r in self._config.rules if r.kind == kind]

    # what the links carry

    def state(self, target_id: str, state: dict[str, Any]) -> None:
        """A fresh DashboardState: a new instance ends its escalation alerts; rows as below."""
        instance = (state.get("target") or {}).get("instance_id")
        previous = self._instances.get(target_id)
        if instance is not None:
            self._instances[target_id] = instance
        if previous is not None and instance != previous:
            for key in [k for k in self.active if k[1] == target_id]:
                if self.active[key].rule.kind == "escalation":
                    self._resolve(key)
        self._rows(target_id, state.get("runtime_state") or [])

    def push(self, target_id: str, push: dict[str, Any]) -> None:
        """One live push of a link (events and state deltas matter here)."""
        kind = push.get("type")
        if kind == "state_delta":
            self._rows(target_id, (push.get("delta") or {}).get("runtime_state") or [])
        elif kind == "event":
            self._event(target_id, push.get("event") or {})

    def connection_state(self, target_id: str, state: str) -> None:
        """``connected`` ends an unavailable spell; ``unavailable`` / ``expired`` start one."""
        if state == "connected":
            self._unavailable_since.pop(target_id, None)
            for key in [k for k in self.active if k[1] == target_id]:
                if self.active[key].rule.kind == "target_unavailable":
                    self._resolve(key)
        elif state in ("unavailable", "expired"):
            self._unavailable_since.setdefault(target_id, self._clock.seconds())

    def _event(self, target_id: str, event: dict[str, Any]) -> None:
        event_type = event.get("event_type")
        path = event.get("target_path")
        if not isinstance(path, str):
            return
        now = self._clock.seconds()
        if event_type == "child_restarted":
            for rule in self._rules("restart_storm"):
                times = self._restarts.setdefault((target_id, path), collections.deque())
                times.append(now)
                self._trim(times, now, rule)
                if len(times) >= rule.restarts:
                    self._fire(rule, target_id, path,
                               f"{path} restarted {len(times)} times within "
                               f"{rule.within_minutes:g} min",
                               {"restarts": len(times), "within_minutes": rule.within_minutes})
        elif event_type in ("supervisor_escalated", "tree_stopped"):
            for rule in self._rules("escalation"):
                what = "escalated" if event_type == "supervisor_escalated" else "stopped"
                self._fire(rule, target_id, path, f"{path} {what}",
                           {"event_type": event_type, "payload": event.get("payload")})

    def _rows(self, target_id: str, rows: list[Any]) -> None:
        now = self._clock.seconds()
        for row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("child_path"), str):
                continue
            key = (target_id, row["child_path"])
            if row.get("health") == "stale":
                self._stale_since.setdefault(key, now)
            elif self._stale_since.pop(key, None) is not None:
                for alert_key in [k for k in self.active if k[1:] == key]:
                    if self.active[alert_key].rule.kind == "child_stale":
                        self._resolve(alert_key)

    @staticmethod
    def _trim(times: collections.deque[float], now: float, rule: AlertRule) -> None:
        while times and times[0] <= now - rule.within_minutes * 60:
            times.popleft()

    def tick(self) -> None:
        """Duration rules fire once their condition has lasted; storm windows age out."""
        now = self._clock.seconds()
        for rule in self._rules("target_unavailable"):
            for target_id, since in list(self._unavailable_since.items()):
                if now - since >= rule.seconds:
                    self._fire(rule, target_id, None,
                               f"target {target_id} unavailable for {now - since:.0f} s",
                               {"unavailable_seconds": round(now - since, 3)})
        for rule in self._rules("child_stale"):
            for (target_id, path), since in list(self._stale_since.items()):
                if now - since >= rule.seconds:
                    self._fire(rule, target_id, path, f"{path} stale for {now - since:.0f} s",
                               {"stale_seconds": round(now - since, 3)})
        for rule in self._rules("restart_storm"):
            for (target_id, path), times in list(self._restarts.items()):
                self._trim(times, now, rule)
                key = (rule.name, target_id, path)
                if key in self.active and len(times) < rule.restarts:
                    self._resolve(key)
                if not times:
                    del self._restarts[(target_id, path)]

    def _fire(self, rule: AlertRule, target_id: str, path: str | None, summary: str,
              details: dict[str, Any]) -> None:
        key = (rule.name, target_id, path)
        if key in self.active:
            return
        alert = Alert(f"alert-{next(self._ids)}", rule, target_id, path, summary,
                      self._clock.seconds(), details)
        self.active[key] = alert
        self.fired += 1
        self.log.warn("alert {alert_id} firing: {summary}", alert_id=alert.alert_id,
                      summary=summary, rule=rule.name, target_id=target_id, child_path=path)
        self._sender.send(alert.document("firing"))
        self.on_change()

    def _resolve(self, key: tuple[str, str, str | None]) -> None:
        alert = self.active.pop(key)
        alert.resolved_at = self._clock.seconds()
        self.resolved += 1
        self.log.info("alert {alert_id} resolved: {summary}", alert_id=alert.alert_id,
                      summary=alert.summary, rule=alert.rule.name, target_id=alert.target_id)
        self._sender.send(alert.document("resolved"))
        self.on_change()

    def for_target(self, target_id: str) -> list[dict[str, Any]]:
        """The target's active alerts as ``target_list`` shows them, oldest first."""
        alerts = sorted((a for a in self.active.values() if a.target_id == target_id),
                        key=lambda a: (a.started_at, a.alert_id))
        return [{"alert_id": a.alert_id, "rule": a.rule.name, "kind": a.rule.kind,
                 "child_path": a.child_path, "summary": a.summary,
                 "started_at": rfc3339(a.started_at)} for a in alerts]

    def metric_families(self) -> Iterator[Any]:
        """Active alerts, alert changes and webhook deliveries, for the relay's /metrics."""
        active = GaugeMetricFamily("relay_alerts_active", "alerts firing now, by rule",
                                   labels=["rule"])
        for rule in self._config.rules:
            active.add_metric([rule.name], sum(1 for a in self.active.values() if a.rule is rule))
        yield active
        changes = CounterMetricFamily("relay_alert_changes", "alerts fired and resolved",
                                      labels=["status"])
        changes.add_metric(["firing"], self.fired)
        changes.add_metric(["resolved"], self.resolved)
        yield changes
        yield from self._sender.metric_families()


@attrs.define
class _Delivery:
    webhook: WebhookConfig
    body: bytes
    attempt: int = 0
    due: float = 0.0


class WebhookSender:
    """POSTs documents to every webhook: bounded queue, timeouts, retries with backoff."""

    log = Logger()

    def __init__(self, config: AlertsConfig, reactor: Any, agent: Any = None) -> None:
        self._config = config
        self._reactor = reactor
        self._agent = agent or Agent(reactor, connectTimeout=max(
            (w.timeout_seconds for w in config.webhooks), default=5.0))
        self.queue: collections.deque[_Delivery] = collections.deque()
        self.in_flight = 0
        self.counts = {"delivered": 0, "failed_attempt": 0, "gave_up": 0, "dropped": 0}
        self._wake: Any = None
        self._stopped = False
        self._requests: set[Deferred[Any]] = set()

    def send(self, document: dict[str, Any]) -> None:
        """Queue ``document`` for every webhook (the oldest queued one goes when full)."""
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        for webhook in self._config.webhooks:
            self._enqueue(_Delivery(webhook, body, 0, self._reactor.seconds()))
        self._pump()

    def _enqueue(self, delivery: _Delivery) -> None:
        if len(self.queue) >= self._config.queue_limit:
            dropped = self.queue.popleft()
            self.counts["dropped"] += 1
            self.log.warn("webhook queue full ({limit}): dropped the oldest delivery to {url} "
                          "({dropped} dropped so far)", limit=self._config.queue_limit,
                          url=dropped.webhook.url, dropped=self.counts["dropped"])
        self.queue.append(delivery)

    def _pump(self) -> None:
        if self._stopped:
            return
        now = self._reactor.seconds()
        waiting = []
        while self.queue and self.in_flight < MAX_IN_FLIGHT:
            delivery = self.queue.popleft()
            if delivery.due > now:
                waiting.append(delivery)
                continue
            self._post(delivery)
        self.queue.extendleft(reversed(waiting))
        if self.queue and self._wake is None:
            soonest = min(d.due for d in self.queue)
            self._wake = self._reactor.callLater(max(0.05, soonest - now), self._woken)

    def _woken(self) -> None:
        self._wake = None
        self._pump()

    def stop(self) -> None:
        """The relay stops: nothing more is sent or retried; what was still queued or in
        flight is counted as dropped and logged."""
        unsent = len(self.queue) + len(self._requests)
        if unsent and not self._stopped:
            self.counts["dropped"] += unsent
            self.log.warn("relay stopping: {unsent} webhook deliveries not sent", unsent=unsent)
        self._stopped = True
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        self._wake = None
        for request in list(self._requests):
            request.cancel()

    def _post(self, delivery: _Delivery) -> None:
        webhook = delivery.webhook
        headers = Headers({b"content-type": [b"application/json"],
                           b"user-agent": [b"txsupervisor-relay"]})
        for name, value in webhook.headers:
            headers.addRawHeader(name.encode(), value.encode())
        self.in_flight += 1
        d: Deferred[Any] = self._agent.request(b"POST", webhook.url.encode(), headers,
                                               FileBodyProducer(_bytes_io(delivery.body)))
        d.addTimeout(webhook.timeout_seconds, self._reactor)
        self._requests.add(d)

        def answered(response: Any) -> None:
            response.deliverBody(_Discard())
            if 200 <= response.code < 300:
                self.counts["delivered"] += 1
            else:
                raise RuntimeError(f"HTTP {response.code}")

        def failed(f: Any) -> None:
            if self._stopped:
                return  # cancelled by stop, which counted it as dropped
            self.counts["failed_attempt"] += 1
            delivery.attempt += 1
            if delivery.attempt >= self._config.max_attempts:
                self.counts["gave_up"] += 1
                self.log.error("webhook {url}: gave up after {attempts} attempts: {error}",
                               url=webhook.url, attempts=delivery.attempt,
                               error=f.getErrorMessage())
                return
            delivery.due = self._reactor.seconds() + backoff_delay(
                delivery.attempt - 1, 1.0, 60.0, 0.2)
            self._enqueue(delivery)

        def done(_: Any) -> None:
            self.in_flight -= 1
            self._pump()

        d.addCallback(answered)
        d.addErrback(failed)
        d.addBoth(done)
        d.addBoth(lambda _: self._requests.discard(d))

    def metric_families(self) -> Iterator[Any]:
        deliveries = CounterMetricFamily("relay_alert_webhook_deliveries",
                                         "webhook deliveries by outcome (dropped: queue full)",
                                         labels=["outcome"])
        for outcome, count in self.counts.items():
            deliveries.add_metric([outcome], count)
        yield deliveries
        depth = GaugeMetricFamily("relay_alert_webhook_queue_depth",
                                  "webhook deliveries waiting (retries included)")
        depth.add_metric([], len(self.queue))
        yield depth


def _bytes_io(body: bytes) -> Any:
    import io

    return io.BytesIO(body)


class _Discard:
    """Reads and forgets a webhook's response body."""

    def makeConnection(self, transport: Any) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass
