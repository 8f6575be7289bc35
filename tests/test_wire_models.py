"""The wire models against the contract examples: round trips, tolerated and refused shapes."""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import attrs
import pytest

from supervisor.config.target import IpcConfig, RegistrationConfig
from supervisor.ipc.registration import registration_payload
from supervisor.wire.commands import CommandResult
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import decode, dumps, encode
from supervisor.wire.registration import (MAX_DISPLAY_NAME_CHARS, CommandSpec, Registration,
                                         RegistrationRefused)
from tests.ipc_support import contract_registration_payload

EXAMPLES = pathlib.Path(__file__).parent / "contract_examples"


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


# JSON text -----------------------------------------------------------------------------------

def test_one_encoding_compact_utf8_and_no_nan():
    assert dumps({"a": [1, 2.5], "名": "é"}) == '{"a":[1,2.5],"名":"é"}'
    assert encode({"名": None}) == '{"名":null}\n'.encode()
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            dumps({"x": bad})


@pytest.mark.parametrize("line", [b'{"x": NaN}', b'{"x": -Infinity}', b'{"x": 1e999}',
                                  b'[-1.5e400]', b"", b"  ", b"\xff"])
def test_decode_refuses_what_cannot_be_encoded_again(line):
    with pytest.raises(WireError) as e:
        decode(line)
    assert e.value.code == "invalid_json"


def test_decode_can_replace_lone_surrogates_so_everything_encodes_again():
    line = b'{"m": "a\\ud800b", "\\udfffk": ["\\ud83d\\ude00", "\\udcff"], "n": 1}'
    kept = decode(line)
    assert kept["m"] == "a\ud800b"
    with pytest.raises(UnicodeEncodeError):
        encode(kept)
    replaced = decode(line, lone_surrogates="replace")
    assert replaced == {"m": "a\ufffdb", "\ufffdk": ["\U0001F600", "\ufffd"], "n": 1}
    assert decode(encode(replaced).rstrip(b"\n")) == replaced


def test_decode_keeps_ordinary_numbers():
    assert decode(b'{"a": 1e300, "b": -0.5, "c": 12345678901234567890}') == {
        "a": 1e300, "b": -0.5, "c": 12345678901234567890}


# command results -----------------------------------------------------------------------------

RESULT_EXAMPLES = [("ipc.command.response.json", lambda e: e["result"]),
                   ("ipc.command.response-failed.json", lambda e: e["result"]),
                   ("session.command_result.json", lambda e: e)]


@pytest.mark.parametrize("name, message_of", RESULT_EXAMPLES)
def test_command_results_round_trip(name, message_of):
    message = message_of(example(name))
    result = CommandResult.from_json(message["result"])
    assert result.to_json() == message["result"]
    assert result.to_message() == message
    assert CommandResult.from_json(message["result"], fallback=result) == result


def test_the_ipc_body_and_the_session_message_are_one_shape():
    ipc = example("ipc.command.response.json")["result"]
    assert CommandResult.from_json(ipc["result"]).to_message() == \
        example("session.command_result.json")


def test_a_failed_result_carries_its_error_and_is_not_a_success():
    result = CommandResult.from_json(
        example("ipc.command.response-failed.json")["result"]["result"])
    assert result.error.to_json() == WireError("unknown_child", "command_execute",
                                               "no child at /root/nope", "payments-worker-a",
                                               False).to_json()
    assert not result.succeeded
    assert CommandResult.from_json(example("session.command_result.json")["result"]).succeeded


def good_result() -> dict[str, Any]:
    return copy.deepcopy(example("session.command_result.json")["result"])


@pytest.mark.parametrize("change", [
    {"command_id": None}, {"target_id": 7}, {"requested_by": []}, {"completed_at": 1.5},
    {"correlation_id": 3}, {"accepted": "yes"}, {"status": "done"}, {"error": "oops"},
    {"state_delta": [1]},
])
def test_strict_reading_refuses_wrong_types(change):
    with pytest.raises(WireError) as e:
        CommandResult.from_json({**good_result(), **change})
    assert e.value.code == "invalid_command_result"
    assert e.value.target_id == (None if "target_id" in change else "payments-worker-a")


@pytest.mark.parametrize("key", sorted(good_result()))
def test_strict_reading_refuses_a_missing_key_or_a_non_object(key):
    body = good_result()
    del body[key]
    with pytest.raises(WireError):
        CommandResult.from_json(body)
    with pytest.raises(WireError):
        CommandResult.from_json([body])


