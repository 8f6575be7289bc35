"""Commands and audit (§4) on the relay's logic in memory: checks in the contract's order,
audit before forwarding, results and what follows them, timeouts, audit failures, replay.
The wiring (wss://, a target's socket, SQLite) is in test_relay_commands.py."""

from __future__ import annotations

from relay_faketarget import fixture
from relay_memory import ORDERED_OPERATOR, VIEWER, MemoryRelay
from supervisor.wire.vocabulary import COMMANDS


def command(**changes):
    message = fixture("session.command.json")
    message.update(changes)
    return message


def ready(relay=None, **sections):
    """A relay with one registered target and an established, bound session."""
    relay = relay or MemoryRelay(**sections)
    target = relay.target(children={"worker": "running", "invoice_writer": "running"})
    relay.register(target)
    session, ws = relay.session()
    return relay, target, session, ws


def forwarded(target):
    return [(m, p) for m, p in target.requests if str(m).startswith("command.")]


def test_a_command_is_forwarded_answered_and_audited_before_and_after():
    relay, target, session, ws = ready()
    watcher, ws_watcher = relay.session(VIEWER)
    relay.send(session, command(target={"child_path": "/root/invoice_writer"}))
    result = ws.last("command_result")
    assert set(result) == set(fixture("session.command_result.json"))
    body = result["result"]
    assert set(body) == set(fixture("session.command_result.json")["result"])
    assert body["accepted"] is True and body["status"] == "completed"
    assert body["requested_by"] == "CN=demo operator"
    assert body["command_id"] == body["correlation_id"] == "cmd-7f3a"
    ((method, params),) = forwarded(target)
    assert method == "command.pause_child"
    assert set(params) == set(fixture("ipc.command.request.json")["params"])
    assert params["requested_by"] == "CN=demo operator" and params["correlation_id"] == "cmd-7f3a"
    assert params["target"] == {"child_path": "/root/invoice_writer", "child_manifest": None}
    # the result (and its audit record) is followed by the delta it carries
    after = [t for t in ws.types()[ws.types().index("command_result") + 1:] if t != "audit_event"]
    assert after == ["state_delta"]
    assert relay.audit.results() == [("cmd-7f3a", "accepted"), ("cmd-7f3a", "completed")]
    record = relay.audit.records[0]
    assert record.identity.principal == "CN=demo operator" and record.reason == \
        "maintenance window"
    for w in (ws, ws_watcher):
        audits = w.of_type("audit_event")
        assert [a["audit"]["result"] for a in audits] == ["accepted", "completed"]
        assert set(audits[1]["audit"]) == set(fixture("session.audit_event.json")["audit"])
        assert audits[1]["audit"]["identity"]["source"] == "mtls"


def test_nothing_is_forwarded_before_its_accepted_record_is_written():
    relay, target, session, ws = ready()
    relay.audit.holding = True
    relay.send(session, command())
    assert forwarded(target) == [] and [r.result for r in relay.audit.held] == ["accepted"]
    relay.audit.release()
    relay.settle()
    assert len(forwarded(target)) == 1
    # the outcome is written before the result is sent
    assert [r.result for r in relay.audit.held] == ["completed"]
    assert ws.of_type("command_result") == []
    relay.audit.release()
    relay.settle()
    assert relay.audit.results() == [("cmd-7f3a", "accepted"), ("cmd-7f3a", "completed")]
    types = ws.types()
    assert types.index("audit_event") < types.index("command_result")


def test_an_audit_that_cannot_be_written_refuses_the_command():
    relay, target, session, ws = ready()
    relay.audit.failing = True
    relay.send(session, command())
    error = ws.last("error")["error"]
    assert error["code"] == "audit_unavailable" and error["retryable"] is True
    assert ws.last("error")["command_id"] == "cmd-7f3a"
    assert forwarded(target) == []
    event = target.emit_event()  # watching goes on
    relay.settle()
    assert ws.last("event")["event"] == event
    relay.audit.failing = False
    relay.send(session, command(command_id="again"))
    assert ws.last("command_result")["result"]["status"] == "completed"


