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
from supervisor.wire.bounds import SEQUENCE_RANGE, TAIL_LINES_RANGE
from tests.fuzz_strategies import decodable, huge_numbers, in_range, long_child_ids, long_names, many_ids
from tests.ipc_support import SocketBackedTransport

ERROR_KEYS = {"code", "stage", "target_id", "message", "retryable"}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 300))  # `make fuzz` runs many more


def make_connection(max_request_bytes: int = 4096, manifest_parser=None):
    harness = TreeHarness(
        SupervisorSpec(children=[ChildSpec("w", ChildKind.TASK, factory=ManualTask())]),
        target_id="fuzz", manifest_parser=manifest_parser,
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
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
    | huge_numbers | long_names,
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
    cap = 65536
    harness, protocol, transport = make_connection(max_request_bytes=cap)
    sent = []
    for request in batch:
        line = _line(request)
        protocol.dataReceived(line)
        if len(line) - 1 > cap:  # answered request_too_large, and the connection closes
            break
        sent.append(request)
    too_large = len(sent) < len(batch)
    harness.advance(40)  # commands finish or time out on fake time
    replies = [json.loads(l) for l in transport.value().split(b"\n") if l]
    responses = [r for r in replies if "ok" in r]
    if too_large:
        assert responses.pop()["error"]["code"] == "request_too_large"
    assert len(responses) == len(sent)
    for request, response in zip(sent, responses):
        # a number JSON readers refuse (NaN, beyond 64 bits) makes the whole line invalid
        readable = decodable(request) and isinstance(request["request_id"], str)
        expected = request["request_id"] if readable else "invalid-request"
        assert response["request_id"] == expected
    assert transport.disconnecting == too_large


def _line(request) -> bytes:
    """The request as one line, or the first 100 kB of it (the cap answers longer ones)."""
    return json.dumps(request).encode()[:100_000] + b"\n"


SUBSCRIBE = {"target_id": "fuzz", "session_established": True}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([("events.subscribe", "since_sequence", SEQUENCE_RANGE),
                        ("logs.tail", "since_sequence", SEQUENCE_RANGE),
                        ("logs.tail", "lines", TAIL_LINES_RANGE)]), huge_numbers)
def test_subscription_numbers_are_taken_exactly_when_in_range(case, value):
    method, key, bounds = case
    harness, protocol, transport = make_connection()
    protocol.dataReceived(_line({"request_id": "n", "method": method,
                                 "params": {**SUBSCRIBE, key: value}}))
    reply = json.loads(transport.value().split(b"\n")[0])
    if not decodable(value):
        assert reply["error"]["code"] == "invalid_json", (value, reply)
    elif in_range(value, bounds):
        assert reply["ok"] is True, (value, reply)
    else:
        assert reply["error"]["code"] == "validation_failed", (value, reply)
    assert not transport.disconnecting


def _manifest_parser():
    harness = TreeHarness.from_yaml("ipc: {add_child: {allowed_callables: [supervisor.demo]}}")
    return harness.supervisor._manifest_parser


manifests = st.fixed_dictionaries(
    {"name": long_child_ids | long_names, "kind": st.just("task"),
     "callable": st.just("supervisor.demo:steady_worker")},
    optional={"display_name": long_names, "tags": st.lists(long_names, max_size=3),
              "priority": huge_numbers, "policy": st.fixed_dictionaries(
                  {}, optional={"initial_backoff_ms": huge_numbers, "max_backoff_ms": huge_numbers,
                                "jitter_ratio": huge_numbers}),
              "shutdown": st.fixed_dictionaries({}, optional={"graceful_timeout_ms": huge_numbers}),
              "dependencies": many_ids})


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests, long_names, st.sampled_from(["add_child", "pause_child"]), many_ids)
def test_commands_with_long_names_many_ids_and_huge_numbers_are_answered(manifest, reason, command,
                                                                         ids):
    harness, protocol, transport = make_connection(max_request_bytes=65536,
                                                   manifest_parser=_manifest_parser())
    params = {"command_id": ids[-1] if ids else "c", "correlation_id": None, "target_id": "fuzz",
              "command": command, "reason": reason, "requested_by": "CN=fuzz", "confirmed": True,
              "target": {"child_path": ids[0] if ids else None, "child_manifest": manifest}}
    request = {"request_id": "m", "method": f"command.{command}", "params": params}
    line = _line(request)
    protocol.dataReceived(line)
    harness.advance(40)
    replies = [json.loads(l) for l in transport.value().split(b"\n") if l]
    if len(line) > 65537:
        assert replies[0]["error"]["code"] == "request_too_large"
        return
    check_replies(transport, 1)
    (reply,) = [r for r in replies if "ok" in r]
    if not decodable(request):
        assert reply["error"]["code"] == "invalid_json"
    elif reply["ok"]:
        result = reply["result"]["result"]
        if result["accepted"]:  # only a manifest within every bound starts a child
            assert command == "add_child" and isinstance(manifest["name"], str)
            assert not isinstance(manifest.get("priority", 0), bool)
    assert not transport.disconnecting


@settings(max_examples=max(20, EXAMPLES // 20), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(many_ids)
def test_thousands_of_pipelined_requests_each_get_their_own_reply_in_order(ids):
    harness, protocol, transport = make_connection()
    protocol.dataReceived(b"".join(_line({"request_id": rid, "method": "status", "params": None})
                                   for rid in ids))
    harness.advance(1)
    replies = [json.loads(l) for l in transport.value().split(b"\n") if l]
    assert [r["request_id"] for r in replies] == ids
    assert all(r["ok"] for r in replies)


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
