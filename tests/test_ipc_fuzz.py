"""Hypothesis against the IPC request parser: every input gets one well-formed response line
or a clean close, and the server keeps serving."""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from supervisor.config.target import IpcConfig
from supervisor.ipc.server import IpcServer
from supervisor.testing import ManualTask, TreeHarness
from supervisor.tree.spec import ChildKind, ChildSpec, SupervisorSpec
from tests.ipc_support import SocketBackedTransport

ERROR_KEYS = {"code", "stage", "target_id", "message", "retryable"}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 300))  # `make fuzz` runs many more


def make_connection(max_request_bytes: int = 4096):
    harness = TreeHarness(
        SupervisorSpec(children=[ChildSpec("w", ChildKind.TASK, factory=ManualTask())]),
        target_id="fuzz",
    ).start()
    config = IpcConfig(enabled=True, target_id="fuzz", path="/unused", max_request_bytes=max_request_bytes)
    server = IpcServer(harness.supervisor, config, None, harness.clock)
    protocol = server.buildProtocol(None)
    transport = SocketBackedTransport()
    protocol.makeConnection(transport)
    return harness, protocol, transport


def check_replies(transport: StringTransport, max_replies: int) -> None:
    data = transport.value()
    lines = data.split(b"\n")
    assert lines[-1] == b"", "every reply ends with a newline"
    for raw in lines[:-1]:
        reply = json.loads(raw)
        assert isinstance(reply, dict)
        if "request_id" in reply:
            assert isinstance(reply["request_id"], str)
            assert reply["ok"] in (True, False)
            if reply["ok"] is False:
                assert set(reply["error"]) == ERROR_KEYS
    assert len(lines) - 1 <= max_replies


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
methods = st.sampled_from(["hello", "state", "events.subscribe", "logs.tail", "command.pause_child",
                           "command.add_child", "restart", ""]) | st.text(max_size=20)
requests = st.fixed_dictionaries(
    {"request_id": st.text(max_size=10) | json_values, "method": methods, "params": json_values}
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_never_crash_the_parser(data):
    harness, protocol, transport = make_connection()
    protocol.dataReceived(data + b"\n")
    harness.advance(1)
    check_replies(transport, data.count(b"\n") + 1)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=1, max_size=4))
def test_random_json_requests_each_get_exactly_one_reply(batch):
    harness, protocol, transport = make_connection()
    for request in batch:
        protocol.dataReceived(json.dumps(request).encode() + b"\n")
    harness.advance(40)  # commands finish or time out on fake time
    replies = [json.loads(l) for l in transport.value().split(b"\n") if l]
    responses = [r for r in replies if "ok" in r]
    assert len(responses) == len(batch)
    for request, response in zip(batch, responses):
        expected = request["request_id"] if isinstance(request["request_id"], str) else "invalid-request"
        assert response["request_id"] == expected
    assert not transport.disconnecting


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=2000))
def test_deep_nesting_and_huge_numbers_are_invalid_json_not_crashes(depth):
    harness, protocol, transport = make_connection(max_request_bytes=65536)
    protocol.dataReceived(b"[" * depth + b"]" * depth + b"\n")
    protocol.dataReceived(b'{"request_id": "n", "method": "hello", "params": ' + b"9" * 5000 + b"}\n")
    check_replies(transport, 2)
    assert not transport.disconnecting


def test_an_oversized_line_gets_one_error_and_a_close():
    harness, protocol, transport = make_connection(max_request_bytes=1024)
    protocol.dataReceived(b"x" * 5000)
    reply = json.loads(transport.value().splitlines()[0])
    assert reply["error"]["code"] == "request_too_large"
    assert transport.disconnecting
