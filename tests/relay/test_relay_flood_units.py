"""Floods from one session on the relay's logic in memory: command sizes, per-session rates
(token buckets on the fake clock), the replayed-command window, bounded audit replay and
filter refills that never pile up ahead of another session's command."""

from __future__ import annotations

import hashlib
import json

import pytest
from twisted.internet.task import Clock

from relay_faketarget import fixture
from relay_memory import OPERATOR, VIEWER, MemoryRelay
from supervisor.config.relay import ConfigError
from supervisor.relay.ratelimit import TokenBucket
from supervisor.relay.session import CLOSE_RATE_LIMITED

BIG_MANIFEST = {"name": "payload", "command": ["/bin/true"], "env": {"PAD": "x" * 50_000}}


def command(**changes):
    message = fixture("session.command.json")
    message.update(changes)
    return message


def shutdown(command_id, **changes):
    """The measured flood: ``shutdown_tree`` with a 50 KB manifest and a 4,000-char reason."""
    return command(command_id=command_id, command="shutdown_tree", confirmed=True,
                   target={"child_path": None, "child_manifest": BIG_MANIFEST},
                   reason="r" * 4000, **changes)


def ready(**sections):
    relay = MemoryRelay(**sections)
    target = relay.target(children={"worker": "running", "invoice_writer": "running"})
    relay.register(target)
    return relay, target


def counted(relay, name, **labels):
    return relay.hub.metrics.registry.get_sample_value(name, labels) or 0


def receive(session, message):
    """Hand one message to the session without letting the fake reactor turn."""
    session.receive(json.dumps(message).encode(), False)


def errors(ws):
    return [m["error"]["code"] for m in ws.of_type("error")]


def forwarded(target):
    return [p["command_id"] for m, p in target.requests if str(m).startswith("command.")]


def test_a_token_bucket_spends_its_burst_then_refills_with_the_clock():
    clock = Clock()
    bucket = TokenBucket(clock, rate=2.0, burst=3)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.4)  # 0.8 of a token
    assert bucket.take() is False
    clock.advance(0.1)
    assert bucket.take() is True and bucket.take() is False
    clock.advance(3600)  # never more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.refused == 4


def test_a_viewers_flood_of_refused_commands_writes_a_bounded_number_of_rows():
    relay, target = ready()
    viewer, ws = relay.session(VIEWER)
    for index in range(500):
        receive(viewer, shutdown(f"flood-{index}"))
    relay.settle()
    # every refusal within the burst is audited, then one record stands for the excess
    assert len(relay.audit.records) <= 11
    burst = relay.config.limits.rejected_burst
    assert len(relay.audit.records) == burst + 1
    assert all(r.result == "rejected" for r in relay.audit.records)
    assert [r.detail.split(":")[0] for r in relay.audit.records] == \
        ["reason_too_long"] * burst + ["rate_limited"]
    assert errors(ws) == ["reason_too_long"] * burst + ["rate_limited"]
    assert ws.close_code == CLOSE_RATE_LIMITED and viewer.closed
    assert counted(relay, "relay_sessions_rate_limited_total", limit="rejected") == 1
    # no row holds the manifest or the whole reason
    raw = json.dumps(BIG_MANIFEST, ensure_ascii=False, separators=(",", ":"),
                     sort_keys=True).encode()
    for record in relay.audit.records:
        assert record.target == {"child_manifest_bytes": len(raw),
                                 "child_manifest_sha256": hashlib.sha256(raw).hexdigest(),
                                 "child_path": None}
        assert len(record.reason) == relay.config.limits.max_reason_chars
    assert forwarded(target) == []


def test_an_oversized_reason_or_manifest_is_refused_and_audited_without_it():
    relay, target = ready(limits={"max_reason_chars": 50, "max_manifest_bytes": 100})
    session, ws = relay.session(OPERATOR)
    relay.send(session, command(command_id="long", reason="x" * 51))
    relay.send(session, command(command_id="big", command="shutdown_tree", confirmed=True,
                                target={"child_path": None, "child_manifest": "m" * 101}))
    assert errors(ws) == ["reason_too_long", "manifest_too_large"]
    assert [e["command_id"] for e in ws.of_type("error")] == ["long", "big"]
    long_record, big_record = relay.audit.records
    assert long_record.result == big_record.result == "rejected"
    assert long_record.reason == "x" * 50
    assert big_record.target == {"child_path": None, "child_manifest_bytes": 101,
                                 "child_manifest_sha256": hashlib.sha256(b"m" * 101).hexdigest()}
    # exactly at the caps the command goes ahead, its manifest intact for the target
    relay.send(session, command(command_id="fits", reason="x" * 50, command="shutdown_tree",
                                confirmed=True,
                                target={"child_path": None, "child_manifest": "m" * 100}))
    assert forwarded(target) == ["fits"]
    accepted = [r for r in relay.audit.records if r.command_id == "fits"][0]
    assert accepted.result == "accepted" and accepted.target["child_manifest"] == "m" * 100


