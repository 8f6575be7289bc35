"""Alerts: a real HTTP receiver hears firing and resolving documents for a crash-looping child
of a target no session watches (``watch: always``); a receiver that is down costs a bounded,
counted queue."""

from __future__ import annotations

import json
import socket

import pytest_twisted
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from relay_helpers import eventually


class Receiver(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[dict, dict]] = []

    def render_POST(self, request) -> bytes:
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.posts.append((headers, json.loads(request.content.read())))
        return b"ok"


def free_port() -> int:
    """A port nothing listens on (bound and closed again): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_twisted.ensureDeferred
async def test_a_crash_looping_child_fires_and_then_resolves(relay):
    receiver = Receiver()
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        relay.start(alerts={
            "rules": [{"name": "storm", "kind": "restart_storm", "restarts": 3,
                       "within_minutes": 0.02, "watch": "always"}],
            "webhooks": [{"url": url, "headers": {"Authorization": "Bearer t0ken"},
                          "timeout_seconds": 2}]})
        target = relay.target()
        await relay.register(target)
        # no session at all: the rule's watch: always opened the link and subscribed
        await eventually(lambda: "events.subscribe" in target.methods())
        assert not relay.service.hub.sessions
        ws = await relay.session()
        await ws.hello()
        for _ in range(3):
            target.emit_event("child_restarted", child_id="worker")
        await eventually(lambda: len(receiver.posts) >= 1, what="the firing document")
        headers, firing = receiver.posts[0]
        assert headers["authorization"] == "Bearer t0ken"
        assert headers["content-type"] == "application/json"
        assert firing["type"] == "alert" and firing["status"] == "firing"
        assert (firing["rule"], firing["kind"]) == ("storm", "restart_storm")
        assert (firing["target_id"], firing["child_path"]) == ("payments-worker-a", "/root/worker")
        assert firing["details"]["restarts"] == 3 and firing["resolved_at"] is None
        # sessions see it in the target list (an extension field of a relay with rules)
        lists = lambda: [m for m in ws.received if m["type"] == "target_list"]  # noqa: E731
        shown = await eventually(lambda: [a for m in lists() for a in m["targets"][0]["active_alerts"]],
                                 what="the alert in a target list")
        assert [(a["alert_id"], a["child_path"], a["rule"]) for a in shown][:1] == [
            (firing["alert_id"], "/root/worker", "storm")]
        # the restarts age out of the 1.2 s window: the alert resolves
        await eventually(lambda: len(receiver.posts) >= 2, what="the resolving document")
        resolved = receiver.posts[1][1]
        assert resolved["status"] == "resolved" and resolved["alert_id"] == firing["alert_id"]
        assert resolved["resolved_at"] >= resolved["started_at"]
        assert not relay.service.hub.alerts.active
        await eventually(lambda: relay.service.hub.alerts._sender.counts["delivered"] == 2,
                         what="both answers read by the relay")
        await eventually(lambda: lists()[-1]["targets"][0]["active_alerts"] == [],
                         what="the list without the alert")
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_receiver_that_is_down_costs_a_bounded_counted_queue(relay):
    url = f"http://127.0.0.1:{free_port()}/hook"
    relay.start(metrics={"listen": "tcp:0"}, alerts={
        "rules": [{"name": "any-restart", "kind": "restart_storm", "restarts": 1,
                   "within_minutes": 10, "watch": "always"}],
        "webhooks": [{"url": url, "timeout_seconds": 1}],
        "queue_limit": 8, "max_attempts": 100})
    target = relay.target()
    await relay.register(target)
    await eventually(lambda: "events.subscribe" in target.methods())
    alerts = relay.service.hub.alerts
    sender = alerts._sender
    for index in range(40):
        target.emit_event("child_restarted", child_id=f"w{index}")
    await eventually(lambda: alerts.fired == 40, what="forty alerts")
    await eventually(lambda: sender.counts["failed_attempt"] >= 4, what="refused attempts")
    assert len(sender.queue) <= 8
    assert sender.counts["dropped"] >= 40 - 8 - 4
    # every delivery is in exactly one place: queued, in flight, dropped (none delivered)
    assert (len(sender.queue) + sender.in_flight + sender.counts["dropped"]
            + sender.counts["gave_up"]) == 40
    assert sender.counts["delivered"] == 0
    # the relay is as responsive as ever: its metrics say the same
    from test_relay_metrics import labelled, scrape

    samples = await scrape(relay)
    deliveries = labelled(samples, "relay_alert_webhook_deliveries_total", "outcome")
    assert deliveries["dropped"] == sender.counts["dropped"]
    assert samples["relay_alert_webhook_queue_depth"][()] == len(sender.queue)
    assert labelled(samples, "relay_alerts_active", "rule") == {"any-restart": 40}