def fallback() -> CommandResult:
    return CommandResult(command_id="cmd-7f3a", correlation_id="cmd-7f3a",
                         target_id="payments-worker-a", accepted=False, status="failed",
                         requested_by="CN=relay says", error=None, state_delta=None,
                         completed_at="2026-11-28T13:05:16.000000Z")


def test_a_relay_fills_what_a_target_left_out_from_its_own_result():
    answer = {"accepted": True, "status": "completed"}
    assert CommandResult.from_json(answer, fallback()) == attrs.evolve(
        fallback(), accepted=True, status="completed")


def test_a_relay_replaces_wrong_types_and_keeps_what_is_well_typed():
    answer = {**good_result(), "requested_by": 42, "state_delta": "big", "completed_at": None,
              "extra": "not carried on"}
    result = CommandResult.from_json(answer, fallback())
    assert result.requested_by == "CN=relay says" and result.state_delta is None
    assert result.completed_at == "2026-11-28T13:05:16.000000Z"
    assert result.command_id == "cmd-7f3a" and result.status == "completed" and result.accepted
    assert "extra" not in result.to_json()
    assert set(result.to_json()) == set(good_result())


@pytest.mark.parametrize("status, accepted, expected", [
    ("done", True, ("failed", True)),
    ("done", None, ("failed", False)),
    ("completed", None, ("completed", True)),
    ("accepted", "yes", ("accepted", True)),
    ("rejected", None, ("rejected", False)),
    ("failed", True, ("failed", True)),
])
def test_a_relay_reads_an_unknown_status_as_failed_and_derives_accepted(status, accepted,
                                                                         expected):
    answer = {**good_result(), "status": status, "accepted": accepted}
    result = CommandResult.from_json(answer, fallback())
    assert (result.status, result.accepted) == expected
    assert result.succeeded is (expected == ("completed", True)
                                or expected == ("accepted", True))


def test_a_partial_error_object_becomes_a_full_contract_error():
    answer = {**good_result(), "accepted": False, "status": "failed",
              "error": {"code": "illegal_transition"}}
    error = CommandResult.from_json(answer, fallback()).to_json()["error"]
    assert error == {"code": "illegal_transition", "stage": "unknown", "target_id": None,
                     "message": "", "retryable": False}


# registration --------------------------------------------------------------------------------

def payload(**changes: Any) -> dict[str, Any]:
    body = example("registration.request.json")
    body.update(changes)
    return body


def refused(body: Any, policy: Any = None) -> str:
    with pytest.raises(RegistrationRefused) as e:
        Registration.from_json(body, policy)
    assert e.value.retryable is False
    return e.value.code


def test_registration_round_trips():
    body = payload()
    registration = Registration.from_json(body)
    assert registration.to_json() == body
    assert registration.command("pause_child") == CommandSpec("pause_child", False, 30)
    assert registration.command("reboot") is None
    hello = example("ipc.hello.response.json")["result"]["registration"]
    assert Registration.from_json(hello).to_json() == hello


def test_the_target_sends_the_contract_example():
    config = IpcConfig(enabled=True, target_id="payments-worker-a",
                       path="/tmp/supervisor-demo/payments-worker-a.sock",
                       command_timeout_seconds=30,
                       registration=RegistrationConfig(enabled=True,
                                                       relay_registration_path="/tmp/r.sock",
                                                       display_name="payments worker a",
                                                       lease_seconds=30))
    assert registration_payload(config) == contract_registration_payload()


def test_a_display_name_may_have_up_to_256_characters():
    assert MAX_DISPLAY_NAME_CHARS == 256
    assert Registration.from_json(payload(display_name="n" * 256)).display_name == "n" * 256
    with pytest.raises(RegistrationRefused) as refused_long:
        Registration.from_json(payload(display_name="n" * 257))
    assert "at most 256 chars" in refused_long.value.message
    assert refused_long.value.retryable is False


def test_a_blank_display_name_is_the_target_id():
    assert Registration.from_json(payload(display_name=None)).display_name == "payments-worker-a"
    assert Registration.from_json(payload(display_name="")).display_name == "payments-worker-a"


