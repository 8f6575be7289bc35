"""Dashboard sessions (§3): order rule, errors, binding, fan-out, filters, target loss."""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet import reactor

from relay_faketarget import fixture
from relay_helpers import eventually


def keys(name: str) -> set[str]:
    return set(fixture(name))


@pytest_twisted.ensureDeferred
async def test_order_rule_and_message_shapes(relay):
    relay.start()
    target = relay.target()
    await relay.register(target)
    ws = await relay.session()
    hello = await ws.next("server_hello")
    assert set(hello) == keys("session.server_hello.json")
    assert hello["log_event_filter_mode"] == "remote"
    assert hello["log_event_filter_conditions"] == \
        fixture("session.server_hello.json")["log_event_filter_conditions"]
    assert hello["filter_config_version"] == 0
    # before client_hello nothing but replies to our own mistakes is sent
    ws.sendMessage(b"{not json", isBinary=False)
    error = await ws.next("error")
    assert error["error"]["code"] == "invalid_message_json"
    assert set(error["error"]) == {"code", "stage", "target_id", "message", "retryable"}
    assert [m["type"] for m in ws.received] == ["server_hello", "error"]
    assert target.connections == []  # no binding before the session is established
    ws.send({"type": "client_hello", "client_store_id": "s", "resume_cursor": {}})
    target_list = await ws.next("target_list")
    assert set(target_list) == keys("session.target_list.json")
    (entry,) = target_list["targets"]
    assert set(entry) == set(fixture("session.target_list.json")["targets"][0])
    assert entry["supported_commands"] == \
        fixture("registration.request.json")["supported_commands"]
    state = await ws.next("state")
    assert set(state) == keys("session.state.json")
    assert set(state["state"]) == set(fixture("session.state.json")["state"])
    types = [m["type"] for m in ws.received]
    assert types.index("target_list") < types.index("state")
    assert "connection_state" not in types[:types.index("state")]


@pytest_twisted.ensureDeferred
async def test_first_message_of_another_type_gets_protocol_error_and_close(relay):
    relay.start()
    ws = await relay.session()
    await ws.next("server_hello")
    ws.send({"type": "log_event_filter_conditions", "target_ids": []})
    error = await ws.next("error")
    assert error["error"]["code"] == "protocol_error"
    await ws.closed_d
    assert [m["type"] for m in ws.received] == ["server_hello", "error"]


@pytest_twisted.ensureDeferred
async def test_client_hello_validation_keeps_session_open(relay):
    relay.start()
    ws = await relay.session()
    await ws.next("server_hello")
    ws.send({"type": "client_hello", "client_store_id": "s", "resume_cursor": {}, "x": 1})
    assert (await ws.next("error"))["error"]["code"] == "unsupported_field"
    ws.send({"type": "client_hello", "client_store_id": "  ", "resume_cursor": {}})
    assert (await ws.next("error"))["error"]["code"] == "invalid_message_schema"
    ws.send([1, 2])
    assert (await ws.next("error"))["error"]["code"] == "invalid_message_schema"
    ws.sendMessage(b'{"type": "client_hello"}', isBinary=True)
    assert (await ws.next("error"))["error"]["code"] == "invalid_message_json"
    ws.send({"type": "client_hello", "client_store_id": "s", "resume_cursor": None})
    assert (await ws.next("target_list"))["targets"] == []


@pytest_twisted.ensureDeferred
async def test_errors_after_establishment_keep_session_open(relay):
    relay.start()
    ws = await relay.session()
    await ws.hello()
    for message, code in [
        ({"type": "filter_update"}, "unsupported_message_type"),
        ({"type": "sequence_checkpoint", "sequence": 1}, "unsupported_message_type"),
        ({"type": "nonsense"}, "unsupported_message_type"),
        ({"no_type": 1}, "invalid_message_schema"),
        ({"type": "log_event_filter_conditions", "severities": "error"},
         "invalid_message_schema"),
        ({"type": "log_event_filter_conditions", "sequence_min": "1"}, "invalid_message_schema"),
        ({"type": "log_event_filter_conditions", "bogus": []}, "unsupported_field"),
        ({"type": "client_hello", "client_store_id": "s", "resume_cursor": {}},
         "protocol_error"),
    ]:
        ws.send(message)
        error = await ws.next("error")
        assert error["error"]["code"] == code, message
    ws.sendMessage(b"\xff\xfe", isBinary=True)
    assert (await ws.next("error"))["error"]["code"] == "invalid_message_json"
    ws.sendMessage(b"[" * 100000 + b"]" * 100000, isBinary=False)  # over 64 KiB: closed
    await ws.closed_d
    assert ws.close_code is not None and ws.close_code != 1000


