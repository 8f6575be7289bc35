"""Target-id ownership outlives leases and relay restarts: real sockets and another uid for
takeover attempts, a fake clock for the quiet period, the owner file and its bound."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest
import pytest_twisted
import yaml
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread

from relay_faketarget import registration_payload
from relay_helpers import NOBODY, config_dict, eventually, open_to_nobody, register, register_as_nobody
from supervisor.config.relay import ConfigError, RegistrationConfig, parse_relay_config
from supervisor.relay import owners as owners_module
from supervisor.relay.owners import OwnerBook, OwnerBookError
from supervisor.relay.registry import Registry
from supervisor.relay.service import RelayService
from supervisor.wire.registration import Registration, RegistrationRefused

def payload(relay, target_id="payments-worker-a", lease=30):
    return registration_payload(target_id, os.path.join(relay.sockdir, f"{target_id}.sock"),
                                lease)


def restart(relay, **sections) -> RelayService:
    """Stop the relay's service (if running) and start a new one on the same folder."""
    return relay.start(**sections)


@pytest_twisted.ensureDeferred
async def test_an_expired_lease_does_not_free_the_id_for_another_uid(relay):
    relay.start(registration={"permissions": "0666"})
    open_to_nobody(relay)
    body = payload(relay, lease=1)
    assert (await register(relay.registration_path, body))["ok"] is True
    await eventually(lambda: relay.service.registry.get(body["target_id"]) is None, 5,
                     "the lease expires")
    ack = await deferToThread(register_as_nobody, relay.registration_path, body)
    assert ack["ok"] is False and ack["error"]["code"] == "target_id_owner_mismatch", ack
    assert relay.service.registry.get(body["target_id"]) is None
    # the owner itself comes back at any time
    assert (await register(relay.registration_path, body))["ok"] is True


@pytest_twisted.ensureDeferred
async def test_a_relay_restart_does_not_free_the_id_for_another_uid(relay):
    relay.start(registration={"permissions": "0666"})
    open_to_nobody(relay)
    body = payload(relay)
    assert (await register(relay.registration_path, body))["ok"] is True
    await relay.service.stopService()
    book = os.path.join(relay.sockdir, "target-owners.json")
    assert stat.S_IMODE(os.stat(book).st_mode) == 0o600
    restart(relay, registration={"permissions": "0666"})
    assert relay.service.registry.get(body["target_id"]) is None  # registrations are not kept
    ack = await deferToThread(register_as_nobody, relay.registration_path, body)
    assert ack["ok"] is False and ack["error"]["code"] == "target_id_owner_mismatch", ack
    # another id is the other uid's to take, and stays so across a restart too
    other = payload(relay, "nobody-target")
    assert (await deferToThread(register_as_nobody, relay.registration_path, other))["ok"]
    await relay.service.stopService()
    restart(relay, registration={"permissions": "0666"})
    ack = await register(relay.registration_path, other)
    assert ack["ok"] is False and ack["error"]["code"] == "target_id_owner_mismatch", ack
    assert relay.service.hub.metrics.registry.get_sample_value(
        "relay_registration_refused_total", {"code": "target_id_owner_mismatch"}) == 1


@pytest_twisted.ensureDeferred
async def test_a_pinned_id_is_refused_to_every_other_uid(relay):
    relay.start(registration={"permissions": "0666",
                              "pinned_owners": {"nobody-target": NOBODY}})
    open_to_nobody(relay)
    pinned = payload(relay, "nobody-target")
    ack = await register(relay.registration_path, pinned)  # root is not the pinned uid
    assert ack["ok"] is False and ack["error"]["code"] == "target_id_owner_mismatch", ack
    assert "pinned" in ack["error"]["message"]
    assert (await deferToThread(register_as_nobody, relay.registration_path, pinned))["ok"]


