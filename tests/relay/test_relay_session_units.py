"""Sessions (§3) on the relay's logic in memory: order rule, errors, binding, fan-out,
filters, target loss and expiry, slow sessions. The wiring over real wss:// is in
test_relay_sessions.py."""

from __future__ import annotations

import pytest
from automat import NoTransition

from relay_faketarget import fixture
from relay_memory import HELLO, ORDERED_OPERATOR, MemoryRelay, filter_message
from supervisor.relay.hub import TARGET_LIST_INTERVAL_SECONDS
from supervisor.relay.session import CLOSE_PROTOCOL_ERROR, CLOSE_SLOW_CONSUMER


def keys(name: str) -> set[str]:
    return set(fixture(name))


def test_order_rule_server_hello_then_client_hello_then_target_list_and_state():
    relay = MemoryRelay()
    target = relay.target()
    relay.register(target)
    session, ws = relay.session(hello=False)
    hello = ws.last("server_hello")
    assert set(hello) == keys("session.server_hello.json")
    assert hello["log_event_filter_mode"] == "remote" and hello["filter_config_version"] == 0
    assert hello["client_identity"] == session.identity.client_identity
    assert ws.types() == ["server_hello"]
    assert target.connections == []  # nothing is bound before the session is established
    relay.send(session, HELLO)
    types = ws.types()
    assert types[1] == "target_list" and types.count("state") == 1
    assert set(types[2:types.index("state")]) <= {"target_list"}  # re-sent as links change
    assert "connection_state" not in types
    (entry,) = ws.of_type("target_list")[0]["targets"]
    assert set(entry) == set(fixture("session.target_list.json")["targets"][0])
    assert entry["connection_state"] == "registered"  # binding follows the first list
    assert entry["instance_id"] is None  # no state read yet
    relay.settle(TARGET_LIST_INTERVAL_SECONDS)  # the next list waits for its interval
    last = ws.last("target_list")["targets"][0]
    assert last["connection_state"] == "connected"
    assert last["instance_id"] == target.instance_id
    # the state as the target sent it: the example's fields and the documented extension
    assert set(ws.last("state")["state"]) == set(fixture("session.state.json")["state"]) | {
        "target_resources"}


def test_a_first_message_of_another_type_gets_one_protocol_error_and_a_close():
    relay = MemoryRelay()
    session, ws = relay.session(hello=False)
    relay.send(session, {"type": "log_event_filter_conditions", "target_ids": []})
    assert ws.types() == ["server_hello", "error"]
    error = ws.last("error")
    assert error["error"]["code"] == "protocol_error" and error["error"]["stage"] == "session"
    assert error["command_id"] is None
    assert ws.close_code == CLOSE_PROTOCOL_ERROR
    assert session.closed and relay.hub.sessions == {}


@pytest.mark.parametrize("payload, binary, cause", [
    (b"{not json", False, "invalid_message_json"),
    (b'{"type": "client_hello"}', True, "invalid_message_json"),
    (b"[1, 2]", False, "invalid_message_schema"),
    (b'{"no_type": 1}', False, "invalid_message_schema"),
    (b'{"type": "client_hello", "client_store_id": "s", "resume_cursor": {}, "x": 1}', False,
     "unsupported_field"),
    (b'{"type": "client_hello", "client_store_id": "  ", "resume_cursor": {}}', False,
     "invalid_message_schema"),
    (b'{"type": "client_hello", "client_store_id": "s", "resume_cursor": []}', False,
     "invalid_message_schema"),
    (b'{"type": "client_hello", "client_store_id": "' + b"x" * 257 + b'"}', False,
     "invalid_message_schema"),
    (b'{"type": "nonsense"}', False, "expected client_hello"),
])
def test_a_first_message_that_is_not_a_valid_client_hello_gets_one_protocol_error_and_a_close(
        payload, binary, cause):
    relay = MemoryRelay()
    target = relay.target()
    relay.register(target)
    session, ws = relay.session(hello=False)
    session.receive(payload, binary)
    assert ws.types() == ["server_hello", "error"]
    error = ws.last("error")
    assert error["error"]["code"] == "protocol_error" and error["error"]["stage"] == "session"
    assert cause in error["error"]["message"]
    assert ws.close_code == CLOSE_PROTOCOL_ERROR
    # nothing else follows, not even for a valid client_hello sent after it
    relay.send(session, HELLO)
    relay.settle()
    assert ws.types() == ["server_hello", "error"]
    assert target.connections == []


