"""Target-list storms on the relay's logic in memory: a queued ``target_list`` is replaced by
a newer one, and a session gets at most one every ``TARGET_LIST_INTERVAL_SECONDS``."""

from __future__ import annotations

import json

from relay_memory import MemoryRelay
from supervisor.relay.hub import TARGET_LIST_INTERVAL_SECONDS
from supervisor.relay.outbox import Outbox


def _outbox(sent: list[str]) -> Outbox:
    return Outbox(sent.append, 16, render_dropped=lambda target_id: "dropped",
                  on_overflow=lambda: None, byte_limit=1 << 20)


def test_a_newer_target_list_replaces_a_queued_one_in_its_place():
    sent: list[str] = []
    outbox = _outbox(sent)
    outbox.pauseProducing()
    outbox.put("target_list", None, "list-1")
    outbox.put("state", "t1", "state-t1")
    outbox.put("target_list", None, "list-2")
    outbox.put("target_list", None, "list-3")
    assert outbox.pending == 2 and outbox.superseded == 2
    outbox.resumeProducing()
    assert sent == ["list-3", "state-t1"]
    outbox.pauseProducing()  # once written, the next list queues again
    outbox.put("target_list", None, "list-4")
    outbox.put("target_list", None, "list-5")
    outbox.resumeProducing()
    assert sent[2:] == ["list-5"] and outbox.superseded == 3


def test_a_reading_session_gets_every_target_list_written_through():
    sent: list[str] = []
    outbox = _outbox(sent)
    outbox.put("target_list", None, "list-1")
    outbox.put("target_list", None, "list-2")
    assert sent == ["list-1", "list-2"] and outbox.superseded == 0


def _timed_lists(relay, ws) -> list[tuple[float, dict]]:
    """Record when each target_list reaches the transport."""
    times: list[tuple[float, dict]] = []
    send = ws.send_text

    def recording(text: str) -> None:
        message = json.loads(text)
        if message["type"] == "target_list":
            times.append((relay.clock.seconds(), message))
        send(text)

    ws.send_text = recording
    session = ws.session
    session.outbox._send = recording  # the outbox holds the bound method it was given
    return times


def test_a_registration_storm_sends_one_session_a_bounded_number_of_target_lists():
    relay = MemoryRelay()
    session, ws = relay.session()
    times = _timed_lists(relay, ws)
    count, step = 2000, 0.001  # 2,000 registrations over two seconds
    for index in range(count):
        relay.registry.register(relay.registration(relay.target(f"t{index:04d}")),
                                "unix_uid:1000")
        relay.settle(step)
    relay.settle(2 * TARGET_LIST_INTERVAL_SECONDS)  # the last one, then the links' changes
    gaps = [later - earlier for (earlier, _), (later, _) in zip(times, times[1:])]
    assert all(gap >= TARGET_LIST_INTERVAL_SECONDS - 1e-9 for gap in gaps), gaps
    assert len(times) <= count * step / TARGET_LIST_INTERVAL_SECONDS + 3
    final = times[-1][1]["targets"]
    assert [t["target_id"] for t in final] == [f"t{i:04d}" for i in range(count)]
    assert {t["connection_state"] for t in final} == {"connected"}
    assert len(ws.of_type("state")) == count  # every target bound once, after its list
    assert session.outbox.superseded == 0  # a reading session: nothing waited


def test_a_paused_session_holds_at_most_one_target_list():
    relay = MemoryRelay()
    session, ws = relay.session()
    before = len(ws.of_type("target_list"))
    session.outbox.pauseProducing()  # the browser stops reading
    for index in range(200):
        relay.register(relay.target(f"t{index:03d}"), lease=120)  # outlives the test
        relay.settle(TARGET_LIST_INTERVAL_SECONDS)  # each one is due for the session
    queued = [entry for entry in session.outbox._queue if entry[0] == "target_list"]
    assert len(queued) == 1
    assert session.outbox.superseded >= 199
    session.outbox.resumeProducing()
    lists = ws.of_type("target_list")[before:]
    assert len(lists) == 1
    assert [t["target_id"] for t in lists[0]["targets"]] == [f"t{i:03d}" for i in range(200)]
    assert not ws.close_code and len(ws.of_type("state")) == 200
    types = ws.types()
    assert types.index("target_list", 1) < types.index("state")  # announced before its state
