"""The dashboard session's numbers are bounded (supervisor.wire.bounds): filters, history
requests, and any integer literal a JSON decoder would read without limit."""

from __future__ import annotations

import pytest

from relay_memory import MemoryRelay, filter_message


@pytest.mark.parametrize("value, ok", [
    (None, True), (0, True), (2**53 - 1, True), (2**53, False), (-1, False), (True, False),
    (1.0, False),
])
def test_the_filter_sequence_min_is_bounded(value, ok):
    relay = MemoryRelay()
    session, ws = relay.session()
    before = len(ws.of_type("error"))
    relay.send(session, filter_message(sequence_min=value))
    errors = ws.of_type("error")[before:]
    if ok:
        assert errors == []
    else:
        assert [e["error"]["code"] for e in errors] == ["invalid_message_schema"]
        assert "sequence_min" in errors[0]["error"]["message"]


@pytest.mark.parametrize("payload", [
    b'{"type": "log_event_filter_conditions", "sequence_min": ' + b"9" * 401 + b"}",
    b'{"type": "log_event_filter_conditions", "sequence_min": 1e999}',
    b'{"type": "log_event_filter_conditions", "sequence_min": -Infinity}',
])
def test_a_session_message_with_an_unrepresentable_number_is_invalid_json(payload):
    relay = MemoryRelay()
    session, ws = relay.session()
    session.receive(payload, False)
    assert ws.last("error")["error"]["code"] == "invalid_message_json"
    assert session.established and ws.close_code is None


@pytest.mark.parametrize("limit", [0, 1001, 2**63 - 1, True, 1.5, "10"])
def test_a_history_request_limit_out_of_range_is_refused_by_the_relay(limit):
    relay = MemoryRelay()
    target = relay.target()
    relay.register(target)
    session, ws = relay.session()
    relay.send(session, {"type": "history_request", "request_id": "h1",
                         "target_id": target.target_id, "stream": "logs", "limit": limit})
    error = ws.last("error")
    assert error["error"]["code"] == "validation_failed", error
    assert "limit" in error["error"]["message"]
    assert "history.logs" not in target.methods()


def test_a_target_sequence_beyond_the_bounds_is_never_asked_for_again():
    relay = MemoryRelay(timeouts={"reconnect_initial_ms": 100, "reconnect_max_ms": 100})
    target = relay.target()
    relay.register(target)
    session, ws = relay.session()
    target.emit_event("child_started")
    target._next_event = 2**60
    target.emit_event("child_running")
    relay.settle()
    target.stop()
    relay.settle()
    target.start()
    relay.settle(0.2)
    subscribes = [params for method, params in target.requests if method == "events.subscribe"]
    assert len(subscribes) == 2, target.methods()
    assert subscribes[-1]["since_sequence"] == 1


@pytest.mark.parametrize("events, logs", [(True, 1), (-1, 0), (2**53, 0), (1.5, 0)])
def test_target_dropped_counts_out_of_range_are_ignored(events, logs):
    relay = MemoryRelay()
    target = relay.target()
    relay.register(target)
    session, ws = relay.session()
    target.report_dropped(3, 4)
    relay.settle()
    target.report_dropped(events, logs)
    relay.settle()
    last = ws.last("dropped_count")
    assert (last["dropped_event_count"], last["dropped_log_count"]) == (3, 4)
