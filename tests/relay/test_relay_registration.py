"""Registration (§2) over the real Unix socket: every failure code, upsert, lease, limits."""

from __future__ import annotations

import json
import os
import stat

import pytest
import pytest_twisted

from relay_faketarget import fixture, registration_payload
from relay_helpers import eventually, register, register_as_nobody, register_raw


def payload(relay, target_id="payments-worker-a", path=None, **changes):
    body = registration_payload(target_id, path or os.path.join(relay.sockdir, f"{target_id}.sock"))
    body.update(changes)
    return body


def error_code(ack):
    assert ack["ok"] is False, ack
    assert set(ack) == {"ok", "error", "retryable"}
    assert set(ack["error"]) == {"code", "message"}
    return ack["error"]["code"]


@pytest_twisted.ensureDeferred
async def test_ack_shapes_match_contract_examples(relay):
    relay.start()
    ok = await register(relay.registration_path, payload(relay))
    assert set(ok) == set(fixture("registration.ack-ok.json"))
    assert ok == {"ok": True, "target_id": "payments-worker-a", "status": "registered",
                  "retryable": False}
    conflict = await register(relay.registration_path, payload(relay, "orders-worker-b",
                                                               path=payload(relay)["ipc_path"]))
    example = fixture("registration.ack-error.json")
    assert set(conflict) == set(example) and set(conflict["error"]) == set(example["error"])
    assert conflict["error"]["code"] == "ipc_path_conflict"
    assert "payments-worker-a" in conflict["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_socket_mode_is_in_force_and_registration_opens_no_ipc(relay):
    relay.start(registration={"permissions": "0660"})
    mode = stat.S_IMODE(os.stat(relay.registration_path).st_mode)
    assert mode == 0o660
    target = relay.target()
    assert (await relay.register(target))["ok"] is True
    assert target.connections == [] and not target.requests
    assert relay.service.registry.get(target.target_id) is not None


@pytest_twisted.ensureDeferred
async def test_malformed_registrations(relay):
    relay.start()
    path = relay.registration_path
    raw = await register_raw(path, b"this is not json\n")
    assert error_code(json.loads(raw)) == "invalid_registration_json"
    cases = [
        [1, 2, 3],
        {**payload(relay), "extra": 1},
        {k: v for k, v in payload(relay).items() if k != "ipc_path"},
        payload(relay, lease_seconds="30"),
        payload(relay, lease_seconds=True),
        payload(relay, target_id=7),
        payload(relay, supported_commands=[{"name": "pause_child"}]),
        payload(relay, supported_commands=[{"name": "pause_child", "idempotent": "no",
                                            "timeout_seconds": 3}]),
    ]
    for case in cases:
        assert error_code(await register(path, case)) == "invalid_registration_json", case
    # an oversized line is refused without buffering it all, and the listener lives on
    raw = await register_raw(path, b"{" + b" " * 70000 + b"}\n")
    assert error_code(json.loads(raw)) == "invalid_registration_json"
    assert (await register(path, payload(relay)))["ok"] is True


@pytest_twisted.ensureDeferred
async def test_each_check_in_order(relay):
    relay.start()
    path = relay.registration_path
    sock = lambda name: os.path.join(relay.sockdir, name)  # noqa: E731
    outside = "/tmp/elsewhere/x.sock"
    cases = [
        (payload(relay, target_id="  "), "empty_target_id"),
        # blank id wins over a relative path (order)
        (payload(relay, target_id="", ipc_path="rel.sock"), "empty_target_id"),
        (payload(relay, ipc_path="relative/x.sock"), "relative_ipc_path"),
        (payload(relay, ipc_path=outside), "ipc_path_not_allowed"),
        (payload(relay, ipc_path=relay.sockdir + "/../etc/x.sock"), "ipc_path_not_allowed"),
        # same string prefix but another directory: components are compared, not strings
        (payload(relay, ipc_path=relay.sockdir + "-evil/x.sock"), "ipc_path_not_allowed"),
        (payload(relay, ipc_path=relay.sockdir), "ipc_path_not_allowed"),
        (payload(relay, ipc_path=outside, lease_seconds=0), "ipc_path_not_allowed"),
        (payload(relay, lease_seconds=0), "invalid_lease_seconds"),
        (payload(relay, lease_seconds=-5), "invalid_lease_seconds"),
        (payload(relay, lease_seconds=121), "invalid_lease_seconds"),
        (payload(relay, lease_seconds=0, supported_commands=[
            {"name": "", "idempotent": False, "timeout_seconds": 1}]), "invalid_lease_seconds"),
        (payload(relay, supported_commands=[
            {"name": " ", "idempotent": False, "timeout_seconds": 1}]),
         "unsupported_command_schema"),
        (payload(relay, supported_commands=[
            {"name": "pause_child", "idempotent": False, "timeout_seconds": 0}]),
         "unsupported_command_schema"),
    ]
    os.symlink(sock("real.sock"), sock("link.sock"))
    cases.append((payload(relay, ipc_path=sock("link.sock")), "invalid_ipc_path"))
    # a symlinked parent that leads outside the prefix is resolved first
    os.makedirs("/tmp/rly-outside-test", exist_ok=True)
    try:
        os.symlink("/tmp/rly-outside-test", sock("sub"))
        cases.append((payload(relay, ipc_path=sock("sub/x.sock")), "ipc_path_not_allowed"))
        for case, code in cases:
            ack = await register(path, case)
            assert error_code(ack) == code, (case, ack)
            assert ack["retryable"] is False
    finally:
        os.rmdir("/tmp/rly-outside-test")
    assert len(relay.service.registry) == 0


@pytest_twisted.ensureDeferred
async def test_upsert_renews_and_conflicts(relay):
    relay.start()
    path = relay.registration_path
    registry = relay.service.registry
    first = payload(relay, lease_seconds=30)
    assert (await register(path, first))["ok"]
    entry = registry.get("payments-worker-a")
    expires = entry.expires_at
    await eventually(lambda: relay.service.reactor.seconds() > expires - 30 + 0.01)
    assert (await register(path, {**first, "lease_seconds": 60}))["ok"]
    renewed = registry.get("payments-worker-a")
    assert renewed.expires_at > expires + 29 and renewed.registration.lease_seconds == 60
    # a default lease applies when the target sends null
    assert (await register(path, {**first, "lease_seconds": None}))["ok"]
    assert registry.get("payments-worker-a").registration.lease_seconds == 30
    # another id on the same (differently spelled) path is a conflict naming the holder
    other = payload(relay, "orders-worker-b",
                    path=relay.sockdir + "/./sub/../payments-worker-a.sock")
    ack = await register(path, other)
    assert error_code(ack) == "ipc_path_conflict"
    assert "payments-worker-a" in ack["error"]["message"]
    # moving to a new path frees the old one
    moved = payload(relay, path=os.path.join(relay.sockdir, "moved.sock"))
    assert (await register(path, moved))["ok"]
    assert (await register(path, payload(relay, "orders-worker-b",
                                         path=first["ipc_path"])))["ok"]
    assert [e.target_id for e in registry.entries()] == ["orders-worker-b", "payments-worker-a"]


@pytest_twisted.ensureDeferred
async def test_lease_expiry_frees_id_and_path(relay):
    relay.start()
    path = relay.registration_path
    first = payload(relay, lease_seconds=1)
    assert (await register(path, first))["ok"]
    assert error_code(await register(path, payload(relay, "other", path=first["ipc_path"]))) \
        == "ipc_path_conflict"
    await eventually(lambda: relay.service.registry.get("payments-worker-a") is None, 3)
    assert relay.service.registry.entries() == []
    assert (await register(path, payload(relay, "other", path=first["ipc_path"])))["ok"]


@pytest_twisted.ensureDeferred
async def test_silent_peer_is_timed_out_with_an_ack(relay):
    relay.start(timeouts={"registration_read_seconds": 0.2})
    raw = await register_raw(relay.registration_path, b'{"target_id": "half')
    ack = json.loads(raw)
    assert error_code(ack) == "registration_timeout" and ack["retryable"] is True
    assert relay.service.registration.factory.active == 0


@pytest_twisted.ensureDeferred
async def test_owner_from_peer_credentials(relay):
    """A target id held by uid 0 cannot be taken over by another uid (SO_PEERCRED)."""
    if os.getuid() != 0:
        pytest.fail("this test needs root to connect as another uid")
    relay.start(registration={"permissions": "0666"})
    os.chmod(relay.sockdir, 0o755)
    first = payload(relay)
    assert (await register(relay.registration_path, first))["ok"]
    from twisted.internet.threads import deferToThread

    def run(body):
        return register_as_nobody(relay.registration_path, body)

    ack = await deferToThread(run, first)
    assert error_code(ack) == "target_id_owner_mismatch"
    ack = await deferToThread(run, payload(relay, "nobody-target"))
    assert ack["ok"] is True
    assert relay.service.registry.get("nobody-target").owner == "unix_uid:65534"
    assert relay.service.registry.get("payments-worker-a").owner == "unix_uid:0"


@pytest_twisted.ensureDeferred
async def test_a_401_digit_timeout_is_refused_and_registers_nothing(relay):
    relay.start()
    path = relay.registration_path
    body = payload(relay)
    for command in body["supported_commands"]:
        command["timeout_seconds"] = int("9" * 401)
    ack = await register(path, body)
    assert error_code(ack) == "invalid_registration_json" and ack["retryable"] is False
    assert "out of range" in ack["error"]["message"]
    assert relay.service.registry.get("payments-worker-a") is None
    for command in body["supported_commands"]:
        command["timeout_seconds"] = 86_401
    ack = await register(path, body)
    assert error_code(ack) == "unsupported_command_schema"
    assert "86400" in ack["error"]["message"]
    assert relay.service.registry.get("payments-worker-a") is None
    for command in body["supported_commands"]:
        command["timeout_seconds"] = 86_400
    assert (await register(path, body))["ok"] is True


@pytest_twisted.ensureDeferred
async def test_a_display_name_over_256_characters_is_refused(relay):
    relay.start()
    path = relay.registration_path
    ack = await register(path, payload(relay, display_name="n" * 257))
    assert error_code(ack) == "invalid_registration_json" and ack["retryable"] is False
    assert "at most 256 chars" in ack["error"]["message"]
    assert relay.service.registry.get("payments-worker-a") is None
    assert (await register(path, payload(relay, display_name="n" * 256)))["ok"] is True
    assert relay.service.registry.get("payments-worker-a").registration.display_name == "n" * 256


@pytest_twisted.ensureDeferred
async def test_registry_full_is_retryable(relay):
    relay.start(limits={"max_targets": 1})
    assert (await register(relay.registration_path, payload(relay)))["ok"]
    ack = await register(relay.registration_path, payload(relay, "second"))
    assert error_code(ack) == "registry_full" and ack["retryable"] is True