@pytest_twisted.ensureDeferred
async def test_binding_only_after_session_one_shared_link_and_fan_out(relay):
    relay.start()
    target = relay.target()
    await relay.register(target)
    assert target.connections == []
    a = await relay.session()
    await a.hello()
    await a.next("state")
    b = await relay.session(relay.pki.ordered_operator)
    await b.hello()
    await b.next("state")
    await eventually(lambda: "logs.tail" in target.methods())
    assert len(target.connections) == 1, "one IPC connection shared by all sessions"
    assert target.methods().count("hello") == 1
    assert target.methods().count("events.subscribe") == 1
    event = target.emit_event("child_restarting", severity="warning")
    log = target.emit_log("flushed 12 invoices")
    for ws in (a, b):
        assert (await ws.next("event"))["event"] == event
        assert (await ws.next("log"))["log"] == log
    # last session leaving closes the link (and so the subscriptions)
    from relay_helpers import close_ws

    await close_ws(a)
    event2 = target.emit_event("child_running")
    assert (await b.next("event"))["event"] == event2
    assert len(target.connections) == 1
    await close_ws(b)
    await eventually(lambda: target.connections == [], what="link closed")
    assert relay.service.hub.links == {}


@pytest_twisted.ensureDeferred
async def test_late_binding_session_gets_fresh_state_and_no_duplicates(relay):
    relay.start()
    target = relay.target()
    await relay.register(target)
    first_event = target.emit_event("child_started")
    a = await relay.session()
    await a.hello()
    state = await a.next("state")
    assert state["state"]["recent_events"] == [first_event]
    await eventually(lambda: "logs.tail" in target.methods())
    second = target.emit_event("child_running")
    assert (await a.next("event"))["event"] == second
    b = await relay.session()
    await b.hello()
    state_b = await b.next("state")
    assert [e["sequence"] for e in state_b["state"]["recent_events"]] == [1, 2]
    third = target.emit_event("child_ready")
    assert (await b.next("event"))["event"] == third
    assert (await a.next("event"))["event"] == third
    # nothing was delivered twice (replay after subscribe is de-duplicated)
    assert [m["event"]["sequence"] for m in a.of_type("event")] == [2, 3]
    assert [m["event"]["sequence"] for m in b.of_type("event")] == [3]


@pytest_twisted.ensureDeferred
async def test_target_registering_later_is_bound_and_announced(relay):
    relay.start()
    ws = await relay.session()
    assert (await ws.hello())["targets"] == []
    target = relay.target("late-target")
    await relay.register(target)
    target_list = await ws.next("target_list")
    assert [t["target_id"] for t in target_list["targets"]] == ["late-target"]
    state = await ws.next("state", target_id="late-target")
    assert state["state"]["target"]["target_id"] == "late-target"


@pytest_twisted.ensureDeferred
async def test_filters_apply_relay_side(relay):
    relay.start()
    a_target = relay.target("target-a")
    b_target = relay.target("target-b")
    await relay.register(a_target)
    await relay.register(b_target)
    ws = await relay.session()
    await ws.hello()
    await ws.next("state", target_id="target-a")
    await ws.next("state", target_id="target-b")
    await eventually(lambda: "logs.tail" in a_target.methods()
                     and "logs.tail" in b_target.methods())
    conditions = fixture("session.filter.json")
    conditions["target_ids"] = ["target-a"]
    ws.send(conditions)
    (session,) = relay.service.hub.sessions.values()
    await eventually(lambda: session.filter_version == 1)
    assert session.bound == {"target-a"}
    a_target.emit_event("child_running", severity="info")
    a_target.emit_log("chatty", severity="info")
    b_target.emit_event("child_failed", severity="error")
    wanted = a_target.emit_event("child_failed", severity="error")
    wanted_log = a_target.emit_log("broken", severity="warning")
    assert (await ws.next("event"))["event"] == wanted
    assert (await ws.next("log"))["log"] == wanted_log
    assert [m["event"]["target_id"] for m in ws.of_type("event")] == ["target-a"]
    # child path / event type / sequence / correlation conditions
    ws.send({"type": "log_event_filter_conditions", "target_ids": [], "child_paths":
             ["/root/invoice_writer"], "lifecycle_states": ["paused"], "event_types": [],
             "severities": [], "sequence_min": None, "correlation_id": None})
    await eventually(lambda: session.filter_version == 2)
    await ws.next("state", target_id="target-b")  # re-bound: a fresh state first
    a_target.emit_event("child_paused", child_id="worker")
    a_target.emit_event("child_running", child_id="invoice_writer")
    wanted = a_target.emit_event("child_paused", child_id="invoice_writer")
    assert (await ws.next("event"))["event"] == wanted
    ws.send({"type": "log_event_filter_conditions", "target_ids": [], "child_paths": [],
             "lifecycle_states": [], "event_types": [], "severities": [],
             "sequence_min": None, "correlation_id": "cmd-9"})
    await eventually(lambda: session.filter_version == 3)
    a_target.emit_event("child_running")
    wanted = a_target.emit_event("child_paused", correlation_id="cmd-9")
    assert (await ws.next("event"))["event"] == wanted
    assert ws.messages == [] or all(m["type"] != "event" for m in ws.messages)