def test_a_refused_commands_row_is_bounded_whatever_it_carries():
    relay, target = ready()
    viewer, ws = relay.session(VIEWER)
    huge = "h" * 60_000
    for message in (
        command(target_id=huge),  # target_not_bound, the id in its message
        command(command=huge),  # unsupported_command
        command(command_id=huge),  # invalid_message_schema
        command(**{huge: 1}),  # unsupported_field, the key in its message
        command(target={"child_path": huge, "child_manifest": {huge: huge}}),
    ):
        relay.send(viewer, message)
    assert len(relay.audit.records) == 5
    for record in relay.audit.records:
        row = [record.target_id, record.command_id, record.command, record.reason,
               record.detail, json.dumps(record.target)]
        assert sum(len(field or "") for field in row) < 4096, record.detail[:80]


def test_commands_beyond_the_session_rate_close_it_with_one_record():
    relay, target = ready(limits={"commands_per_second": 1, "commands_burst": 3})
    session, ws = relay.session(OPERATOR)
    for index in range(3):
        relay.send(session, command(command_id=f"c{index}"))
    relay.settle(1.0)  # one more token
    relay.send(session, command(command_id="c3"))
    assert forwarded(target) == ["c0", "c1", "c2", "c3"] and not session.closed
    for index in range(4, 50):
        receive(session, command(command_id=f"c{index}"))
    relay.settle()
    assert forwarded(target) == ["c0", "c1", "c2", "c3"]
    assert ws.last("error") == {"type": "error", "command_id": "c4",
                                "error": ws.last("error")["error"]}
    assert ws.last("error")["error"]["code"] == "rate_limited"
    assert ws.close_code == CLOSE_RATE_LIMITED and session.closed
    assert counted(relay, "relay_sessions_rate_limited_total", limit="commands") == 1
    rejected = [r for r in relay.audit.records if r.result == "rejected"]
    assert [(r.command_id, r.detail.split(":")[0]) for r in rejected] == [("c4", "rate_limited")]
    # another session of the same principal has its own buckets
    other, ws_other = relay.session(OPERATOR)
    relay.send(other, command(command_id="d0"))
    assert forwarded(target)[-1] == "d0"


def test_filter_changes_beyond_the_session_rate_close_it():
    relay, target = ready(limits={"filter_changes_per_second": 1, "filter_changes_burst": 2})
    viewer, ws = relay.session(VIEWER)
    flt = fixture("session.filter.json")
    relay.send(viewer, flt)
    relay.send(viewer, flt)
    relay.settle(1.0)
    relay.send(viewer, flt)
    assert not viewer.closed and viewer.filter_version == 3
    relay.send(viewer, flt)
    assert errors(ws) == ["rate_limited"] and ws.last("error")["command_id"] is None
    assert ws.close_code == CLOSE_RATE_LIMITED and viewer.closed
    assert viewer.filter_version == 3
    assert counted(relay, "relay_sessions_rate_limited_total", limit="filter_changes") == 1
    assert relay.audit.records == []  # filter changes are not commands: nothing is audited


def _widen(index):
    message = fixture("session.filter.json")
    message.update(target_ids=[], child_paths=[], lifecycle_states=[], event_types=[],
                   sequence_min=None, correlation_id=None,
                   severities=["error"] if index % 2 else [])
    return message


def test_a_filter_flood_keeps_refills_bounded_and_another_sessions_command_is_answered():
    relay, target = ready()
    admin, ws_admin = relay.session(OPERATOR)
    viewer, ws_viewer = relay.session(VIEWER)
    viewer.rates = None  # no rate limit: the refills alone must stay bounded
    before = len(target.methods())
    for index in range(400):  # every other change widens the stream again
        receive(viewer, _widen(index))
    receive(admin, command(command_id="admin-1"))
    relay.settle()
    methods = target.methods()[before:]
    # at most one fresh state is read ahead of the admin's command, one more after it
    assert methods.index("command.pause_child") <= 1
    assert methods.count("state") <= 2
    assert ws_admin.last("command_result")["result"]["command_id"] == "admin-1"
    assert relay.audit.results() == [("admin-1", "accepted"), ("admin-1", "completed")]
    # the viewer's last conditions hold and it got a fresh state after the flood
    assert viewer.filter.severities == ("error",) and viewer.filter_version == 400
    assert ws_viewer.of_type("state", target.target_id)


