"""TLS gaps: versions below 1.2 and client certificates with the wrong key usage are refused
in the handshake. (No certificate, unknown CA, expired, not yet valid, server-only and
cross-origin are in tests/relay/test_relay_tls.py.)"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import warnings
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.internet.threads import deferToThread

from relay_helpers import connect_ws
from supervisor import certs


# TLS versions --------------------------------------------------------------------------------

def _handshake(port: int, pki: Any, client: Any, cert_dir: str, *,
               maximum: ssl.TLSVersion) -> str:
    """A stdlib client pinned to TLS 1.0 … ``maximum`` at security level 0 (so that this
    client can offer old versions at all); returns the negotiated version."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca_path)
    with warnings.catch_warnings():  # old versions on purpose: the relay must refuse them
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = maximum
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    path = os.path.join(cert_dir, "tls-client.pem")
    with open(path, "wb") as f:
        f.write(client.cert_pem() + client.key_pem())
    ctx.load_cert_chain(path)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return str(tls.version())


def _lower_security_level(options: Any) -> None:
    """Let the server's OpenSSL consider pre-1.2 handshakes at all (OpenSSL 3 forbids them
    at its default security level): what remains to refuse them is the configured minimum."""
    options.getContext().set_cipher_list(b"DEFAULT:@SECLEVEL=0")


class _Quiet(Protocol):
    pass


@pytest_twisted.ensureDeferred
async def test_tls_below_1_2_is_refused_by_the_relays_minimum(relay, sockdir):
    service = relay.start()
    # the context carries the minimum whatever OpenSSL's policy (security level) is
    options = service.tls.options.getContext().set_options(0)
    assert options & SSL.OP_NO_TLSv1 and options & SSL.OP_NO_TLSv1_1
    _lower_security_level(service.tls.options)
    pki = relay.pki
    # control: the same certificate behind a server without our minimum does speak TLS 1.1
    # here, so this client really offers it and this OpenSSL can negotiate it
    control = CertificateOptions(privateKey=pki.server.key,
                                 certificate=pki.server.cert,
                                 insecurelyLowerMinimumTo=TLSVersion.TLSv1_0)
    _lower_security_level(control)
    port = await SSL4ServerEndpoint(reactor, 0, control, interface="127.0.0.1").listen(
        Factory.forProtocol(_Quiet))
    try:
        version = await deferToThread(_handshake, port.getHost().port, pki, pki.operator,
                                      sockdir, maximum=ssl.TLSVersion.TLSv1_1)
        assert version == "TLSv1.1"
    finally:
        await port.stopListening()
    # the relay: the handshake fails with the *server's* protocol_version alert
    for maximum in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises(ssl.SSLError) as refused:
            await deferToThread(_handshake, service.https_port, pki, pki.operator, sockdir,
                                maximum=maximum)
        assert "ALERT_PROTOCOL_VERSION" in str(refused.value).upper(), refused.value
    assert service.hub.sessions == {}
    # and the same client allowed TLS 1.2 gets in
    version = await deferToThread(_handshake, service.https_port, pki, pki.operator, sockdir,
                                  maximum=ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2"


# key usage -----------------------------------------------------------------------------------

def _client_cert(ca: certs.CertKey, *, key_usage: dict[str, bool] | None,
                 eku: list[x509.ObjectIdentifier] | None) -> certs.CertKey:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(certs.make_name((("CN", "demo operator"),)))
               .issuer_name(ca.cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.key.public_key()), critical=False))
    if key_usage is not None:
        flags = dict(digital_signature=False, content_commitment=False,
                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                     key_cert_sign=False, crl_sign=False, encipher_only=False,
                     decipher_only=False)
        flags.update(key_usage)
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return certs.CertKey(cert=builder.sign(ca.key, hashes.SHA256()), key=key)


WRONG_USAGE = {
    # keyUsage without digitalSignature (nor keyAgreement): cannot sign the handshake
    "key_encipherment_only": dict(key_usage={"key_encipherment": True},
                                  eku=[ExtendedKeyUsageOID.CLIENT_AUTH]),
    "crl_sign_only": dict(key_usage={"crl_sign": True}, eku=[ExtendedKeyUsageOID.CLIENT_AUTH]),
    # extendedKeyUsage that does not include clientAuth
    "eku_server_auth_only": dict(key_usage={"digital_signature": True},
                                 eku=[ExtendedKeyUsageOID.SERVER_AUTH]),
    "eku_code_signing_only": dict(key_usage={"digital_signature": True},
                                  eku=[ExtendedKeyUsageOID.CODE_SIGNING]),
    "eku_email_only": dict(key_usage={"digital_signature": True},
                           eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION]),
}


@pytest.mark.parametrize("which", sorted(WRONG_USAGE))
@pytest_twisted.ensureDeferred
async def test_client_certificate_with_wrong_key_usage_is_refused(relay, which):
    service = relay.start()
    pki = relay.pki
    bad = _client_cert(pki.ca, **WRONG_USAGE[which])
    with pytest.raises(Exception):
        await connect_ws(service.https_port, pki, bad, timeout=3)
    assert service.hub.sessions == {}
    # control: the same builder with the right usages is accepted
    good = _client_cert(pki.ca, key_usage={"digital_signature": True},
                        eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    ws = await relay.session(good)
    await ws.next("server_hello")
    assert len(service.hub.sessions) == 1