def test_a_valid_client_hello_with_a_null_cursor_establishes():
    relay = MemoryRelay()
    session, ws = relay.session(hello=False)
    relay.send(session, {**HELLO, "resume_cursor": None})
    assert ws.last("target_list")["targets"] == [] and session.established
    assert ws.close_code is None


def test_errors_after_establishment_keep_the_session_open():
    relay = MemoryRelay()
    session, ws = relay.session()
    for message, code in [
        ({"type": "filter_update"}, "unsupported_message_type"),
        ({"type": "sequence_checkpoint", "sequence": 1}, "unsupported_message_type"),
        ({"type": "nonsense"}, "unsupported_message_type"),
        ({"no_type": 1}, "invalid_message_schema"),
        ({"type": "log_event_filter_conditions", "severities": "error"},
         "invalid_message_schema"),
        ({"type": "log_event_filter_conditions", "sequence_min": "1"}, "invalid_message_schema"),
        ({"type": "log_event_filter_conditions", "bogus": []}, "unsupported_field"),
        (HELLO, "protocol_error"),
    ]:
        relay.send(session, message)
        error = ws.last("error")["error"]
        assert error["code"] == code, message
        assert set(error) == {"code", "stage", "target_id", "message", "retryable"}
    for payload in (b"\xff\xfe", b'{"type": "command", "x": NaN}', b'{"t": "\\ud800"}'):
        session.receive(payload, False)
        assert ws.last("error")["error"]["code"] == "invalid_message_json", payload
    assert ws.close_code is None and session.established


def test_a_closed_session_is_final():
    relay = MemoryRelay()
    session, ws = relay.session()
    session.lost()
    session.lost()  # the relay closing it, then its transport reporting the close
    sent = len(ws.sent)
    relay.send(session, {"type": "nonsense"})
    assert len(ws.sent) == sent and session.closed
    with pytest.raises(NoTransition):
        session._machine.hello()


def test_one_shared_link_fans_out_and_closes_with_the_last_session():
    relay = MemoryRelay()
    target = relay.target()
    relay.register(target)
    (a, ws_a), (b, ws_b) = relay.session(), relay.session(ORDERED_OPERATOR)
    assert len(target.connections) == 1 and target.methods().count("hello") == 1
    assert target.methods().count("events.subscribe") == 1
    event = target.emit_event("child_restarting")
    log = target.emit_log("flushed 12 invoices")
    relay.settle()
    for ws in (ws_a, ws_b):
        assert ws.types()[-2:] == ["event", "log"]
        assert ws.last("event")["event"] == event and ws.last("log")["log"] == log
    a.lost()
    relay.settle()
    later = target.emit_event()
    relay.settle()
    assert ws_b.last("event")["event"] == later and ws_a.last("event")["event"] == event
    assert len(target.connections) == 1
    b.lost()
    relay.settle()
    assert target.connections == [] and relay.hub.links == {}


def test_a_late_session_gets_a_fresh_state_and_nothing_twice():
    relay = MemoryRelay()
    target = relay.target()
    relay.register(target)
    first = target.emit_event("child_started")
    a, ws_a = relay.session()
    assert ws_a.last("state")["state"]["recent_events"] == [first]
    target.emit_event("child_running")
    relay.settle()
    b, ws_b = relay.session()
    assert [e["sequence"] for e in ws_b.last("state")["state"]["recent_events"]] == [1, 2]
    target.emit_event("child_ready")
    relay.settle()
    assert [m["event"]["sequence"] for m in ws_a.of_type("event")] == [2, 3]
    assert [m["event"]["sequence"] for m in ws_b.of_type("event")] == [3]


