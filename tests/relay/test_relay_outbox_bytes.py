"""A session outbox bounded in bytes as well as in messages (fakes only: a list transport)."""

from __future__ import annotations

import pytest

from relay_helpers import make_config
from relay_memory import MemoryRelay
from supervisor.config._common import ConfigError
from supervisor.relay.outbox import Outbox


class Box:
    """An outbox writing into ``sent``; overflows are recorded in ``overflowed``."""

    def __init__(self, byte_limit: int, limit: int = 1000) -> None:
        self.sent: list[str] = []
        self.overflowed: list[bool] = []
        self.outbox = Outbox(self.sent.append, limit,
                             render_dropped=lambda t: f"dropped:{t}:{self.outbox.dropped[t]}",
                             on_overflow=lambda: self.overflowed.append(True),
                             byte_limit=byte_limit)


def test_over_the_byte_limit_the_oldest_logs_go_and_are_counted_for_the_client():
    box = Box(byte_limit=1000)
    out = box.outbox
    out.pauseProducing()
    out.put("state", "t", "s" * 100)
    for i in range(5):
        out.put("log", "t", str(i) * 300)  # 100 + 5 × 300 bytes: two logs too many
    assert out.pending_bytes == 100 + 3 * 300 <= 1000
    assert out.dropped == {"t": [0, 2]}
    out.resumeProducing()
    assert box.sent == ["s" * 100, "2" * 300, "3" * 300, "dropped:t:[0, 2]", "4" * 300]
    assert out.pending_bytes == 0 and box.overflowed == []


def test_only_undroppable_messages_over_the_byte_limit_close_the_session():
    box = Box(byte_limit=1000)
    out = box.outbox
    out.pauseProducing()
    out.put("state", "t", "s" * 600)
    out.put("event", "t", "e" * 300)
    out.put("command_result", "t", "r" * 300)  # over: the event goes first
    assert out.dropped == {"t": [1, 0]} and box.overflowed == []
    out.put("audit_event", "t", "a" * 300)  # still over, nothing droppable left
    assert box.overflowed == [True]
    assert out.pending == 0 and out.pending_bytes == 0
    out.put("state", "t", "late")  # a closed outbox takes nothing
    out.resumeProducing()
    assert box.sent == []


def test_one_message_larger_than_the_byte_limit_waits_alone_and_is_delivered():
    box = Box(byte_limit=1000)
    out = box.outbox
    out.pauseProducing()
    out.put("state", "t", "s" * 5000)  # alone: it waits, whatever its size
    assert out.pending == 1 and box.overflowed == []
    out.put("log", "t", "l" * 2000)  # behind it, a log larger than the limit is dropped
    assert out.dropped == {"t": [0, 1]} and out.pending_bytes == 5000
    out.resumeProducing()
    assert box.sent == ["s" * 5000, "dropped:t:[0, 1]"]


def test_a_large_undroppable_message_behind_others_closes_the_session():
    box = Box(byte_limit=1000)
    out = box.outbox
    out.pauseProducing()
    out.put("log", "t", "l" * 100)
    out.put("command_result", "t", "r" * 100)
    out.put("state", "t", "s" * 5000)  # the log goes, and two messages are still over
    assert out.dropped == {"t": [0, 1]}
    assert box.overflowed == [True] and out.pending_bytes == 0


def test_a_replaced_target_list_counts_its_new_size():
    box = Box(byte_limit=1000)
    out = box.outbox
    out.pauseProducing()
    out.put("target_list", None, "a" * 100)
    out.put("log", "t", "l" * 400)
    out.put("target_list", None, "b" * 500)  # in place of the first: 500 + 400
    assert out.pending_bytes == 900 and out.dropped == {}
    out.put("target_list", None, "c" * 700)  # 700 + 400: the log goes
    assert out.pending_bytes == 700 and out.dropped == {"t": [0, 1]}
    out.resumeProducing()
    assert box.sent == ["c" * 700, "dropped:t:[0, 1]"]


def test_bytes_are_counted_as_utf8():
    box = Box(byte_limit=1000)
    out = box.outbox
    out.pauseProducing()
    out.put("log", "t", "é" * 300)  # 600 bytes
    assert out.pending_bytes == 600
    out.put("log", "t", "é" * 300)  # 1,200 bytes: the first goes
    assert out.pending_bytes == 600 and out.dropped == {"t": [0, 1]}


def test_the_message_count_limit_still_applies_below_the_byte_limit():
    box = Box(byte_limit=1 << 20, limit=3)
    out = box.outbox
    out.pauseProducing()
    for i in range(5):
        out.put("event", "t", f"e{i}")
    assert out.dropped == {"t": [2, 0]} and out.pending_bytes == 6


def test_session_queue_bytes_is_configured_and_validated(tmp_path, pki):
    assert make_config(str(tmp_path), pki).limits.session_queue_bytes == 8 * 1024 * 1024
    config = make_config(str(tmp_path), pki, limits={"session_queue_bytes": 1 << 20})
    assert config.limits.session_queue_bytes == 1 << 20
    for bad, rule in ((1000, "must be >= 65536"), ("lots", "must be an integer")):
        with pytest.raises(ConfigError) as e:
            make_config(str(tmp_path), pki, limits={"session_queue_bytes": bad})
        assert e.value.key == "limits.session_queue_bytes" and rule in str(e.value)


def test_sessions_get_the_configured_byte_limit():
    relay = MemoryRelay(limits={"session_queue_bytes": 65536})
    session, _ = relay.session()
    session.outbox.pauseProducing()
    for _ in range(20):
        session.outbox.put("log", "t", "x" * 8000)
    assert session.outbox.pending_bytes == 8 * 8000  # 8 fit in 65,536 bytes
    assert session.outbox.dropped == {"t": [0, 12]}
