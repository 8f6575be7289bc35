"""Every number read from a wire is bounded: one table per reader (supervisor.wire.bounds)."""

from __future__ import annotations

import json

import pytest

from supervisor.config.target import IpcConfig
from supervisor.ipc.server import IpcServer
from supervisor.testing import ManualTask, TreeHarness
from supervisor.tree.spec import ChildKind, ChildSpec, SupervisorSpec
from supervisor.wire import bounds
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import decode
from supervisor.wire.registration import Registration, RegistrationRefused
from tests.ipc_support import SocketBackedTransport, contract_registration_payload

HUGE = int("9" * 401)


# ------------------------------------------------------------------ decoders

@pytest.mark.parametrize("literal, ok", [
    (b"0", True),
    (b"-1", True),
    (b"18446744073709551615", True),
    (b"-18446744073709551615", True),
    (b"18446744073709551616", False),
    (b"-18446744073709551616", False),
    (b"1" + b"0" * 400, False),
    (b"-" + b"9" * 4000, False),
    (b"1e999", False),
    (b"-1e999", False),
    (b"NaN", False),
    (b"Infinity", False),
    (b"1.5", True),
])
def test_the_line_decoder_refuses_integers_beyond_64_bits_and_non_finite_numbers(literal, ok):
    line = b'{"n": ' + literal + b"}"
    if ok:
        assert decode(line)["n"] == json.loads(literal)
    else:
        with pytest.raises(WireError) as e:
            decode(line)
        assert e.value.code == "invalid_json"


# ------------------------------------------------------------------ registration (§2)

def _registration(**changes):
    payload = contract_registration_payload()
    payload.update(changes)
    return payload


def _timeout(value):
    commands = [{**c, "timeout_seconds": value} for c in contract_registration_payload()
                ["supported_commands"]]
    return _registration(supported_commands=commands)


@pytest.mark.parametrize("payload, code", [
    (_timeout(HUGE), "invalid_registration_json"),
    (_timeout(2**53), "invalid_registration_json"),
    (_timeout(True), "invalid_registration_json"),
    (_timeout(30.0), "invalid_registration_json"),
    (_timeout(float("nan")), "invalid_registration_json"),
    (_timeout(-HUGE), "invalid_registration_json"),
    (_timeout(0), "unsupported_command_schema"),
    (_timeout(-1), "unsupported_command_schema"),
    (_timeout(86_401), "unsupported_command_schema"),
    (_timeout(2**53 - 1), "unsupported_command_schema"),
    (_registration(lease_seconds=HUGE), "invalid_registration_json"),
    (_registration(lease_seconds=False), "invalid_registration_json"),
    (_registration(lease_seconds=float("inf")), "invalid_registration_json"),
    (_registration(lease_seconds=0), "invalid_lease_seconds"),
    (_registration(lease_seconds=86_401), "invalid_lease_seconds"),
    (_registration(lease_seconds=10**15), "invalid_lease_seconds"),
])
def test_registration_numbers_out_of_range_are_refused_with_the_contract_codes(payload, code):
    with pytest.raises(RegistrationRefused) as e:
        Registration.from_json(payload)
    assert e.value.code == code


@pytest.mark.parametrize("timeout, lease", [(1, 1), (86_400, 86_400), (30, 30)])
def test_registration_numbers_at_the_bounds_are_accepted(timeout, lease):
    registration = Registration.from_json({**_timeout(timeout), "lease_seconds": lease})
    assert {c.timeout_seconds for c in registration.supported_commands} == {timeout}
    assert registration.lease_seconds == lease


# ------------------------------------------------------------------ target IPC (§1)

def _connection():
    harness = TreeHarness(
        SupervisorSpec(children=[ChildSpec("w", ChildKind.TASK, factory=ManualTask())]),
        target_id="bounds").start()
    server = IpcServer(harness.supervisor, IpcConfig(enabled=True, target_id="bounds",
                                                     path="/unused"), None, harness.clock)
    protocol = server.buildProtocol(None)
    transport = SocketBackedTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def _answer(method, params):
    protocol, transport = _connection()
    protocol.dataReceived(json.dumps({"request_id": "r", "method": method,
                                      "params": params}).encode() + b"\n")
    return json.loads(transport.value().split(b"\n")[0])


SUBSCRIBE = {"target_id": "bounds", "session_established": True}


@pytest.mark.parametrize("method, key, value, ok", [
    ("events.subscribe", "since_sequence", 0, True),
    ("events.subscribe", "since_sequence", 2**53 - 1, True),
    ("events.subscribe", "since_sequence", 2**53, False),
    ("events.subscribe", "since_sequence", 2**63 - 1, False),
    ("events.subscribe", "since_sequence", -1, False),
    ("events.subscribe", "since_sequence", True, False),
    ("events.subscribe", "since_sequence", 1.5, False),
    ("logs.tail", "since_sequence", 2**60, False),
    ("logs.tail", "lines", 0, True),
    ("logs.tail", "lines", 1_000_000, True),
    ("logs.tail", "lines", 1_000_001, False),
    ("logs.tail", "lines", 2**63 - 1, False),
    ("logs.tail", "lines", False, False),
    ("logs.tail", "lines", -5, False),
])
def test_ipc_subscription_numbers_are_bounded(method, key, value, ok):
    answer = _answer(method, {**SUBSCRIBE, key: value})
    if ok:
        assert answer["ok"] is True, answer
    else:
        assert answer["ok"] is False and answer["error"]["code"] == "validation_failed", answer
        assert key in answer["error"]["message"]


def test_an_ipc_integer_beyond_64_bits_is_invalid_json_and_the_connection_lives():
    protocol, transport = _connection()
    protocol.dataReceived(b'{"request_id": "r", "method": "logs.tail", "params": {"lines": '
                          + b"9" * 401 + b"}}\n")
    answer = json.loads(transport.value().split(b"\n")[0])
    assert answer["error"]["code"] == "invalid_json"
    assert not transport.disconnecting


@pytest.mark.parametrize("manifest, key", [
    ({"name": "x", "kind": "task", "callable": "supervisor.demo:steady_worker",
      "policy": {"initial_backoff_ms": 1, "max_backoff_ms": HUGE}}, "max_backoff_ms"),
    ({"name": "x", "kind": "task", "callable": "supervisor.demo:steady_worker",
      "shutdown": {"graceful_timeout_ms": 10**20}}, "graceful_timeout_ms"),
    ({"name": "x", "kind": "process", "command": ["/bin/true"], "startsecs": float("nan")},
     "startsecs"),
    ({"name": "x", "kind": "process", "command": ["/bin/true"], "startsecs": HUGE},
     "startsecs"),
    ({"name": "x", "kind": "task", "callable": "supervisor.demo:steady_worker",
      "policy": {"jitter_ratio": float("nan")}}, "jitter_ratio"),
    ({"name": "x", "kind": "task", "callable": "supervisor.demo:steady_worker",
      "priority": True}, "priority"),
])
def test_add_child_manifest_numbers_are_bounded(manifest, key):
    harness = TreeHarness.from_yaml(
        "ipc: {add_child: {allowed_commands: [/bin/true], allowed_callables: [supervisor.demo]}}"
    ).start()
    outcome = harness.command("add_child", None, child_manifest=manifest)
    assert outcome.status == "failed" and outcome.error.code == "invalid_manifest", outcome
    assert key in outcome.error.message


def test_bounds_are_consistent():
    for name in dir(bounds):
        if name.endswith("_RANGE"):
            low, high = getattr(bounds, name)
            assert low <= high <= bounds.WIRE_INT_RANGE[1], name