def test_a_target_registering_later_is_announced_and_bound():
    relay = MemoryRelay()
    session, ws = relay.session()
    assert ws.last("target_list")["targets"] == []
    target = relay.target("late-target")
    relay.register(target)
    relay.settle(TARGET_LIST_INTERVAL_SECONDS)
    assert [t["target_id"] for t in ws.last("target_list")["targets"]] == ["late-target"]
    assert ws.last("state")["target_id"] == "late-target"
    types = ws.types()
    assert types.index("target_list", 1) < types.index("state")


def test_target_lists_are_coalesced_per_reactor_turn():
    relay = MemoryRelay()
    session, ws = relay.session()
    before = len(ws.of_type("target_list"))
    for name in ("t1", "t2", "t3"):
        relay.registry.register(relay.registration(relay.target(name)), "unix_uid:1000")
    relay.settle()
    assert len(ws.of_type("target_list")) == before  # the session's first list was just sent
    relay.settle(TARGET_LIST_INTERVAL_SECONDS)
    lists = ws.of_type("target_list")[before:]
    assert [[t["target_id"] for t in m["targets"]] for m in lists] == [["t1", "t2", "t3"]]
    relay.settle(TARGET_LIST_INTERVAL_SECONDS)  # the links connected meanwhile: one more
    lists = ws.of_type("target_list")[before:]
    assert len(lists) == 2
    assert {t["connection_state"] for t in lists[-1]["targets"]} == {"connected"}


def test_filters_apply_relay_side():
    relay = MemoryRelay()
    a_target, b_target = relay.target("target-a"), relay.target("target-b")
    relay.register(a_target)
    relay.register(b_target)
    session, ws = relay.session()
    conditions = fixture("session.filter.json")
    conditions["target_ids"] = ["target-a"]
    relay.send(session, conditions)
    # target_ids narrows events and logs only: both targets stay bound
    assert session.filter_version == 1 and session.bound == {"target-a", "target-b"}
    a_target.emit_event("child_running", severity="info")
    a_target.emit_log("chatty", severity="info")
    b_target.emit_event("child_failed")
    b_target.emit_log("broken b", severity="warning")
    wanted = a_target.emit_event("child_failed")
    wanted_log = a_target.emit_log("broken", severity="warning")
    relay.settle()
    assert [m["event"] for m in ws.of_type("event")] == [wanted]
    assert [m["log"] for m in ws.of_type("log")] == [wanted_log]
    # child path (and below it) and lifecycle state
    relay.send(session, filter_message(child_paths=["/root/invoice_writer"],
                                lifecycle_states=["paused"]))
    a_target.emit_event("child_paused", child_id="worker")
    a_target.emit_event("child_running", child_id="invoice_writer")
    wanted = a_target.emit_event("child_paused", child_id="invoice_writer")
    relay.settle()
    assert ws.last("event")["event"] == wanted
    relay.send(session, {"type": "log_event_filter_conditions", "correlation_id": "cmd-9"})
    before = len(ws.of_type("event"))
    a_target.emit_event("child_running")
    wanted = a_target.emit_event("child_paused", correlation_id="cmd-9")
    relay.settle()
    assert [m["event"] for m in ws.of_type("event")[before:]] == [wanted]
    assert session.filter_version == 3
    assert ws.last("server_hello")["filter_config_version"] == 0


def test_correlation_id_matches_as_a_substring():
    relay = MemoryRelay()
    target = relay.target()
    relay.register(target)
    session, ws = relay.session()
    relay.send(session, filter_message(correlation_id="7f3a"))
    target.emit_event("child_running", correlation_id="incident-4")
    inside = target.emit_event("child_paused", correlation_id="cmd-7f3a-b")
    exact = target.emit_event("child_resumed", correlation_id="7f3a")
    target.emit_log("no correlation")  # a log without a correlation id does not match
    relay.settle()
    assert [m["event"] for m in ws.of_type("event")] == [inside, exact]
    assert ws.of_type("log") == []


