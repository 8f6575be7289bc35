"""Each configuration default is written once, on its attrs field: a file that leaves a key
out gets exactly the model's default."""

from __future__ import annotations

import attrs

from supervisor.config import relay, target
from supervisor.config._common import defaults
from supervisor.tree.spec import ChildKind, ChildSpec, SupervisorSpec


def test_defaults_are_the_fields_that_have_one():
    d = defaults(relay.RegistrationConfig)
    assert (d.permissions, d.default_lease_seconds, d.max_lease_seconds) == (0o600, 30, 120)
    assert not hasattr(d, "listen_path") and not hasattr(d, "allowed_ipc_path_prefixes")
    assert vars(defaults(relay.LimitsConfig)) == attrs.asdict(relay.LimitsConfig())


def test_a_minimal_target_file_gets_the_model_defaults():
    config = target.parse_target_config({
        "children": [{"name": "w", "callable": "supervisor.demo:steady_worker"}],
        "ipc": {"enabled": True, "target_id": "t", "path": "/tmp/t.sock",
                "registration": {"enabled": True, "relay_registration_path": "/tmp/r.sock"}},
    }, "/tmp")
    assert config.ipc == target.IpcConfig(
        enabled=True, target_id="t", path="/tmp/t.sock",
        registration=target.RegistrationConfig(enabled=True,
                                               relay_registration_path="/tmp/r.sock",
                                               display_name="t"))
    spec = config.spec
    assert attrs.evolve(spec, children=()) == SupervisorSpec()
    child = spec.children[0]
    assert child == ChildSpec("w", ChildKind.TASK, factory=child.factory,
                              callable_ref="supervisor.demo:steady_worker")


def test_a_minimal_relay_file_gets_the_model_defaults():
    config = relay.parse_relay_config({
        "listen": {"bind": "127.0.0.1:9443", "public_url": "wss://localhost:9443/supervisor"},
        "tls": {"certificate_path": "c.pem", "private_key_path": "k.pem",
                "client_ca_path": "ca.pem"},
        "registration": {"listen_path": "/tmp/reg.sock", "allowed_ipc_path_prefixes": ["/tmp"]},
        "audit": {"path": "audit.sqlite3"},
    }, "/tmp")
    assert config.limits == relay.LimitsConfig()
    assert config.timeouts == relay.TimeoutsConfig()
    assert config.trusted_proxy == relay.TrustedProxyConfig()
    assert config.registration == relay.RegistrationConfig(
        listen_path="/tmp/reg.sock", allowed_ipc_path_prefixes=("/tmp",))
    assert config.audit == relay.AuditConfig(path="/tmp/audit.sqlite3")
