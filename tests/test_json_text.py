"""JSON texts built for speed are byte for byte what ``json`` writes: :func:`dumps` beside a
``JSONEncoder`` with the same options, and a record's text built from pieces beside the
encoding of its wire shape (in pushes and history lines), for any text and any payload."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.config.target import IpcConfig
from supervisor.ipc.server import IpcServer
from supervisor.testing import TreeHarness
from supervisor.tree.journal import EventRecord, LogRecord, encode_record
from supervisor.tree.spec import SupervisorSpec
from supervisor.wire.ndjson import dumps, encode

#: any text records hold (they are made encodable on entry: no lone surrogates): quotes,
#: backslashes, controls, non-BMP characters
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(
    ['"', "\\", "\n\t\x00\x1f", "ü𝕏✓", "\ufffd", ""])
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64) | st.floats(
    allow_nan=False, allow_infinity=False) | texts
payloads = st.dictionaries(texts, st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12), max_size=6)
instants = st.floats(0, 4_102_444_800, allow_nan=False)  # up to 2100

events = st.builds(EventRecord, texts, st.integers(1, 2**63), texts, texts, texts, texts,
                   st.none() | texts, instants, texts, payloads)
logs = st.builds(LogRecord, texts, st.integers(1, 2**63), st.none() | texts, texts, texts,
                 payloads, instants)


JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
keys = texts | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False,
                                                                      allow_infinity=False)
values = st.recursive(scalars | st.floats(), lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys, inner, max_size=4), max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(values)
def test_dumps_writes_what_a_json_encoder_with_its_options_writes(value):
    try:
        expected = JSON_ENCODER.encode(value)
    except ValueError:
        with pytest.raises(ValueError):
            dumps(value)
        return
    assert dumps(value) == expected


def test_dumps_refuses_what_json_does_not_have():
    for value in (math.nan, math.inf, [1, {"x": -math.inf}]):
        with pytest.raises(ValueError):
            dumps(value)
    for value in (object(), {(1, 2): 1}, b"bytes"):
        with pytest.raises(TypeError):
            dumps(value)


class _Supervisor:
    """All an IpcServer reads of its supervisor to encode pushes: nothing."""


@settings(max_examples=300, deadline=None)
@given(st.one_of(events, logs), texts)
def test_the_built_text_is_the_generic_encoding(record, instance_id):
    assert record.json_text() == dumps(record.to_json())
    assert record.json_text() is record.json_text(), "built once"
    history_line = record.to_json() | {"instance_id": instance_id}
    assert encode_record(record, instance_id) == encode(history_line)


@settings(max_examples=100, deadline=None)
@given(st.one_of(events, logs), texts)
def test_a_push_line_is_the_generic_encoding_of_the_push(record, target_id):
    server = IpcServer(_Supervisor(), IpcConfig(enabled=True, target_id=target_id, path="t.sock"),
                       None, clock=None)
    kind = "event" if isinstance(record, EventRecord) else "log"
    push = {"type": kind, "target_id": target_id, kind: record.to_json()}
    assert server.push_line(kind, record) == encode(push)


def test_records_that_differ_only_in_their_cache_are_equal():
    record = LogRecord("t", 1, None, "info", "m", {}, 5.0)
    record.json_text()
    assert record == LogRecord("t", 1, None, "info", "m", {}, 5.0)
    assert "_text" not in repr(record)
    assert encode(record.to_json()) == record.json_text().encode() + b"\n"


def test_an_event_payload_with_lone_surrogates_is_made_encodable_on_entry():
    harness = TreeHarness(SupervisorSpec(children=[]), target_id="t").start()
    given = {"reason\udcff": ["exit \ud800", 1], "plain": "ascii"}
    record = harness.supervisor.tree.emit("child_failed", "/root", None, "", given)
    assert record.payload == {"reason\ufffd": ["exit \ufffd", 1], "plain": "ascii"}
    assert record.json_text() == dumps(record.to_json())
    record.json_text().encode("utf-8")  # a push or history line of it can be written
    clean = {"reason": "exit 3"}
    assert harness.supervisor.tree.emit("child_failed", "/root", None, "", clean).payload is clean