def test_a_filter_on_one_of_two_targets_keeps_the_other_bound_and_commandable():
    relay = MemoryRelay()
    a_target = relay.target("target-a")
    b_target = relay.target("target-b", children={"worker": "running",
                                                  "invoice_writer": "running"})
    relay.register(a_target)
    relay.register(b_target)
    session, ws = relay.session()
    relay.send(session, filter_message(target_ids=["target-a"]))
    assert session.bound == {"target-a", "target-b"}
    assert len(b_target.connections) == 1  # its link stays open
    b_target.emit_event("child_failed")
    relay.settle()
    assert ws.of_type("event", "target-b") == []  # its events are filtered
    b_target.stop()
    relay.settle()
    assert ws.last("connection_state") == {"type": "connection_state", "target_id": "target-b",
                                           "state": "unavailable"}
    b_target.restart()
    relay.settle(1.0)
    assert ws.last("connection_state")["state"] == "connected"
    message = fixture("session.command.json")
    message.update(target_id="target-b", target={"child_path": "/root/invoice_writer"})
    relay.send(session, message)
    result = ws.last("command_result")
    assert result["target_id"] == "target-b" and result["result"]["status"] == "completed"
    assert ws.of_type("state_delta", "target-b")  # its deltas are not filtered
    assert ws.of_type("event", "target-b") == []
    assert [t["connection_state"] for t in ws.last("target_list")["targets"]] == \
        ["connected", "connected"]


def test_a_filter_that_lets_more_through_sends_a_fresh_state_for_the_affected_targets():
    relay = MemoryRelay()
    a_target, b_target = relay.target("target-a"), relay.target("target-b")
    relay.register(a_target)
    relay.register(b_target)
    session, ws = relay.session()
    states = len(ws.of_type("state"))
    # narrowing never refills
    relay.send(session, filter_message(target_ids=["target-a"], severities=["error"]))
    assert len(ws.of_type("state")) == states
    # target-b comes back into the stream; target-a's conditions are unchanged
    relay.send(session, filter_message(target_ids=["target-a", "target-b"], severities=["error"]))
    fresh = ws.of_type("state")[states:]
    assert [m["target_id"] for m in fresh] == ["target-b"]
    # a looser severity lets more of both through: both get a state
    relay.send(session, filter_message(severities=["error", "warning"]))
    fresh = ws.of_type("state")[states + 1:]
    assert sorted(m["target_id"] for m in fresh) == ["target-a", "target-b"]
    # a longer correlation substring is narrower; a shorter one wider
    relay.send(session, filter_message(severities=["error", "warning"], correlation_id="cmd-7f"))
    count = len(ws.of_type("state"))
    relay.send(session, filter_message(severities=["error", "warning"], correlation_id="cmd-7f3a"))
    assert len(ws.of_type("state")) == count
    relay.send(session, filter_message(severities=["error", "warning"], correlation_id="7f"))
    assert len(ws.of_type("state")) == count + 2


def test_a_lost_target_is_unavailable_at_once_and_its_return_brings_a_fresh_state_first():
    relay = MemoryRelay(timeouts={"reconnect_initial_ms": 100, "reconnect_max_ms": 100})
    target = relay.target()
    relay.register(target)
    sessions = [relay.session(), relay.session()]
    target.stop()
    relay.settle()  # the connection loss arrives; no time passes
    for _, ws in sessions:
        assert ws.last("connection_state") == {"type": "connection_state",
                                               "target_id": target.target_id,
                                               "state": "unavailable"}
    relay.settle(TARGET_LIST_INTERVAL_SECONDS)  # the target_list follows within its interval
    for _, ws in sessions:
        assert ws.last("target_list")["targets"][0]["connection_state"] == "unavailable"
        assert ws.types().index("connection_state") < len(ws.types()) - 1
    target.restart()
    target.emit_event("child_started")
    relay.settle(0.2)
    fresh = target.emit_event("child_running")
    relay.settle()
    for _, ws in sessions:
        types = ws.types()
        back = types.index("connection_state", types.index("connection_state") + 1)
        assert ws.sent[back]["state"] == "connected"
        assert types[back + 1] == "state"
        assert ws.sent[back + 1]["state"]["recent_events"][0]["event_type"] == "child_started"
        assert ws.last("event")["event"] == fresh