@pytest_twisted.ensureDeferred
async def test_target_killed_is_unavailable_within_a_second_and_recovers(relay):
    relay.start()
    target = relay.target()
    await relay.register(target)
    a = await relay.session()
    b = await relay.session()
    for ws in (a, b):
        await ws.hello()
        await ws.next("state")
    await eventually(lambda: "logs.tail" in target.methods())
    killed_at = time.monotonic()
    await target.stop()
    for ws in (a, b):
        message = await ws.next("connection_state", timeout=1.0)
        assert message == {"type": "connection_state", "target_id": target.target_id,
                           "state": "unavailable"}
    assert time.monotonic() - killed_at < 1.0
    listed = await a.next("target_list")
    while listed["targets"][0]["connection_state"] != "unavailable":
        listed = await a.next("target_list")
    # restart: a fresh state arrives before any new event
    restarted = relay.target(target.target_id)
    restarted.emit_event("child_started")
    for ws in (a, b):
        assert (await ws.next("connection_state", timeout=3))["state"] == "connected"
        state = await ws.next("state")
        assert state["state"]["recent_events"][0]["event_type"] == "child_started"
    await eventually(lambda: "logs.tail" in restarted.methods())
    fresh = restarted.emit_event("child_running")
    for ws in (a, b):
        assert (await ws.next("event"))["event"] == fresh
        types = [m["type"] for m in ws.received]
        last_unavailable = max(i for i, m in enumerate(ws.received)
                               if m.get("state") == "unavailable")
        assert types.index("state", last_unavailable) < len(types) - 1


@pytest_twisted.ensureDeferred
async def test_lease_expiry_tells_sessions(relay):
    relay.start()
    target = relay.target()
    await relay.register(target, lease=1)
    ws = await relay.session()
    await ws.hello()
    await ws.next("state")
    message = await ws.next("connection_state", timeout=3)
    assert message["state"] == "expired"
    target_list = await ws.next("target_list")
    while target_list["targets"]:
        target_list = await ws.next("target_list")
    assert target_list["targets"] == []
    await eventually(lambda: target.connections == [], what="link closed on expiry")


@pytest_twisted.ensureDeferred
async def test_hung_target_does_not_stall_others(relay):
    relay.start(timeouts={"ipc_request_seconds": 0.3, "reconnect_initial_ms": 2000,
                          "reconnect_max_ms": 2000})
    hung = relay.target("hung-target")
    hung.hang = True
    healthy = relay.target("healthy-target")
    await relay.register(hung)
    await relay.register(healthy)
    ws = await relay.session()
    await ws.hello()
    await ws.next("state", target_id="healthy-target")
    await eventually(lambda: "logs.tail" in healthy.methods())
    event = healthy.emit_event()
    assert (await ws.next("event"))["event"] == event
    assert relay.service.hub.links["hung-target"].state in ("connecting", "unavailable")
    await eventually(lambda: relay.service.hub.links["hung-target"].state == "unavailable", 2)
    assert not [m for m in ws.received if m.get("type") == "state"
                and m["target_id"] == "hung-target"]


@pytest_twisted.ensureDeferred
async def test_target_reported_drops_are_forwarded(relay):
    relay.start()
    target = relay.target()
    await relay.register(target)
    ws = await relay.session()
    await ws.hello()
    await ws.next("state")
    await eventually(lambda: "logs.tail" in target.methods())
    target.push_dropped(17, 2)
    message = await ws.next("dropped_count")
    assert message == {"type": "dropped_count", "target_id": target.target_id,
                       "dropped_event_count": 17, "dropped_log_count": 2}


@pytest_twisted.ensureDeferred
async def test_slow_browser_gets_dropped_count_and_bounded_queue(relay):
    relay.start(limits={"session_queue": 50})
    target = relay.target()
    await relay.register(target)
    ws = await relay.session()
    await ws.hello()
    await ws.next("state")
    await eventually(lambda: "logs.tail" in target.methods())
    (session,) = relay.service.hub.sessions.values()
    ws.transport.pauseProducing()  # the browser stops reading
    big = {"blob": "x" * 4000}
    sent = 0
    while not session.outbox.paused or session.outbox.pending < 50:
        target.emit_event(payload=big)
        sent += 1
        if sent % 50 == 0:
            from twisted.internet import task
            await task.deferLater(reactor, 0.01, lambda: None)
        assert sent < 20000, "relay never felt back-pressure"
    for _ in range(500):
        target.emit_event(payload=big)
        sent += 1
    await eventually(lambda: session.outbox.dropped.get(target.target_id, [0])[0] > 0)
    assert session.outbox.pending <= 50 + 1  # the limit plus one dropped_count per target
    ws.transport.resumeProducing()
    dropped = await ws.next("dropped_count", timeout=10)
    events = ws.of_type("event")
    await eventually(lambda: len(ws.of_type("event")) + dropped["dropped_event_count"] >= sent
                     or session.outbox.pending == 0, 10)
    final = session.dropped_counts(target.target_id)
    assert dropped["dropped_event_count"] > 0
    await eventually(lambda: len(ws.of_type("event")) + final[0] == sent, 10,
                     "every event is either delivered or counted as dropped")
    assert events is not None
