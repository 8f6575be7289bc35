"""Certificates for the relay's mTLS: a local CA, server and client certs, a browser .p12.

Built on ``cryptography`` (not the deprecated ``OpenSSL.crypto`` X509 APIs). Used by the demo
(``python -m supervisor.certs --out DIR``) and by tests, which also need deliberately bad
certificates: from an unknown CA, expired, not yet valid, or server-only.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
import sys
from typing import Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertKey",
    "make_name",
    "generate_ca",
    "issue_server_cert",
    "issue_client_cert",
    "export_p12",
    "write_demo_certs",
    "DemoCerts",
    "FleetCerts",
    "FLEET_ORGANIZATION",
    "host_subject",
    "gateway_subject",
    "principal_of_subject",
    "write_fleet_certs",
    "main",
]

DEMO_OPERATOR_SUBJECT: tuple[tuple[str, str], ...] = (("CN", "demo operator"),)

_ATTRIBUTE_OIDS = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
}


@attrs.frozen
class CertKey:
    """A certificate with its private key, and PEM/DER helpers for writing them out."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, cert_path: str, key_path: str) -> None:
        """Write the PEM certificate (0644) and key (0600)."""
        _write(cert_path, self.cert_pem(), 0o644)
        _write(key_path, self.key_pem(), 0o600)


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def make_name(rdns: Sequence[tuple[str, str]]) -> x509.Name:
    """An X.509 name from ``(("O", "Example Ops"), ("CN", "alice"))``, in that order."""
    return x509.Name(
        [x509.RelativeDistinguishedName([x509.NameAttribute(_ATTRIBUTE_OIDS[k], v)])
         for k, v in rdns]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: datetime.datetime | None,
    not_after: datetime.datetime | None,
) -> x509.CertificateBuilder:
    start = not_before or (_now() - datetime.timedelta(minutes=5))
    end = not_after or (start + datetime.timedelta(days=825))
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def generate_ca(
    common_name: str = "supervisor demo CA",
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> CertKey:
    """A self-signed CA that may sign end-entity certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = make_name((("CN", common_name),))
    cert = (
        _builder(name, name, key.public_key(), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CertKey(cert=cert, key=key)


def _leaf(
    ca: CertKey,
    subject: x509.Name,
    usages: list[x509.ObjectIdentifier],
    san: list[x509.GeneralName] | None,
    not_before: datetime.datetime | None,
    not_after: datetime.datetime | None,
) -> CertKey:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(subject, ca.cert.subject, key.public_key(), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return CertKey(cert=builder.sign(ca.key, hashes.SHA256()), key=key)


def issue_server_cert(
    ca: CertKey,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> CertKey:
    """A TLS server certificate (serverAuth only) for the given names and addresses."""
    san: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    san += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    subject = make_name((("CN", hostnames[0] if hostnames else "relay"),))
    return _leaf(ca, subject, [ExtendedKeyUsageOID.SERVER_AUTH], san, not_before, not_after)


def issue_client_cert(
    ca: CertKey,
    subject: Sequence[tuple[str, str]] = DEMO_OPERATOR_SUBJECT,
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> CertKey:
    """A TLS client certificate (clientAuth only) whose subject RDNs keep the given order."""
    return _leaf(ca, make_name(subject), [ExtendedKeyUsageOID.CLIENT_AUTH], None, not_before,
                 not_after)


def expired_window() -> tuple[datetime.datetime, datetime.datetime]:
    """``(not_before, not_after)`` of a certificate that expired yesterday."""
    now = _now()
    return now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)


def future_window() -> tuple[datetime.datetime, datetime.datetime]:
    """``(not_before, not_after)`` of a certificate that becomes valid tomorrow."""
    now = _now()
    return now + datetime.timedelta(days=1), now + datetime.timedelta(days=30)


def export_p12(client: CertKey, ca: CertKey, password: str, name: str = "demo operator") -> bytes:
    """PKCS#12 bundle of a client key+cert (+CA) for importing into a browser."""
    return pkcs12.serialize_key_and_certificates(
        name.encode("utf-8"),
        client.key,
        client.cert,
        [ca.cert],
        serialization.BestAvailableEncryption(password.encode("utf-8")),
    )


@attrs.frozen
class DemoCerts:
    """Paths written by :func:`write_demo_certs` and the .p12 password."""

    directory: str
    ca_cert: str
    ca_key: str
    relay_cert: str
    relay_key: str
    operator_cert: str
    operator_key: str
    operator_p12: str
    p12_password_file: str
    p12_password: str


def write_demo_certs(out_dir: str, *, password: str | None = None,
                     force: bool = False) -> DemoCerts:
    """Create (or reuse) the demo CA, relay cert (localhost/127.0.0.1) and operator cert."""
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    p = lambda name: os.path.join(out_dir, name)  # noqa: E731
    paths = DemoCerts(
        directory=out_dir, ca_cert=p("ca.pem"), ca_key=p("ca-key.pem"),
        relay_cert=p("relay.pem"), relay_key=p("relay-key.pem"),
        operator_cert=p("operator.pem"), operator_key=p("operator-key.pem"),
        operator_p12=p("operator.p12"), p12_password_file=p("operator.p12.password"),
        p12_password="",
    )
    existing = [paths.ca_cert, paths.relay_cert, paths.relay_key, paths.operator_p12,
                paths.p12_password_file]
    if not force and all(os.path.exists(f) for f in existing):
        with open(paths.p12_password_file, encoding="utf-8") as f:
            return attrs.evolve(paths, p12_password=f.read().strip())
    password = password or secrets.token_urlsafe(12)
    ca = generate_ca()
    ca.write(paths.ca_cert, paths.ca_key)
    issue_server_cert(ca).write(paths.relay_cert, paths.relay_key)
    operator = issue_client_cert(ca)
    operator.write(paths.operator_cert, paths.operator_key)
    _write(paths.operator_p12, export_p12(operator, ca, password), 0o600)
    _write(paths.p12_password_file, password.encode("utf-8") + b"\n", 0o600)
    return attrs.evolve(paths, p12_password=password)


FLEET_ORGANIZATION = "Supervisor Fleet"


def host_subject(host_id: str) -> tuple[tuple[str, str], ...]:
    """The subject RDNs (certificate order) of host relay ``host_id``'s NATS client cert."""
    return (("CN", f"host-{host_id}"), ("O", FLEET_ORGANIZATION))


def gateway_subject(name: str = "fleet-gateway") -> tuple[tuple[str, str], ...]:
    """The subject RDNs (certificate order) of a fleet gateway's NATS client cert."""
    return (("CN", name), ("O", FLEET_ORGANIZATION))


def principal_of_subject(rdns: Sequence[tuple[str, str]]) -> str:
    """The principal the relay derives from such a subject (RDNs in certificate order, ", ")."""
    return ", ".join(rdn.rfc4514_string() for rdn in make_name(rdns).rdns)


@attrs.frozen
class FleetCerts:
    """Paths written by :func:`write_fleet_certs`: one CA, the NATS server's certificate,
    one client certificate per host relay and per gateway, and their principals."""

    directory: str
    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str
    #: host_id -> (certificate path, key path)
    hosts: dict[str, tuple[str, str]]
    #: gateway name -> (certificate path, key path)
    gateways: dict[str, tuple[str, str]]
    #: host_id -> principal of its certificate
    host_principals: dict[str, str]
    #: gateway name -> principal of its certificate
    gateway_principals: dict[str, str]


def write_fleet_certs(out_dir: str, host_ids: Sequence[str],
                      gateways: Sequence[str] = ("fleet-gateway",), *,
                      ca: CertKey | None = None) -> FleetCerts:
    """Issue a fleet's NATS certificates into ``out_dir``: the server's (localhost,
    127.0.0.1), ``host-<id>.pem`` per host and ``<gateway>.pem`` per gateway (clientAuth),
    all signed by ``ca`` (a new CA, written as ``ca.pem``, when omitted)."""
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    p = lambda name: os.path.join(out_dir, name)  # noqa: E731
    ca = ca or generate_ca("supervisor fleet CA")
    ca.write(p("ca.pem"), p("ca-key.pem"))
    issue_server_cert(ca).write(p("nats-server.pem"), p("nats-server-key.pem"))
    hosts: dict[str, tuple[str, str]] = {}
    host_principals: dict[str, str] = {}
    for host_id in host_ids:
        paths = (p(f"host-{host_id}.pem"), p(f"host-{host_id}-key.pem"))
        issue_client_cert(ca, host_subject(host_id)).write(*paths)
        hosts[host_id] = paths
        host_principals[host_id] = principal_of_subject(host_subject(host_id))
    gateway_paths: dict[str, tuple[str, str]] = {}
    gateway_principals: dict[str, str] = {}
    for name in gateways:
        paths = (p(f"{name}.pem"), p(f"{name}-key.pem"))
        issue_client_cert(ca, gateway_subject(name)).write(*paths)
        gateway_paths[name] = paths
        gateway_principals[name] = principal_of_subject(gateway_subject(name))
    return FleetCerts(directory=out_dir, ca_cert=p("ca.pem"), ca_key=p("ca-key.pem"),
                      server_cert=p("nats-server.pem"), server_key=p("nats-server-key.pem"),
                      hosts=hosts, gateways=gateway_paths, host_principals=host_principals,
                      gateway_principals=gateway_principals)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write demo certificates into ``--out`` and print where they are."""
    parser = argparse.ArgumentParser(prog="python -m supervisor.certs",
                                     description="Write demo mTLS certificates.")
    parser.add_argument("--out", required=True, help="directory to write into")
    parser.add_argument("--password", default=None, help="p12 password (random if omitted)")
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    args = parser.parse_args(argv)
    certs = write_demo_certs(args.out, password=args.password, force=args.force)
    print(f"CA certificate:        {certs.ca_cert}")
    print(f"relay certificate/key: {certs.relay_cert} {certs.relay_key}")
    print(f"operator cert/key:     {certs.operator_cert} {certs.operator_key}")
    print(f"operator .p12:         {certs.operator_p12}")
    print(f"p12 password: {certs.p12_password}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
