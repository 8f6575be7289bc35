"""Dashboard sessions (§3) over real wss:// against fake targets on real Unix sockets: the
wiring of what test_relay_session_units.py checks in memory (order rule on the wire, close
frames, the frame size cap, one shared IPC connection, a target's socket going away, TLS
back-pressure reaching a session's queue)."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor, task

from supervisor.wire.vocabulary import COMMANDS

from relay_faketarget import fixture
from relay_helpers import close_ws, eventually


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
    assert hello["log_event_filter_conditions"] == \
        fixture("session.server_hello.json")["log_event_filter_conditions"]
    assert hello["principal"] == "CN=demo operator"
    # granted "all": the contract's commands in its order, then our extensions
    contract = fixture("session.server_hello.json")["permitted_commands"]
    assert hello["permitted_commands"] == contract + [c for c in COMMANDS if c not in contract]
    assert [m["type"] for m in ws.received] == ["server_hello"]
    assert target.connections == []  # no binding before the session is established
    ws.send({"type": "client_hello", "client_store_id": "s", "resume_cursor": {}})
    target_list = await ws.next("target_list")
    assert set(target_list) == keys("session.target_list.json")
    (entry,) = target_list["targets"]
    assert entry["supported_commands"] == \
        fixture("registration.request.json")["supported_commands"]
    state = await ws.next("state")
    assert set(state) == keys("session.state.json")
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
    code, _ = await ws.closed_d
    assert code == 4002
    assert [m["type"] for m in ws.received] == ["server_hello", "error"]
    await eventually(lambda: relay.service.hub.sessions == {}, what="session gone")


@pytest_twisted.ensureDeferred
async def test_a_first_message_that_is_not_json_gets_protocol_error_and_close(relay):
    relay.start()
    ws = await relay.session()
    await ws.next("server_hello")
    ws.sendMessage(b"{not json", isBinary=False)
    error = await ws.next("error")
    assert (error["error"]["code"], error["error"]["stage"]) == ("protocol_error", "session")
    assert error["command_id"] is None
    code, _ = await ws.closed_d
    assert code == 4002
    assert [m["type"] for m in ws.received] == ["server_hello", "error"]


@pytest_twisted.ensureDeferred
async def test_a_message_over_the_size_cap_closes_the_session(relay):
    relay.start()
    ws = await relay.session()
    await ws.hello()
    ws.send({"type": "nonsense"})
    assert (await ws.next("error"))["error"]["code"] == "unsupported_message_type"
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
    event = target.emit_event("child_restarting")
    log = target.emit_log("flushed 12 invoices")
    for ws in (a, b):
        assert (await ws.next("event"))["event"] == event
        assert (await ws.next("log"))["log"] == log
    # last session leaving closes the link (and so the subscriptions)
    await close_ws(a)
    event2 = target.emit_event("child_running")
    assert (await b.next("event"))["event"] == event2
    assert len(target.connections) == 1
    await close_ws(b)
    await eventually(lambda: target.connections == [], what="link closed")
    assert relay.service.hub.links == {}


@pytest_twisted.ensureDeferred
async def test_a_target_whose_socket_goes_away_is_unavailable_then_back_with_a_fresh_state(
        relay):
    relay.start()
    target = relay.target()
    await relay.register(target)
    a = await relay.session()
    b = await relay.session()
    for ws in (a, b):
        await ws.hello()
        await ws.next("state")
    await eventually(lambda: "logs.tail" in target.methods())
    await target.stop()
    for ws in (a, b):
        message = await ws.next("connection_state")
        assert message == {"type": "connection_state", "target_id": target.target_id,
                           "state": "unavailable"}
    listed = await a.next("target_list")
    while listed["targets"][0]["connection_state"] != "unavailable":
        listed = await a.next("target_list")
    # a new process at the same path: a fresh state arrives before any new event
    restarted = relay.target(target.target_id)
    restarted.emit_event("child_started")
    for ws in (a, b):
        assert (await ws.next("connection_state"))["state"] == "connected"
        state = await ws.next("state")
        assert state["state"]["recent_events"][0]["event_type"] == "child_started"
    await eventually(lambda: "logs.tail" in restarted.methods())
    fresh = restarted.emit_event("child_running")
    for ws in (a, b):
        assert (await ws.next("event"))["event"] == fresh
        types = [m["type"] for m in ws.received]
        lost = next(i for i, m in enumerate(ws.received) if m.get("state") == "unavailable")
        back = next(i for i, m in enumerate(ws.received) if m.get("state") == "connected")
        # unavailable was the first thing after the loss; connected, then state, then events
        assert lost < back and types[back + 1] == "state"
        assert [t for t in types[lost:back] if t not in ("target_list",)] == \
            ["connection_state"]


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
            await task.deferLater(reactor, 0.01, lambda: None)
        assert sent < 20000, "relay never felt back-pressure"
    for _ in range(500):
        target.emit_event(payload=big)
        sent += 1
    await eventually(lambda: session.outbox.dropped.get(target.target_id, [0])[0] > 0)
    assert session.outbox.pending <= 50 + 1  # the limit plus one dropped_count per target
    ws.transport.resumeProducing()
    dropped = await ws.next("dropped_count", timeout=10)
    assert dropped["dropped_event_count"] > 0
    final = session.dropped_counts(target.target_id)
    await eventually(lambda: len(ws.of_type("event")) + final[0] == sent, 10,
                     "every event is either delivered or counted as dropped")


@pytest_twisted.ensureDeferred
async def test_a_push_with_lone_surrogate_escapes_reaches_every_session_made_encodable(relay):
    """A target's push carrying ``\\ud800`` escapes: every session gets it (U+FFFD in place of
    each lone surrogate; a proper pair stays one character) and stays open."""
    relay.start()
    target = relay.target()
    await relay.register(target)
    sessions = [await relay.session() for _ in range(3)]
    for ws in sessions:
        await ws.hello()
        await ws.next("state")
    await eventually(lambda: "logs.tail" in target.methods())
    log = target.emit_log("warm-up")
    for ws in sessions:
        assert (await ws.next("log"))["log"] == log
    raw = dict(log, sequence=log["sequence"] + 1, message="report-@.csv \U0001F600")
    line = json.dumps({"type": "log", "target_id": target.target_id, "log": raw},
                      ensure_ascii=True).replace("@", "\\udcff\\ud800").encode("ascii")
    assert b"\\udcff\\ud800" in line and b"\\ud83d\\ude00" in line
    (connection,) = target.connections
    connection.transport.write(line + b"\n")
    after = target.emit_event("child_restarting")
    for ws in sessions:
        got = await ws.next("log")
        assert got["log"]["sequence"] == raw["sequence"]
        assert got["log"]["message"] == "report-\ufffd\ufffd.csv \U0001F600"
        assert (await ws.next("event"))["event"] == after
    assert all(ws.close_code is None for ws in sessions)
    assert len(relay.service.hub.sessions) == 3
