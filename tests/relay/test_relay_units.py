"""Unit tests of relay logic with fakes: registry leases, outbox, IPC client, filters,
config validation and certificates."""

from __future__ import annotations

import datetime
import json
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from supervisor import certs
from supervisor.config._common import ConfigError
from supervisor.config.relay import load_relay_config, parse_relay_config
from supervisor.relay.auth import identity_from_certificate
from supervisor.relay.filters import FilterConditions
from supervisor.relay.outbox import Outbox
from supervisor.relay.registration import normalise_ipc_path, path_under_prefix
from supervisor.relay.registry import Registry
from supervisor.wire.client import NDJSONClientProtocol, RemoteError
from supervisor.wire.errors import WireError
from supervisor.wire.registration import CommandSpec, Registration, RegistrationRefused

from relay_helpers import config_dict


def registration(target_id="a", path="/tmp/x/a.sock", lease=10, name=None):
    return Registration(target_id, name or target_id, path, lease,
                        (CommandSpec("pause_child", False, 30),))


class Recorder:
    def __init__(self):
        self.calls = []

    def target_added(self, entry):
        self.calls.append(("added", entry.target_id))

    def target_updated(self, entry, previous):
        self.calls.append(("updated", entry.target_id))

    def target_expired(self, entry):
        self.calls.append(("expired", entry.target_id))


# registry -----------------------------------------------------------------------------------

def test_registry_lease_upsert_and_expiry_with_a_fake_clock():
    clock = Clock()
    registry = Registry(clock, max_targets=10)
    seen = Recorder()
    registry.add_observer(seen)
    registry.register(registration(), "unix_uid:1")
    clock.advance(9)
    registry.register(registration(), "unix_uid:1")  # renew: now expires at 19
    assert seen.calls == [("added", "a")]
    clock.advance(9.5)
    assert registry.sweep() == [] and registry.get("a") is not None
    registry.register(registration(name="renamed"), "unix_uid:1")
    assert seen.calls[-1] == ("updated", "a")
    clock.advance(10)
    assert registry.get("a") is None  # past its lease even before the sweep runs
    assert [e.target_id for e in registry.sweep()] == ["a"]
    assert seen.calls[-1] == ("expired", "a")
    # the path is free again, for anyone; the id stays its owner's (docs/security.md)
    registry.register(registration("b", "/tmp/x/a.sock"), "unix_uid:2")
    with pytest.raises(RegistrationRefused) as e:
        registry.register(registration("a", "/tmp/x/other.sock"), "unix_uid:3")
    assert e.value.code == "target_id_owner_mismatch"
    registry.register(registration("a", "/tmp/x/other.sock"), "unix_uid:1")


def test_registry_owner_and_path_exclusivity():
    clock = Clock()
    registry = Registry(clock, max_targets=2)
    registry.register(registration(), "unix_uid:1")
    with pytest.raises(RegistrationRefused) as e:
        registry.register(registration(), "unix_uid:2")
    assert e.value.code == "target_id_owner_mismatch"
    with pytest.raises(RegistrationRefused) as e:
        registry.register(registration("b"), "unix_uid:1")
    assert e.value.code == "ipc_path_conflict" and "a" in e.value.message
    registry.register(registration("b", "/tmp/x/b.sock"), "unix_uid:1")
    with pytest.raises(RegistrationRefused) as e:
        registry.register(registration("c", "/tmp/x/c.sock"), "unix_uid:1")
    assert e.value.code == "registry_full" and e.value.retryable


def test_path_rules():
    assert path_under_prefix("/tmp/demo/a.sock", "/tmp/demo")
    assert not path_under_prefix("/tmp/demo-evil/a.sock", "/tmp/demo")
    assert not path_under_prefix("/tmp/demo", "/tmp/demo")
    assert path_under_prefix("/tmp/demo/sub/a.sock", "/tmp/demo/")
    fake = {"/tmp/demo/..": "/tmp", "/tmp/demo/x/..": "/tmp/demo"}
    assert normalise_ipc_path("/tmp/demo/x/../a.sock", lambda p: fake.get(p, p)) == \
        "/tmp/demo/a.sock"


# outbox -------------------------------------------------------------------------------------

