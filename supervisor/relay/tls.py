"""The relay's TLS server context: TLS 1.2+, and a required client certificate in mTLS mode.

Twisted's ``ssl:`` endpoint strings cannot require client certificates, so the context is
built as ``CertificateOptions(trustRoot=<client CA>)``; a trust root makes OpenSSL request a
certificate and fail the handshake without a valid one (unknown CA, expired, not yet valid,
or not usable for client authentication).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger
from zope.interface import implementer

from supervisor.config._common import ConfigError
from supervisor.config.relay import TLSConfig

__all__ = ["server_tls_options", "load_pem_certificates", "ReloadableServerTLS",
           "check_certificates"]

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


def _validity(key: str, path: str, cert: x509.Certificate, now: datetime.datetime) -> None:
    subject = cert.subject.rfc4514_string() or "(no subject)"
    if cert.not_valid_after_utc <= now:
        raise ConfigError(key, f"{path}: certificate {subject} expired on "
                               f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    if cert.not_valid_before_utc > now:
        raise ConfigError(key, f"{path}: certificate {subject} is not valid before "
                               f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return bool(usage.key_cert_sign)


def _dns_matches(pattern: str, host: str) -> bool:
    """RFC 6125 matching: exact (case-insensitive), or ``*.`` for exactly one left label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def _host_in_certificate(host: str, cert: x509.Certificate) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False  # browsers match names against subjectAltName only
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return any(_dns_matches(name, host) for name in san.get_values_for_type(x509.DNSName))
    return address in san.get_values_for_type(x509.IPAddress)


def check_certificates(tls: TLSConfig, *, require_client_certificate: bool,
                       public_url: str | None, now: datetime.datetime | None = None) -> None:
    """What OpenSSL would accept but no browser or client could use: an expired or not yet
    valid server certificate or client CA, a client CA that is not a CA certificate, a
    ``public_url`` host the server certificate does not name. ``ConfigError`` on the first."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    server = load_pem_certificates("tls.certificate_path", tls.certificate_path)
    leaf = server[0].original.to_cryptography()
    for cert in server:
        _validity("tls.certificate_path", tls.certificate_path,
                  cert.original.to_cryptography(), now)
    if public_url is not None:
        host = urlsplit(public_url).hostname or ""
        if not _host_in_certificate(host, leaf):
            raise ConfigError("listen.public_url",
                              f"host {host!r} is not named in the server certificate "
                              f"{tls.certificate_path} (subjectAltName); browsers would "
                              f"refuse the connection")
    if require_client_certificate and tls.client_ca_path is not None:
        for ca in load_pem_certificates("tls.client_ca_path", tls.client_ca_path):
            cert = ca.original.to_cryptography()
            if not _is_ca(cert):
                raise ConfigError("tls.client_ca_path",
                                  f"{tls.client_ca_path}: {cert.subject.rfc4514_string()} is "
                                  f"not a CA certificate (no basicConstraints CA:TRUE with "
                                  f"keyCertSign)")
            _validity("tls.client_ca_path", tls.client_ca_path, cert, now)


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
        # an expired replacement, or a leaf put where the client CA goes, is refused too
        check_certificates(self._tls, require_client_certificate=self._require,
                           public_url=None)
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