def test_a_logical_failure_is_failed_and_a_fresh_state_follows():
    relay, target, session, ws = ready()
    relay.send(session, command(command_id="cmd-80c1", target={"child_path": "/root/nope"}))
    result = ws.last("command_result")["result"]
    assert result["accepted"] is False and result["status"] == "failed"
    assert result["error"]["code"] == "unknown_child"
    after = [t for t in ws.types()[ws.types().index("command_result") + 1:] if t != "audit_event"]
    assert after == ["state"]
    assert relay.audit.results() == [("cmd-80c1", "accepted"), ("cmd-80c1", "failed")]
    assert "unknown_child" in relay.audit.records[1].detail


def test_checks_run_in_the_contracts_order_and_every_refusal_is_audited():
    relay = MemoryRelay(limits={"rejected_burst": 100})
    limited = relay.target("limited-target")
    body = limited.registration()
    relay.register(limited, supported_commands=[c for c in body["supported_commands"]
                                                if c["name"] != "restart_child"])
    relay, target, session, ws = ready(relay)
    tid = target.target_id
    cases = [
        (command(target_id="nobody"), "target_not_bound"),
        (command(target_id=None), "target_not_bound"),
        (command(target_id="limited-target", command="restart_child"), "unsupported_command"),
        (command(command="reboot_everything", command_id=" "), "unsupported_command"),
        (command(command_id="  "), "invalid_message_schema"),
        (command(command_id="c1", target="x"), "invalid_message_schema"),
        (command(command_id="c2", confirmed="yes"), "invalid_message_schema"),
        (command(command_id="c3", requested_by="CN=root"), "requested_by_override"),
        (command(command_id="c4", reason=" "), "empty_reason"),
        (command(command_id="c5", reason=None), "empty_reason"),
        # several failures at once: the earliest check wins
        (command(command_id="c6", reason="", command="remove_child", confirmed=False,
                 requested_by="x"), "requested_by_override"),
        (command(command_id="c7", reason="", command="remove_child"), "empty_reason"),
        (command(command_id="c8", command="remove_child"), "confirmation_required"),
        (command(command_id="c9", command="shutdown_tree", confirmed=False),
         "confirmation_required"),
        (command(command_id="c10", bogus=1), "unsupported_field"),
    ]
    for message, code in cases:
        relay.send(session, message)
        error = ws.last("error")["error"]
        assert error["code"] == code, (message, error)
        # the id of the command it answers is beside the error (null when it has none)
        command_id = message["command_id"]
        assert ws.last("error")["command_id"] == (command_id if command_id.strip() else None)
        assert error["stage"] == "command_validate"
        if message.get("target_id") in (tid, "limited-target"):
            assert error["target_id"] == message["target_id"]
    assert [r.result for r in relay.audit.records] == ["rejected"] * len(cases)
    assert [r.detail.split(":")[0] for r in relay.audit.records] == [c for _, c in cases]
    assert forwarded(target) == [] and forwarded(limited) == []


def test_an_unavailable_target_is_refused_before_the_message_is_looked_at():
    relay, target, session, ws = ready()
    target.stop()
    relay.settle()
    relay.send(session, command(command_id=" ", reason="", command="remove_child"))
    error = ws.last("error")["error"]
    assert error["code"] == "target_unavailable" and error["retryable"] is True


def test_grants_decide_who_may_run_what():
    relay, target, session, ws = ready()
    viewer, ws_viewer = relay.session(VIEWER)
    # server_hello says who the session is and what it may run, in the contract's order
    assert [(m["principal"], m["permitted_commands"]) for m in
            (ws.last("server_hello"), ws_viewer.last("server_hello"))] == [
        ("CN=demo operator", list(COMMANDS)), ("O=Example Ops, CN=viewer", [])]
    relay.send(viewer, command())
    assert ws_viewer.last("error")["error"]["code"] == "command_not_permitted"
    ordered, ws_ordered = relay.session(ORDERED_OPERATOR)  # may pause, not quarantine
    assert ws_ordered.last("server_hello")["permitted_commands"] == [
        "pause_child", "resume_child", "remove_child"]
    relay.send(ordered, command(command="quarantine_child", command_id="q1"))
    assert ws_ordered.last("error")["error"]["code"] == "command_not_permitted"
    relay.send(ordered, command(command_id="p1"))
    result = ws_ordered.last("command_result")["result"]
    assert result["requested_by"] == "O=Example Ops, CN=demo operator"
    assert [p["command_id"] for _, p in forwarded(target)] == ["p1"]