def test_outbox_drops_oldest_events_counts_them_and_coalesces_dropped_count():
    sent = []
    overflowed = []
    box = Outbox(sent.append, 4, render_dropped=lambda t: f"dropped:{t}:{box.dropped[t]}",
                 on_overflow=lambda: overflowed.append(True), byte_limit=1 << 20)
    box.put("state", "t", "state")
    assert sent == ["state"]  # written straight through while not paused
    box.pauseProducing()
    for i in range(4):
        box.put("event", "t", f"e{i}")
    box.put("event", "t", "e4")   # full: e0 goes, a dropped_count is queued
    box.put("log", "t", "l0")     # full again: e1 goes, the dropped_count is reused
    assert box.dropped == {"t": [2, 0]}
    assert box.pending <= 4 + 1
    box.resumeProducing()
    assert sent == ["state", "e2", "e3", "dropped:t:[2, 0]", "e4", "l0"]
    assert overflowed == []


def test_outbox_full_of_undroppable_messages_closes_the_session():
    overflowed = []
    box = Outbox(lambda text: None, 2, render_dropped=str,
                 on_overflow=lambda: overflowed.append(True), byte_limit=1 << 20)
    box.pauseProducing()
    box.put("state", "t", "s1")
    box.put("state_delta", "t", "s2")
    box.put("event", "t", "e")  # a new droppable message is the one dropped
    assert box.dropped == {"t": [1, 0]} and not overflowed
    box.put("command_result", "t", "r")
    assert overflowed == [True] and box.pending == 0


# IPC client ---------------------------------------------------------------------------------

def connected_client(clock, pushes=None, **kw):
    client = NDJSONClientProtocol(clock, default_timeout=2.0, on_push=(pushes if pushes is not None else []).append,
                                  **kw)
    transport = StringTransport()
    client.makeConnection(transport)
    return client, transport


def test_client_matches_responses_and_times_out():
    clock = Clock()
    pushes = []
    client, transport = connected_client(clock, pushes, max_in_flight=2)
    results, errors = [], []
    client.request("state", {"target_id": "a"}).addCallbacks(results.append, errors.append)
    client.request("hello", None, timeout=5).addCallbacks(results.append, errors.append)
    lines = [json.loads(x) for x in transport.value().splitlines()]
    assert [x["method"] for x in lines] == ["state", "hello"]
    third = []
    client.request("x", None).addErrback(third.append)
    assert third[0].value.code == "too_many_requests"
    client.dataReceived(b'{"type":"event","target_id":"a","event":{}}\n')
    assert pushes == [{"type": "event", "target_id": "a", "event": {}}]
    clock.advance(2.0)
    assert errors[0].value.code == "ipc_timeout" and errors[0].value.retryable
    # the late answer to the timed-out request is ignored
    client.dataReceived(json.dumps({"request_id": lines[0]["request_id"], "ok": True,
                                    "result": {"type": "state"}}).encode() + b"\n")
    client.dataReceived(json.dumps({"request_id": lines[1]["request_id"], "ok": False,
                                    "error": {"code": "bad", "stage": "s", "target_id": None,
                                              "message": "m", "retryable": False}}).encode()
                        + b"\r\n")
    assert results == [] and isinstance(errors[1].value, RemoteError)
    assert errors[1].value.code == "bad"
    assert clock.getDelayedCalls() == []


def test_client_fails_pending_on_connection_loss_and_bad_lines():
    clock = Clock()
    client, transport = connected_client(clock)
    errors = []
    client.request("state", None).addErrback(errors.append)
    client.dataReceived(b"not json\n")
    assert transport.disconnecting
    client.connectionLost(None)
    assert errors[0].value.code == "invalid_ipc_response"
    late = []
    client.request("state", None).addErrback(late.append)
    assert late[0].value.code == "connection_lost"


def test_client_caps_line_size():
    client, transport = connected_client(Clock(), max_line_bytes=100)
    errors = []
    client.request("state", None).addErrback(errors.append)
    client.dataReceived(b"x" * 200)
    client.connectionLost(None)
    assert errors[0].value.code == "ipc_response_too_large"


# filters ------------------------------------------------------------------------------------

