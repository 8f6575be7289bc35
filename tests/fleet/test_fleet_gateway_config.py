"""The gateway's configuration: the relay's sections read alike, ``nats`` required, the
``gateway`` section's bounds, the principal from the NATS certificate, and
``twistd supervisor-fleet`` refusing a bad file with the reason alone."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import yaml

from supervisor import certs
from supervisor.config.gateway import GatewaySettings, load_gateway_config, \
    parse_gateway_config
from supervisor.config._common import ConfigError
from supervisor.fleet.gateway import gateway_principal

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def base(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "listen": {"bind": "127.0.0.1:9444", "public_url": "wss://localhost:9444/supervisor"},
        "tls": {"certificate_path": "gw.pem", "private_key_path": "gw-key.pem",
                "client_ca_path": "ca.pem"},
        "audit": {"path": "audit.sqlite3"},
        "nats": {"servers": ["tls://127.0.0.1:4222"],
                 "tls": {"ca_path": "nats-ca.pem", "certificate_path": "gateway.pem",
                         "private_key_path": "gateway-key.pem"}},
    }
    data.update(sections)
    return {k: v for k, v in data.items() if v is not None}


def test_defaults_and_relative_paths():
    config = parse_gateway_config(base(), "/etc/fleet")
    assert config.gateway == GatewaySettings()
    assert config.gateway.host_timeout_ms == 2000
    assert config.gateway.interest_lease_seconds == 10
    assert config.gateway.request_timeout_seconds == 5
    assert config.audit.path == "/etc/fleet/audit.sqlite3"
    assert config.nats.tls.certificate_path == "/etc/fleet/gateway.pem"
    assert config.mtls and config.alerts.rules == ()


@pytest.mark.parametrize("data, message", [
    (base(nats=None), "nats: is required"),
    (base(nats={"servers": []}), "nats.servers: must list at least one server"),
    (base(nats={"servers": ["nats://h:4222"]}), "must be tls://host:port"),
    (base(nats={"servers": ["tls://h:4222"]}), "nats.tls.ca_path: is required"),
    (base(audit=None), "audit.path: is required"),
    (base(registration={}), "registration: unknown key"),
    (base(gateway={"host_timeout_ms": 10}), "gateway.host_timeout_ms: must be >= 100"),
    (base(gateway={"interest_lease_seconds": 0}), "gateway.interest_lease_seconds: must be >= 1"),
    (base(gateway={"request_timeout": 1}), "gateway.request_timeout: unknown key"),
    (base(limits={"max_targets": 0}), "limits.max_targets: must be >= 1"),
    (base(listen={"bind": "localhost", "public_url": "wss://x/s"}), "listen.bind: must be"),
])
def test_bad_input_names_the_key(data, message):
    with pytest.raises(ConfigError) as raised:
        parse_gateway_config(data, "/etc/fleet")
    assert message in str(raised.value)


def test_the_principal_is_the_nats_certificate_subject(tmp_path):
    ca = certs.generate_ca("fleet test CA")
    client = certs.issue_client_cert(ca, (("CN", "fleet-gateway"), ("O", "Supervisor Demo")))
    client.write(str(tmp_path / "gateway.pem"), str(tmp_path / "gateway-key.pem"))
    config = parse_gateway_config(base(), str(tmp_path))
    assert gateway_principal(config.nats) == "CN=fleet-gateway, O=Supervisor Demo"
    (tmp_path / "gateway.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="nats.tls.certificate_path"):
        gateway_principal(config.nats)


def test_twistd_refuses_a_bad_config_with_the_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(base(nats={"servers": []})))
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([TWISTD, "-n", "supervisor-fleet", "--config", str(bad)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"{bad}: nats.servers: must list at least one server" in done.stderr
    assert "Traceback" not in done.stderr


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(base()))
    config = load_gateway_config(str(path))
    assert config.source_path == str(path)
    assert config.tls.certificate_path == str(tmp_path / "gw.pem")
