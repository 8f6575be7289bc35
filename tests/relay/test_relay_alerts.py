"""Alerts: a real HTTP receiver hears firing and resolving documents for a crash-looping child
of a target no session watches (``watch: always``); a receiver that is down costs a bounded,
counted queue."""

from __future__ import annotations

import json
import os
import sys

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from relay_helpers import eventually
from supervisor import ChildKind, ChildSpec, Policy, Supervisor, SupervisorSpec
from supervisor.config.target import IpcConfig, RegistrationConfig, TargetConfig
from supervisor.ipc.service import ipc_services
from tests.ports import free_port


class Receiver(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[dict, dict]] = []

    def render_POST(self, request) -> bytes:
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.posts.append((headers, json.loads(request.content.read())))
        return b"ok"




@pytest_twisted.ensureDeferred
async def test_a_crash_looping_child_fires_and_then_resolves(relay):
    receiver = Receiver()
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    target = None
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        relay.start(alerts={
            "rules": [{"name": "storm", "kind": "restart_storm", "restarts": 3,
                       "within_minutes": 0.02, "watch": "always"}],
            "webhooks": [{"url": url, "headers": {"Authorization": "Bearer t0ken"},
                          "timeout_seconds": 2}]})
        # a real target in this process: its IPC socket, registration with the relay, and a
        # process child that exits at once, every time
        spec = SupervisorSpec(
            policy=Policy(initial_backoff_ms=50, max_backoff_ms=50, jitter_ratio=0,
                          child_restart_limit=10_000),
            children=[ChildSpec("crasher", ChildKind.PROCESS,
                                command=[sys.executable, "-c", "raise SystemExit(3)"])])
        ipc = IpcConfig(enabled=True, target_id="looping", path=os.path.join(relay.sockdir, "looping.sock"),
                        registration=RegistrationConfig(
                            enabled=True, relay_registration_path=relay.registration_path,
                            display_name="looping", lease_seconds=30,
                            registration_heartbeat_interval_seconds=10))
        config = TargetConfig(spec=spec, ipc=ipc, base_dir=relay.sockdir)
        supervisor = Supervisor(spec, reactor=reactor, clock=reactor, target_id="looping")
        services = ipc_services(config, supervisor, reactor)
        target = (supervisor, services)
        supervisor.startService()
        for service in services:
            service.startService()
        ws = await relay.session()
        await ws.hello()
        # no session bound it before the storm: the rule's watch: always linked the target
        await eventually(lambda: len(receiver.posts) >= 1, what="the firing document")
        headers, firing = receiver.posts[0]
        assert headers["authorization"] == "Bearer t0ken"
        assert headers["content-type"] == "application/json"
        assert firing["type"] == "alert" and firing["status"] == "firing"
        assert (firing["rule"], firing["kind"]) == ("storm", "restart_storm")
        assert (firing["target_id"], firing["child_path"]) == ("looping", "/root/crasher")
        assert firing["details"]["restarts"] == 3 and firing["resolved_at"] is None
        assert supervisor.child("/root/crasher").restart_count >= 3
        # sessions see it in the target list (an extension field of a relay with rules)
        lists = lambda: [m for m in ws.received if m["type"] == "target_list"]  # noqa: E731
        shown = await eventually(lambda: [a for m in lists() for t in m["targets"]
                                          for a in t.get("active_alerts", [])],
                                 what="the alert in a target list")
        assert (shown[0]["alert_id"], shown[0]["child_path"]) == (firing["alert_id"], "/root/crasher")
        # the loop ends (the child is paused): the restarts age out of the window, it resolves
        await supervisor.command("pause_child", "/root/crasher", requested_by="test", reason="stop the loop")
        await eventually(lambda: len(receiver.posts) >= 2, what="the resolving document")
        resolved = receiver.posts[1][1]
        assert resolved["status"] == "resolved" and resolved["alert_id"] == firing["alert_id"]
        assert resolved["resolved_at"] >= resolved["started_at"]
        assert not relay.service.hub.alerts.active
        await eventually(lambda: relay.service.hub.alerts._sender.counts["delivered"] == 2,
                         what="both answers read by the relay")
        await eventually(lambda: lists()[-1]["targets"][0]["active_alerts"] == [],
                         what="the list without the alert")
        assert len(receiver.posts) == 2, "one firing, one resolving"
    finally:
        if target is not None:
            supervisor, services = target
            for service in reversed(services):
                await defer.maybeDeferred(service.stopService)
            await supervisor.stopService()
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
