"""First end-to-end path: registration → session over mTLS → state → live event."""

import pytest_twisted

from relay_helpers import eventually


@pytest_twisted.ensureDeferred
async def test_end_to_end_state_and_event(relay):
    relay.start()
    target = relay.target()
    ack = await relay.register(target)
    assert ack == {"ok": True, "target_id": target.target_id, "status": "registered",
                   "retryable": False}
    ws = await relay.session()
    target_list = await ws.hello()
    assert [t["target_id"] for t in target_list["targets"]] == [target.target_id]
    state = await ws.next("state")
    assert state["state"]["target"]["target_id"] == target.target_id
    await eventually(lambda: "logs.tail" in target.methods())
    event = target.emit_event("child_failed", severity="error")
    got = await ws.next("event")
    assert got == {"type": "event", "target_id": target.target_id, "event": event}