def test_a_filter_flood_at_the_default_rate_closes_the_viewer_not_the_admin():
    relay, target = ready()
    admin, ws_admin = relay.session(OPERATOR)
    viewer, ws_viewer = relay.session(VIEWER)
    for index in range(20_000):
        receive(viewer, _widen(index))
    receive(admin, command(command_id="admin-1"))
    relay.settle()
    assert ws_viewer.close_code == CLOSE_RATE_LIMITED
    assert viewer.filter_version == relay.config.limits.filter_changes_burst
    assert target.methods().count("state") <= 2 + relay.config.limits.filter_changes_burst
    assert ws_admin.last("command_result")["result"]["status"] == "completed"


def test_a_repeated_command_id_is_refused():
    relay, target = ready()
    session, ws = relay.session(OPERATOR)
    relay.send(session, command(command_id="once"))
    relay.send(session, command(command_id="once"))
    assert forwarded(target) == ["once"]
    assert ws.last("error") == {"type": "error", "command_id": "once",
                                "error": ws.last("error")["error"]}
    assert ws.last("error")["error"]["code"] == "duplicate_command_id"
    assert relay.audit.results() == [("once", "accepted"), ("once", "completed"),
                                     ("once", "rejected")]
    assert relay.audit.records[-1].detail.startswith("duplicate_command_id:")
    # from another session too
    other, ws_other = relay.session(OPERATOR)
    relay.send(other, command(command_id="once"))
    assert forwarded(target) == ["once"]
    # a refused command leaves no trace in the window: fixed, it goes ahead
    relay.send(session, command(command_id="fixed", reason=" "))
    relay.send(session, command(command_id="fixed"))
    assert forwarded(target) == ["once", "fixed"]
    # so does one refused because its record could not be written
    relay.audit.failing = True
    relay.send(session, command(command_id="retry"))
    assert ws.last("error")["error"]["code"] == "audit_unavailable"
    relay.audit.failing = False
    relay.send(session, command(command_id="retry"))
    assert forwarded(target) == ["once", "fixed", "retry"]


def test_a_command_id_may_come_again_once_its_window_ended():
    relay, target = ready(limits={"command_id_window_seconds": 20})
    session, ws = relay.session(OPERATOR)
    relay.send(session, command(command_id="once"))
    relay.settle(19.0)
    relay.send(session, command(command_id="once"))
    assert ws.last("error")["error"]["code"] == "duplicate_command_id"
    relay.settle(1.0)
    relay.send(session, command(command_id="once"))
    assert forwarded(target) == ["once", "once"]


def test_the_command_id_window_is_bounded_in_size_oldest_forgotten_first():
    relay, target = ready(limits={"command_id_window_size": 2})
    session, ws = relay.session(OPERATOR)
    for command_id in ("a", "b", "c", "b", "a"):
        relay.send(session, command(command_id=command_id))
    assert forwarded(target) == ["a", "b", "c", "a"]
    relay.hub.metrics.observe_hub(relay.hub)
    assert counted(relay, "relay_command_ids_forgotten_total") == 2


def test_the_audit_replay_on_bind_is_bounded_in_bytes_and_says_it_was_cut():
    relay, target = ready(limits={"audit_replay_max_bytes": 2048, "audit_replay": 100})
    session, ws = relay.session(OPERATOR)
    for index in range(10):
        relay.send(session, command(command_id=f"c{index}", reason="y" * 200))
    late, ws_late = relay.session(VIEWER)
    replay = ws_late.of_type("audit_event")
    assert 0 < len(replay) < 20
    assert sum(len(json.dumps(m, separators=(",", ":")).encode()) for m in replay) <= \
        2048 + len(',"replay_truncated":true')
    assert replay[0]["replay_truncated"] is True
    assert all("replay_truncated" not in m for m in replay[1:])
    assert replay[-1]["audit"]["audit_id"] == relay.audit.records[-1].audit_id
    assert counted(relay, "relay_audit_replays_truncated_total") == 1
    # a replay that fits is not marked
    relay2, target2 = ready()
    s2, ws2 = relay2.session(OPERATOR)
    relay2.send(s2, command(command_id="only"))
    late2, ws_late2 = relay2.session(VIEWER)
    assert [("replay_truncated" in m) for m in ws_late2.of_type("audit_event")] == [False, False]


@pytest.mark.parametrize("key, value", [
    ("commands_per_second", 0), ("commands_burst", 0), ("rejected_per_second", -1),
    ("rejected_burst", "10"), ("filter_changes_per_second", 0), ("filter_changes_burst", 0),
    ("max_reason_chars", 0), ("max_manifest_bytes", 0), ("command_id_window_seconds", -1),
    ("command_id_window_size", 0), ("audit_replay_max_bytes", 10),
])
def test_flood_limits_are_validated_with_their_key(key, value):
    with pytest.raises(ConfigError) as raised:
        MemoryRelay(limits={key: value})
    assert f"limits.{key}" in str(raised.value) and "must be" in str(raised.value)
