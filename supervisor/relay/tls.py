"""The relay's TLS server context: TLS 1.2+, and a required client certificate in mTLS mode.

Twisted's ``ssl:`` endpoint strings cannot require client certificates, so the context is
built as ``CertificateOptions(trustRoot=<client CA>)``; a trust root makes OpenSSL request a
certificate and fail the handshake without a valid one (unknown CA, expired, not yet valid,
or not usable for client authentication).
"""

from __future__ import annotations

import re

from twisted.internet import ssl
from twisted.internet.ssl import CertificateOptions, TLSVersion

from supervisor.config._common import ConfigError
from supervisor.config.relay import TLSConfig

__all__ = ["server_tls_options", "load_pem_certificates"]

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.S)


def _read(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror or e}") from None


def load_pem_certificates(key: str, path: str) -> list[ssl.Certificate]:
    """Every certificate in a PEM file (at least one)."""
    blocks = _PEM_CERT.findall(_read(key, path))
    if not blocks:
        raise ConfigError(key, f"{path} holds no PEM certificate")
    try:
        return [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as e:
        raise ConfigError(key, f"{path} holds an unreadable certificate: {e}") from None


def server_tls_options(tls: TLSConfig, *, require_client_certificate: bool
                       ) -> CertificateOptions:
    """CertificateOptions for the HTTPS/WSS listener (see module docstring)."""
    chain = load_pem_certificates("tls.certificate_path", tls.certificate_path)
    key_pem = _read("tls.private_key_path", tls.private_key_path)
    try:
        private = ssl.PrivateCertificate.loadPEM(chain[0].dumpPEM() + b"\n" + key_pem)
    except Exception as e:
        raise ConfigError("tls.private_key_path",
                          f"{tls.private_key_path} is not a usable key for "
                          f"{tls.certificate_path}: {e}") from None
    trust_root = None
    if require_client_certificate:
        if tls.client_ca_path is None:
            raise ConfigError("tls.client_ca_path", "is required in mTLS mode")
        trust_root = ssl.trustRootFromCertificates(
            load_pem_certificates("tls.client_ca_path", tls.client_ca_path))
    return CertificateOptions(
        privateKey=private.privateKey.original,
        certificate=private.original,
        extraCertChain=[c.original for c in chain[1:]],
        trustRoot=trust_root,
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