@pytest_twisted.ensureDeferred
async def test_the_release_command_frees_an_id_only_while_the_relay_is_stopped(relay):
    relay.start(registration={"permissions": "0666"})
    open_to_nobody(relay)
    config_path = os.path.join(relay.sockdir, "relay.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config_dict(relay.sockdir, relay.pki,
                                   registration={"permissions": "0666"}), f)
    body = payload(relay)
    assert (await register(relay.registration_path, body))["ok"] is True
    out = io.StringIO()
    assert owners_module.main(["--config", config_path, "release", body["target_id"]],
                              out) == 1  # the running relay holds the lock
    await relay.service.stopService()
    assert owners_module.main(["--config", config_path, "list"], out) == 0
    assert "payments-worker-a\tunix_uid:0" in out.getvalue()
    assert owners_module.main(["--config", config_path, "release", body["target_id"]],
                              out) == 0
    restart(relay, registration={"permissions": "0666"})
    assert (await deferToThread(register_as_nobody, relay.registration_path, body))["ok"]


# units on a fake clock -------------------------------------------------------------------

def registration(target_id="t1", lease=30, path=None) -> Registration:
    return Registration(target_id=target_id, display_name=target_id,
                        ipc_path=path or f"/run/t/{target_id}.sock", lease_seconds=lease,
                        supported_commands=())


def rules(**kw) -> RegistrationConfig:
    return RegistrationConfig(listen_path="/run/reg.sock", allowed_ipc_path_prefixes=("/run/t",),
                              **kw)


def refused(registry, reg, owner) -> str:
    with pytest.raises(RegistrationRefused) as e:
        registry.register(reg, owner)
    return e.value.code


def test_the_quiet_period_counts_from_the_owners_last_registration(tmp_path):
    clock = Clock()
    clock.advance(1_000_000)
    book = OwnerBook(str(tmp_path / "owners.json"), rules(owner_quiet_period_seconds=3600),
                     clock)
    registry = Registry(clock, 10, book)
    registry.register(registration(lease=30), "unix_uid:1000")
    clock.advance(1800)
    registry.register(registration(lease=30), "unix_uid:1000")  # renewal: the period restarts
    clock.advance(3600 - 1)
    registry.sweep()
    assert registry.get("t1") is None
    assert refused(registry, registration(), "unix_uid:2000") == "target_id_owner_mismatch"
    clock.advance(1)
    registry.register(registration(), "unix_uid:2000")
    assert registry.get("t1").owner == "unix_uid:2000"


def test_the_owner_file_survives_a_restart_and_a_quiet_owner_is_released_at_load(tmp_path):
    path = str(tmp_path / "owners.json")
    clock = Clock()
    clock.advance(5_000)
    book = OwnerBook(path, rules(owner_quiet_period_seconds=100), clock)
    Registry(clock, 10, book).register(registration(), "unix_uid:1000")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [f for f in os.listdir(tmp_path)] == ["owners.json"]  # no temporary file left
    again = OwnerBook(path, rules(owner_quiet_period_seconds=100), clock)
    again.load()
    registry = Registry(clock, 10, again)
    assert refused(registry, registration(), "unix_uid:2000") == "target_id_owner_mismatch"
    clock.advance(100)
    later = OwnerBook(path, rules(owner_quiet_period_seconds=100), clock)
    later.load()
    assert len(later) == 0 and later.released_quiet == 1
    with open(path) as f:
        assert json.load(f)["owners"] == []


def test_renewals_reach_the_file_at_most_every_flush_interval_and_on_stop(tmp_path):
    path = str(tmp_path / "owners.json")
    clock = Clock()
    book = OwnerBook(path, rules(), clock)
    registry = Registry(clock, 10, book)
    registry.register(registration(), "unix_uid:1000")
    written = os.stat(path).st_mtime_ns, os.stat(path).st_ino

    def last_seen() -> float:
        with open(path) as f:
            return json.load(f)["owners"][0]["last_seen"]

    clock.advance(10)
    registry.register(registration(), "unix_uid:1000")
    registry.sweep()
    assert (os.stat(path).st_mtime_ns, os.stat(path).st_ino) == written and last_seen() == 0
    clock.advance(owners_module.FLUSH_INTERVAL_SECONDS)
    registry.sweep()
    assert last_seen() == 10
    clock.advance(5)
    registry.register(registration(), "unix_uid:1000")
    book.flush()
    assert last_seen() == clock.seconds() == 75


