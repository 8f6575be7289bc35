"""The relay's /metrics on its own listener, read with prometheus_client's parser and checked
against the hub: sessions, bound targets, queues, commands by result, audit and IPC timings."""

from __future__ import annotations

import os
import sys

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from relay_faketarget import fixture
from relay_helpers import eventually, ready

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.http_support import get  # noqa: E402


async def scrape(relay) -> dict[str, dict[tuple, float]]:
    port = relay.service.metrics.port.getHost().port
    code, headers, body = await get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def labelled(samples, name, label):
    return {dict(labels)[label]: value for labels, value in samples.get(name, {}).items()}


@pytest_twisted.ensureDeferred
async def test_the_scrape_matches_the_hub(relay):
    relay.start(metrics={"listen": "tcp:0"})
    assert relay.service.metrics is not None
    await relay.service.metrics.listening
    assert relay.service.metrics.port.getHost().host == "127.0.0.1"
    first, second = relay.target("payments-worker-a"), relay.target("payments-worker-b")
    await relay.register(first)
    await relay.register(second)
    ws = await relay.session()
    await ws.hello()
    await ws.next("state", target_id="payments-worker-a")
    await ws.next("state", target_id="payments-worker-b")
    await eventually(lambda: "logs.tail" in first.methods() and "logs.tail" in second.methods())
    command = fixture("session.command.json")
    command["target"] = {"child_path": "/root/invoice_writer"}
    ws.send(command)
    await ws.next("command_result")
    ws.send({**command, "command_id": "cmd-blank", "reason": " "})
    await ws.next("error")
    await eventually(lambda: relay.service.hub.metrics.commands.labels("rejected")._value.get() == 1)
    pending = await relay.session()  # no client_hello yet

    samples = await scrape(relay)
    hub = relay.service.hub
    assert labelled(samples, "relay_sessions", "phase") == {"established": 1, "handshake": 1}
    assert samples["relay_targets_registered"][()] == len(hub.registry.entries()) == 2
    assert labelled(samples, "relay_targets_bound", "connection_state") == {"connected": 2}
    assert labelled(samples, "relay_commands_total", "result") == {"completed": 1, "rejected": 1}
    # one accepted command writes two records, the rejected one a third
    assert samples["relay_audit_write_seconds_count"][()] == 3
    assert samples["relay_audit_write_seconds_sum"][()] > 0
    trips = labelled(samples, "relay_ipc_round_trip_seconds_count", "method")
    methods = [m for m, _ in first.requests] + [m for m, _ in second.requests]
    for method in ("hello", "state", "events.subscribe", "logs.tail", "command.pause_child"):
        assert trips[method] == methods.count(method), method
    depth = labelled(samples, "relay_session_queue_depth", "aggregate")
    assert depth == {"sum": sum(s.outbox.pending for s in hub.sessions.values()),
                     "max": max(s.outbox.pending for s in hub.sessions.values())}
    assert labelled(samples, "relay_session_dropped_total", "kind") == {"event": 0, "log": 0}
    del pending


@pytest_twisted.ensureDeferred
async def test_drops_of_a_full_session_queue_are_counted_and_kept_after_it_closes(relay):
    relay.start(metrics={"listen": "tcp:0"}, limits={"session_queue": 16})
    await relay.service.metrics.listening
    target, ws = await ready(relay)
    session = next(iter(relay.service.hub.sessions.values()))
    session.outbox.pauseProducing()  # as when the browser's socket stops taking bytes
    for _ in range(60):
        target.emit_event()
    await eventually(lambda: sum(c[0] for c in session.outbox.dropped.values()) > 0)
    dropped = sum(c[0] for c in session.outbox.dropped.values())
    samples = await scrape(relay)
    assert labelled(samples, "relay_session_dropped_total", "kind")["event"] == dropped
    assert labelled(samples, "relay_session_queue_depth", "aggregate")["max"] == session.outbox.pending
    queued = labelled(samples, "relay_session_queue_bytes", "aggregate")
    assert queued["max"] == queued["sum"] == session.outbox.pending_bytes > 0
    session.transport.close(1000, "test")
    session.lost()
    await eventually(lambda: not relay.service.hub.sessions)
    samples = await scrape(relay)
    assert labelled(samples, "relay_session_dropped_total", "kind")["event"] == dropped
