"""The nats-server configuration generator and the fleet certificates: users in RFC 2253 form,
the fleet's permissions, a configuration nats-server itself accepts."""

from __future__ import annotations

import subprocess

import pytest
from cryptography import x509

from supervisor.certs import host_subject, principal_of_subject, write_fleet_certs
from supervisor.fleet.natsconf import main, render_nats_config, rfc2253, HostUser
from supervisor.fleet.subjects import gateway_token
from supervisor.relay.auth import principal_of
from tests.fleet.nats_support import NATS_SERVER

GATEWAY = "CN=fleet-gateway, O=Supervisor Fleet"


def test_principals_are_written_in_rfc2253_order():
    assert rfc2253("CN=host-a, O=Supervisor Fleet") == "O=Supervisor Fleet,CN=host-a"
    assert rfc2253(r"CN=a\, b, O=x") == r"O=x,CN=a\, b"  # an escaped comma stays in its value
    with pytest.raises(ValueError):
        rfc2253("CN=a,, O=b")


def test_fleet_certificates_carry_the_principals_the_relay_derives(tmp_path):
    certs = write_fleet_certs(str(tmp_path), ["a", "b"])
    for host_id, (cert_path, _) in certs.hosts.items():
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        assert principal_of(cert.subject) == certs.host_principals[host_id]
    assert certs.host_principals["a"] == principal_of_subject(host_subject("a")) == (
        "CN=host-a, O=Supervisor Fleet")
    assert certs.gateway_principals == {"fleet-gateway": GATEWAY}


def test_permissions_per_host_and_gateway():
    text = render_nats_config(listen="127.0.0.1:4222", cert="/s.pem", key="/s-key.pem",
                              ca="/ca.pem", hosts=[HostUser("a", "CN=host-a, O=Supervisor Fleet")],
                              gateways=[GATEWAY])
    host, gateway = text.split('user: "')[1:]
    assert host.startswith("O=Supervisor Fleet,CN=host-a")
    assert 'allow: ["fleet.host.a.>"]' in host and 'allow: ["fleet.rpc.a.*"]' in host
    assert "allow_responses: true" in host
    assert f'allow: ["fleet.rpc.*.{gateway_token(GATEWAY)}"]' in gateway
    assert 'allow: ["fleet.host.>", "_INBOX.>"]' in gateway
    assert "verify_and_map: true" in text and "max_payload: 1048576" in text
    with pytest.raises(ValueError, match="two users"):
        render_nats_config(listen="127.0.0.1:1", cert="c", key="k", ca="a",
                           hosts=[HostUser("a", GATEWAY)], gateways=[GATEWAY])
    with pytest.raises(ValueError, match="host id"):
        render_nats_config(listen="127.0.0.1:1", cert="c", key="k", ca="a",
                           hosts=[HostUser("a.b", "CN=x")], gateways=[])


def test_the_cli_writes_a_configuration_nats_server_accepts(tmp_path):
    certs = write_fleet_certs(str(tmp_path / "certs"), ["a"])
    out = tmp_path / "nats.conf"
    assert main(["--out", str(out), "--listen", "127.0.0.1:14222", "--cert", certs.server_cert,
                 "--key", certs.server_key, "--ca", certs.ca_cert,
                 "--host", f"a={certs.host_principals['a']}", "--gateway", GATEWAY,
                 "--cluster", "127.0.0.1:16222", "--route", "nats://127.0.0.1:16223"]) == 0
    checked = subprocess.run([NATS_SERVER, "-t", "-c", str(out)], capture_output=True,
                             text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "routes" in out.read_text()