def test_a_burst_of_new_ids_is_written_at_most_once_a_second(tmp_path):
    path = str(tmp_path / "owners.json")
    clock = Clock()
    registry = Registry(clock, 10, OwnerBook(path, rules(), clock))

    def ids() -> list[str]:
        with open(path) as f:
            return [r["target_id"] for r in json.load(f)["owners"]]

    registry.register(registration("a"), "unix_uid:1")  # the first claim: written at once
    assert ids() == ["a"]
    registry.register(registration("b"), "unix_uid:1")
    registry.register(registration("c"), "unix_uid:1")
    assert ids() == ["a"] and len(clock.getDelayedCalls()) == 1
    clock.advance(owners_module.MIN_SAVE_INTERVAL_SECONDS)
    assert ids() == ["a", "b", "c"] and clock.getDelayedCalls() == []
    clock.advance(5)
    registry.register(registration("d"), "unix_uid:1")  # the file is not fresh: at once
    assert ids() == ["a", "b", "c", "d"]


def test_the_owner_book_is_bounded_and_never_forgets_an_owner_to_make_room(tmp_path):
    clock = Clock()
    book = OwnerBook(str(tmp_path / "owners.json"),
                     rules(max_owner_records=2, owner_quiet_period_seconds=100), clock)
    registry = Registry(clock, 10, book)
    registry.register(registration("a", lease=1), "unix_uid:1")
    registry.register(registration("b", lease=1), "unix_uid:1")
    clock.advance(50)
    assert refused(registry, registration("c"), "unix_uid:2") == "registry_full"
    assert book.refused_full == 1
    registry.register(registration("a"), "unix_uid:1")  # a known id is renewed
    clock.advance(50)  # "b" has been quiet for the period: it makes room
    registry.register(registration("c"), "unix_uid:2")
    assert sorted(r.target_id for r in book.records()) == ["a", "c"]


def test_a_pin_overrides_a_remembered_owner(tmp_path):
    clock = Clock()
    path = str(tmp_path / "owners.json")
    Registry(clock, 10, OwnerBook(path, rules(), clock)).register(registration(), "unix_uid:1")
    pinned = OwnerBook(path, rules(pinned_owners=(("t1", 2),)), clock)
    pinned.load()
    registry = Registry(clock, 10, pinned)
    assert refused(registry, registration(), "unix_uid:1") == "target_id_owner_mismatch"
    registry.register(registration(), "unix_uid:2")


def test_a_second_relay_on_the_same_owner_file_is_refused(tmp_path):
    clock = Clock()
    first = OwnerBook(str(tmp_path / "owners.json"), rules(), clock)
    first.lock()
    try:
        with pytest.raises(OwnerBookError, match="held"):
            OwnerBook(str(tmp_path / "owners.json"), rules(), clock).lock()
    finally:
        first.unlock()


def test_an_unreadable_owner_file_stops_start_up_rather_than_forgetting_owners(tmp_path):
    path = tmp_path / "owners.json"
    path.write_text("{not json")
    with pytest.raises(OwnerBookError, match="cannot read"):
        OwnerBook(str(path), rules(), Clock()).load()


def test_ownership_keys_are_validated(sockdir, pki):
    def parse(**registration):
        return parse_relay_config(config_dict(sockdir, pki, registration=registration), sockdir)

    config = parse(pinned_owners={"a": 1001}, owner_quiet_period_seconds=60)
    assert config.registration.pinned_owners == (("a", 1001),)
    assert config.registration.pinned_owner("a") == "unix_uid:1001"
    assert config.registration.owner_quiet_period_seconds == 60
    assert parse().registration.owner_quiet_period_seconds == 7 * 24 * 3600
    for bad, key in [({"pinned_owners": ["a"]}, "registration.pinned_owners"),
                     ({"pinned_owners": {"a": "root"}}, "registration.pinned_owners.a"),
                     ({"pinned_owners": {"a": -1}}, "registration.pinned_owners.a"),
                     ({"owner_quiet_period_seconds": 0},
                      "registration.owner_quiet_period_seconds"),
                     ({"max_owner_records": 10}, "registration.max_owner_records")]:
        with pytest.raises(ConfigError) as e:
            parse(**bad)
        assert e.value.key == key, (bad, e.value)