@pytest.mark.parametrize("body", [
    [1, 2, 3],
    "text",
    payload(extra=1),
    {k: v for k, v in payload().items() if k != "ipc_path"},
    payload(lease_seconds="30"),
    payload(lease_seconds=True),
    payload(target_id=7),
    payload(target_id="x" * 257),
    payload(target_id="\ud800"),
    payload(display_name=5),
    payload(display_name="n" * 257),
    payload(ipc_path="/tmp/a\x00b"),
    payload(supported_commands={"name": "pause_child"}),
    payload(supported_commands=[{"name": "pause_child"}]),
    payload(supported_commands=[{"name": "pause_child", "idempotent": "no",
                                 "timeout_seconds": 3}]),
    payload(supported_commands=[{"name": "pause_child", "idempotent": False,
                                 "timeout_seconds": 3.5}]),
    payload(supported_commands=[{"name": "x", "idempotent": False, "timeout_seconds": 1}] * 65),
])
def test_malformed_registrations(body):
    assert refused(body) == "invalid_registration_json"


@pytest.mark.parametrize("body, code", [
    (payload(target_id=" "), "empty_target_id"),
    (payload(target_id="", ipc_path="rel.sock"), "empty_target_id"),
    (payload(ipc_path="rel.sock", lease_seconds=0), "relative_ipc_path"),
    (payload(lease_seconds=0), "invalid_lease_seconds"),
    (payload(lease_seconds=-1), "invalid_lease_seconds"),
    (payload(lease_seconds=None), "invalid_lease_seconds"),
    (payload(lease_seconds=0, supported_commands=[
        {"name": " ", "idempotent": False, "timeout_seconds": 1}]), "invalid_lease_seconds"),
    (payload(supported_commands=[{"name": " ", "idempotent": False, "timeout_seconds": 1}]),
     "unsupported_command_schema"),
    (payload(supported_commands=[{"name": "a", "idempotent": False, "timeout_seconds": 0}]),
     "unsupported_command_schema"),
])
def test_the_contract_checks_in_order(body, code):
    assert refused(body) == code


class RecordingPolicy:
    """A reader's policy that records what it was asked and refuses on request."""

    def __init__(self, refuse: str | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refuse = refuse

    def ipc_path(self, path: str) -> str:
        self.calls.append(("ipc_path", path))
        if self.refuse == "ipc_path":
            raise RegistrationRefused("ipc_path_not_allowed", "no")
        return "/resolved/x.sock"

    def lease_seconds(self, requested: int | None) -> int:
        self.calls.append(("lease_seconds", requested))
        if self.refuse == "lease_seconds":
            raise RegistrationRefused("invalid_lease_seconds", "no")
        return 99


def test_a_policy_decides_path_and_lease_at_their_place_in_the_order():
    policy = RecordingPolicy()
    registration = Registration.from_json(payload(lease_seconds=None), policy)
    assert (registration.ipc_path, registration.lease_seconds) == ("/resolved/x.sock", 99)
    assert policy.calls == [("ipc_path", "/tmp/supervisor-demo/payments-worker-a.sock"),
                            ("lease_seconds", None)]
    # the policy's lease rule replaces the contract's: 0 may be granted as something else
    assert Registration.from_json(payload(lease_seconds=0), RecordingPolicy()).lease_seconds == 99
    # before the policy: the shape, blank ids and relative paths
    for body, code in [(payload(extra=1), "invalid_registration_json"),
                       (payload(target_id=""), "empty_target_id"),
                       (payload(ipc_path="x.sock"), "relative_ipc_path")]:
        policy = RecordingPolicy()
        assert refused(body, policy) == code and policy.calls == []
    # the path before the lease, the lease before the commands
    blank = [{"name": "", "idempotent": False, "timeout_seconds": 0}]
    policy = RecordingPolicy("ipc_path")
    assert refused(payload(supported_commands=blank), policy) == "ipc_path_not_allowed"
    assert [name for name, _ in policy.calls] == ["ipc_path"]
    policy = RecordingPolicy("lease_seconds")
    assert refused(payload(supported_commands=blank), policy) == "invalid_lease_seconds"
    assert refused(payload(supported_commands=blank), RecordingPolicy()) == \
        "unsupported_command_schema"


def test_a_refusal_is_the_contract_ack():
    ack = RegistrationRefused("ipc_path_conflict", "ipc path is already used by target "
                              "orders-worker-b").to_ack()
    assert ack == example("registration.ack-error.json")