def test_filter_semantics():
    f = FilterConditions.from_message({"type": "log_event_filter_conditions",
                                       "child_paths": ["/root/sup"], "severities": ["error"],
                                       "lifecycle_states": ["failed"]})
    event = {"severity": "error", "target_path": "/root/sup/a", "event_type": "child_failed",
             "sequence": 3, "correlation_id": "c"}
    assert f.admits_event(event)
    assert not f.admits_event({**event, "target_path": "/root/super"})
    assert not f.admits_event({**event, "event_type": "child_paused"})
    assert f.admits_event({**event, "event_type": "x", "payload": {"lifecycle_state": "failed"}})
    assert f.admits_log({"severity": "error", "fields": {"child_path": "/root/sup"}})
    assert not f.admits_log({"severity": "error", "fields": {}})
    assert FilterConditions.from_message({"sequence_min": 4}).admits_event(event) is False
    with pytest.raises(WireError) as e:
        FilterConditions.from_message({"severities": [1]})
    assert e.value.code == "invalid_message_schema"


def test_filters_narrow_events_and_logs_by_target_and_correlation_substring():
    f = FilterConditions.from_message({"target_ids": ["a"], "correlation_id": "7f3a"})
    event = {"severity": "info", "target_path": "/root/w", "event_type": "child_running",
             "sequence": 1, "correlation_id": "cmd-7f3a-1"}
    assert f.streams("a") and not f.streams("b")
    assert f.admits_event(event, "a") and not f.admits_event(event, "b")
    assert not f.admits_event({**event, "correlation_id": "cmd-7f3"}, "a")
    assert not f.admits_log({"severity": "info", "correlation_id": None}, "a")
    assert f.admits_log({"severity": "info", "correlation_id": "x7f3ay"}, "a")
    assert FilterConditions.from_message({"correlation_id": ""}).admits_log(
        {"correlation_id": None})  # an empty substring restricts nothing


def test_a_filter_widens_when_it_may_let_more_through_for_a_target():
    def conditions(**kw):
        return FilterConditions.from_message(kw)

    everything = conditions()
    assert not everything.widens(everything, "a")
    assert everything.widens(conditions(target_ids=["b"]), "a")
    assert not conditions(target_ids=["b"]).widens(everything, "a")  # a is held back now
    assert not conditions(target_ids=["a"]).widens(everything, "a")
    assert conditions(severities=["error", "warning"]).widens(conditions(severities=["error"]),
                                                              "a")
    assert not conditions(severities=["error"]).widens(
        conditions(severities=["error", "warning"]), "a")
    assert conditions(child_paths=["/root"]).widens(conditions(child_paths=["/root/sup"]), "a")
    assert not conditions(child_paths=["/root/sup/x"]).widens(
        conditions(child_paths=["/root/sup"]), "a")
    assert conditions(sequence_min=3).widens(conditions(sequence_min=5), "a")
    assert not conditions(sequence_min=5).widens(conditions(sequence_min=3), "a")
    assert conditions(correlation_id="7f").widens(conditions(correlation_id="7f3a"), "a")
    assert not conditions(correlation_id="c-7f3a").widens(conditions(correlation_id="7f3a"),
                                                          "a")
    assert everything.widens(conditions(event_types=["child_failed"]), "a")


# config -------------------------------------------------------------------------------------