def test_a_command_before_client_hello_is_refused_audited_and_the_session_closed():
    relay = MemoryRelay()
    session, ws = relay.session(hello=False)
    relay.send(session, command())
    assert ws.types() == ["server_hello", "error"]
    error = ws.last("error")
    assert (error["error"]["code"], error["error"]["stage"]) == ("protocol_error", "session")
    assert session.closed
    assert relay.audit.results() == [("cmd-7f3a", "rejected")]
    assert relay.audit.records[0].detail.startswith("protocol_error")


def test_the_registered_command_timeout_bounds_the_wait_for_a_result():
    relay = MemoryRelay()
    target = relay.target(children={"invoice_writer": "running"})
    body = target.registration()
    relay.register(target, supported_commands=[{**c, "timeout_seconds": 3}
                                               for c in body["supported_commands"]])
    session, ws = relay.session()
    target.freeze()
    relay.send(session, command())
    relay.settle(3.0 - 0.001)
    assert ws.of_type("command_result") == []
    relay.settle(0.001)
    result = ws.last("command_result")["result"]
    assert result["status"] == "failed" and result["error"]["code"] == "command_timeout"
    assert relay.audit.results() == [("cmd-7f3a", "accepted"), ("cmd-7f3a", "failed")]


def test_commands_in_flight_per_session_are_capped():
    relay = MemoryRelay(limits={"max_commands_in_flight": 2})
    target = relay.target()
    relay.register(target, supported_commands=[{**c, "timeout_seconds": 3} for c in
                                               target.registration()["supported_commands"]])
    session, ws = relay.session()
    target.freeze()
    for index in range(3):
        relay.send(session, command(command_id=f"c{index}"))
    error = ws.last("error")["error"]
    assert (error["code"], error["retryable"]) == ("too_many_commands", True)
    assert "at most 2 commands" in error["message"]
    relay.settle(3.0)  # the registered command timeout
    results = [m["result"] for m in ws.of_type("command_result")]
    assert sorted(r["command_id"] for r in results) == ["c0", "c1"]
    assert {r["error"]["code"] for r in results} == {"command_timeout"}
    assert sorted(relay.audit.results()) == [("c0", "accepted"), ("c0", "failed"),
                                             ("c1", "accepted"), ("c1", "failed"),
                                             ("c2", "rejected")]


def test_binding_replays_the_audit_after_the_state_and_merges_live_records():
    relay, target, session, ws = ready(limits={"audit_replay": 3})
    for index in range(3):
        relay.send(session, command(command_id=f"c{index}"))
    late, ws_late = relay.session()
    replay = ws_late.of_type("audit_event")
    assert [a["audit"]["audit_id"] for a in replay] == ["a-000004", "a-000005", "a-000006"]
    types = ws_late.types()
    assert types.index("state") < types.index("audit_event")
    # records written while a replay is being read are neither lost nor sent twice
    relay.audit.holding_reads = True
    third, ws_third = relay.session()
    relay.send(session, command(command_id="live"))
    assert ws_third.of_type("audit_event") == []
    relay.audit.release()
    relay.settle()
    ids = [a["audit"]["audit_id"] for a in ws_third.of_type("audit_event")]
    assert ids == ["a-000004", "a-000005", "a-000006", "a-000007", "a-000008"]


def test_signal_child_is_forwarded_with_its_signal_and_audited():
    relay, target, session, ws = ready()
    relay.send(session, command(command="signal_child", command_id="cmd-sig",
                                target={"child_path": "/root/worker", "signal": "HUP"},
                                reason="reopen logs"))
    body = ws.last("command_result")["result"]
    assert body["accepted"] is True and body["status"] == "completed"
    ((method, params),) = forwarded(target)
    assert method == "command.signal_child"
    assert params["target"] == {"child_path": "/root/worker", "child_manifest": None, "signal": "HUP"}
    assert relay.audit.results() == [("cmd-sig", "accepted"), ("cmd-sig", "completed")]
    assert relay.audit.records[0].target["signal"] == "HUP"
    relay.send(session, command(command="signal_child", command_id="cmd-long",
                                target={"child_path": "/root/worker", "signal": "X" * 17}))
    assert ws.last("error")["error"]["code"] == "invalid_message_schema"
    assert len(forwarded(target)) == 1
