"""The relay's TLS server context: TLS 1.2+, and a required client certificate in mTLS mode.

Twisted's ``ssl:`` endpoint strings cannot require client certificates, so the context is
built as ``CertificateOptions(trustRoot=<client CA>)``; a trust root makes OpenSSL request a
certificate and fail the handshake without a valid one (unknown CA, expired, not yet valid,
or not usable for client authentication).
"""

from __future__ import annotations

import re

from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger
from zope.interface import implementer

from supervisor.config._common import ConfigError
from supervisor.config.relay import TLSConfig

__all__ = ["server_tls_options", "load_pem_certificates", "ReloadableServerTLS"]

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
    # pyOpenSSL takes the certificate, key and chain as cryptography objects (its own X509
    # and PKey there are deprecated); the trust root's store still takes X509.
    return CertificateOptions(
        privateKey=private.privateKey.original.to_cryptography_key(),
        certificate=private.original.to_cryptography(),
        extraCertChain=[c.original.to_cryptography() for c in chain[1:]],
        trustRoot=trust_root,
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerTLS:
    """The listener's TLS settings, replaceable at run time (``SIGHUP``, see docs).

    Each new connection takes the options current at its accept; established connections
    keep the context they were made with. :meth:`reload` re-reads the certificate, key and
    client CA files; if they cannot be used together the old options stay in force and the
    error is returned (and logged loudly), so a half-written replacement never takes the
    listener down.
    """

    log = Logger()

    def __init__(self, tls: Any, *, require_client_certificate: bool) -> None:
        self._tls = tls
        self._require = require_client_certificate
        self.options = self._load()
        self.generation = 1

    def _load(self) -> CertificateOptions:
        options = server_tls_options(self._tls, require_client_certificate=self._require)
        try:
            options.getContext()  # certificate/key mismatch and unreadable CAs fail here
        except SSL.Error as e:
            raise ConfigError("tls.private_key_path",
                              f"certificate and key cannot be used together: {e}") from None
        return options

    def reload(self) -> str | None:
        """Swap in freshly read certificates; returns None, or why the old ones were kept."""
        try:
            options = self._load()
        except ConfigError as e:
            self.log.critical("TLS reload failed, keeping the previous certificates: "
                              "{error}", error=str(e))
            return str(e)
        self.options = options
        self.generation += 1
        self.log.warn("TLS certificates reloaded from {cert} (generation {generation}); "
                      "new connections use them", cert=self._tls.certificate_path,
                      generation=self.generation)
        return None

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return self.options.serverConnectionForTLS(tlsProtocol)