def test_config_defaults_relative_paths_and_errors(tmp_path, pki):
    data = config_dict(str(tmp_path), pki)
    data["audit"]["path"] = "data/audit.sqlite3"
    data["registration"]["permissions"] = 0o640  # an unquoted YAML 0640
    path = tmp_path / "relay.yaml"
    path.write_text(json.dumps(data))
    config = load_relay_config(str(path))
    assert config.audit.path == str(tmp_path / "data" / "audit.sqlite3")
    assert config.registration.permissions == 0o640
    assert config.listen.origin == "https://localhost:9443"
    assert config.listen.allowed_origins == () and config.dashboard.static_dir is None
    assert config.listen.admits_origin("https://localhost:9443")
    assert not config.listen.admits_origin("https://evil.example")

    (tmp_path / "dash").mkdir()
    (tmp_path / "dash" / "index.html").write_text("<!doctype html>")
    wider = parse_relay_config(config_dict(str(tmp_path), pki, listen={
        "allowed_origins": ["HTTPS://Dash.Example", "http://127.0.0.1:8080"]},
        dashboard={"static_dir": "dash"}), str(tmp_path))
    assert wider.listen.allowed_origins == ("https://dash.example:443",
                                            "http://127.0.0.1:8080")
    assert wider.dashboard.static_dir == str(tmp_path / "dash")
    for origin in ("https://dash.example", "https://dash.example:443", "http://127.0.0.1:8080",
                   "https://localhost:9443"):
        assert wider.listen.admits_origin(origin), origin
    for origin in ("http://dash.example", "https://dash.example:8443", "null",
                   "https://a.dash.example", "http://127.0.0.1:8081", "garbage"):
        assert not wider.listen.admits_origin(origin), origin
    assert config.mtls and config.limits.session_queue == 1000
    assert config.authorization.operators[0].commands == frozenset(
        ["restart_child", "pause_child", "resume_child", "quarantine_child", "remove_child",
         "add_child", "shutdown_tree", "signal_child", "reload_config"])

    def error(**sections):
        with pytest.raises(ConfigError) as e:
            parse_relay_config(config_dict(str(tmp_path), pki, **sections), str(tmp_path))
        return e.value.key

    assert error(listen={"bind": "localhost:9443"}) == "listen.bind"
    assert error(listen={"public_url": "https://x/y"}) == "listen.public_url"
    assert error(surprise=1) == "surprise"
    assert error(registration={"nope": 1}) == "registration.nope"
    assert error(registration={"permissions": "rw"}) == "registration.permissions"
    assert error(registration={"default_lease_seconds": 200}) == \
        "registration.default_lease_seconds"
    assert error(registration={"listen_path": "/tmp/" + "x" * 120}) == "registration.listen_path"
    assert error(authorization={"operators": [{"principal": "CN=a", "commands": ["reboot"]}]}) \
        == "authorization.operators[0].commands[0]"
    assert error(authorization={"operators": [{"principal": "CN=a"}]}) == \
        "authorization.operators[0].commands"
    assert error(trusted_proxy={"enabled": True}) == "trusted_proxy.allowed_remote_addrs"
    assert error(limits={"session_queue": "many"}) == "limits.session_queue"
    assert error(timeouts={"reconnect_max_ms": 1}) == "timeouts.reconnect_max_ms"
    for origin in ("https://*.example", "*", "https://x.example/app", "null", "ftp://x",
                   "https://user@x.example", "https://x.example/"):
        assert error(listen={"allowed_origins": [origin]}) == "listen.allowed_origins[0]", origin
    assert error(dashboard={"static_dir": str(tmp_path / "nowhere")}) == "dashboard.static_dir"
    assert error(dashboard={"surprise": 1}) == "dashboard.surprise"
    bad_tls = config_dict(str(tmp_path), pki)
    del bad_tls["tls"]["client_ca_path"]
    with pytest.raises(ConfigError) as e:
        parse_relay_config(bad_tls, str(tmp_path))
    assert e.value.key == "tls.client_ca_path"


# certificates -------------------------------------------------------------------------------

def test_demo_certs_cli_and_p12(tmp_path, capsys):
    out = tmp_path / "certs"
    assert certs.main(["--out", str(out), "--password", "s3cret"]) == 0
    printed = capsys.readouterr().out
    assert "p12 password: s3cret" in printed
    key, cert, extra = pkcs12.load_key_and_certificates(
        (out / "operator.p12").read_bytes(), b"s3cret")
    assert cert.subject.rfc4514_string() == "CN=demo operator"
    assert identity_from_certificate(cert).principal == "CN=demo operator"
    assert len(extra) == 1 and key is not None
    assert oct(os.stat(out / "operator-key.pem").st_mode & 0o777) == "0o600"
    relay = x509.load_pem_x509_certificate((out / "relay.pem").read_bytes())
    san = relay.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # a second run keeps the existing files and password
    first = (out / "ca.pem").read_bytes()
    assert certs.write_demo_certs(str(out)).p12_password == "s3cret"
    assert (out / "ca.pem").read_bytes() == first


def test_bad_certificate_helpers():
    ca = certs.generate_ca()
    before, after = certs.expired_window()
    expired = certs.issue_client_cert(ca, not_before=before, not_after=after)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert expired.cert.not_valid_after_utc < now
    before, after = certs.future_window()
    assert certs.issue_client_cert(ca, not_before=before, not_after=after) \
        .cert.not_valid_before_utc > now
    ordered = certs.issue_client_cert(ca, (("O", "Example Ops"), ("CN", "demo operator")))
    assert identity_from_certificate(ordered.cert).principal == \
        "O=Example Ops, CN=demo operator"