def test_lease_expiry_tells_sessions_and_closes_the_link():
    relay = MemoryRelay()
    target = relay.target()
    relay.register(target, lease=1)
    session, ws = relay.session()
    relay.settle(1.0)
    relay.registry.sweep()
    relay.settle()
    assert ws.last("connection_state")["state"] == "expired"
    assert ws.last("target_list")["targets"] == []
    assert target.connections == [] and relay.hub.links == {} and session.bound == set()
    relay.settle(60.0)
    assert target.methods().count("hello") == 1  # no reconnects to an expired target


def test_a_re_registration_with_a_new_path_moves_the_link():
    relay = MemoryRelay()
    target = relay.target()
    relay.register(target)
    session, ws = relay.session()
    moved = relay.target(target.target_id)
    del relay.targets[moved.ipc_path]
    moved.ipc_path = "/memory/moved.sock"
    relay.targets[moved.ipc_path] = moved
    relay.register(moved)
    assert target.connections == [] and len(moved.connections) == 1
    assert len(ws.of_type("state")) == 2


def test_a_hung_target_does_not_stall_others():
    relay = MemoryRelay(timeouts={"ipc_request_seconds": 0.3, "reconnect_initial_ms": 2000,
                                  "reconnect_max_ms": 2000})
    hung, healthy = relay.target("hung-target"), relay.target("healthy-target")
    hung.freeze()
    relay.register(hung)
    relay.register(healthy)
    session, ws = relay.session()
    event = healthy.emit_event()
    relay.settle()
    assert ws.last("event")["event"] == event
    assert relay.hub.links["hung-target"].state == "connecting"
    relay.settle(0.3)
    assert relay.hub.links["hung-target"].state == "unavailable"
    assert [m["target_id"] for m in ws.of_type("state")] == ["healthy-target"]
    assert ws.of_type("connection_state", "hung-target") == []  # none before a first state


def test_target_reported_drops_are_forwarded():
    relay = MemoryRelay()
    target = relay.target()
    relay.register(target)
    session, ws = relay.session()
    target.report_dropped(17, 2)
    relay.settle()
    assert ws.sent[-1] == {"type": "dropped_count", "target_id": target.target_id,
                           "dropped_event_count": 17, "dropped_log_count": 2}


def test_a_slow_session_drops_the_oldest_events_and_counts_them():
    relay = MemoryRelay(limits={"session_queue": 50})
    target = relay.target()
    relay.register(target)
    session, ws = relay.session()
    other, ws_other = relay.session()
    session.outbox.pauseProducing()  # the browser stops reading
    sent = [target.emit_event() for _ in range(500)]
    relay.settle()
    assert session.outbox.pending == 50 + 1  # the limit plus one dropped_count per target
    dropped = session.outbox.dropped[target.target_id][0]
    assert len(ws_other.of_type("event")) == 500  # the reading session got everything
    session.outbox.resumeProducing()
    counts = [m for m in ws.sent if m["type"] == "dropped_count"]
    assert counts == [{"type": "dropped_count", "target_id": target.target_id,
                       "dropped_event_count": dropped, "dropped_log_count": 0}]
    delivered = [m["event"]["sequence"] for m in ws.of_type("event")]
    assert delivered == [e["sequence"] for e in sent[-50:]]  # the newest `session_queue` kept
    assert len(delivered) + dropped == len(sent)


def test_a_session_whose_queue_fills_with_what_cannot_be_dropped_is_closed():
    relay = MemoryRelay(limits={"session_queue": 16})
    targets = [relay.target(f"t{i:02d}") for i in range(20)]
    session, ws = relay.session()
    session.outbox.pauseProducing()
    for target in targets:
        relay.register(target)  # target_list and state messages: not droppable
    relay.settle(TARGET_LIST_INTERVAL_SECONDS)
    assert ws.close_code == CLOSE_SLOW_CONSUMER
    assert session.closed and relay.hub.sessions == {}
    assert all(t.connections == [] for t in targets)
