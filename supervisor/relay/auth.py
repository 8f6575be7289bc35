"""Session identities (§3) and command authorization (relay config ``authorization``)."""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from supervisor.config.relay import AuthorizationConfig
from supervisor.wire.vocabulary import COMMANDS

__all__ = ["Identity", "identity_from_certificate", "identity_from_proxy_header",
           "principal_of", "Authorizer"]


@attrs.frozen
class Identity:
    """Who is on the other end of a session, and how we know."""

    client_identity: str
    principal: str
    source: str  # "mtls" | "trusted_proxy"

    def to_json(self) -> dict[str, Any]:
        return {"client_identity": self.client_identity, "principal": self.principal,
                "source": self.source}


def principal_of(name: x509.Name) -> str:
    """Subject DN with RDNs in certificate order, ``", "`` separated (``O=Ops, CN=alice``)."""
    return ", ".join(rdn.rfc4514_string() for rdn in name.rdns)


def identity_from_certificate(cert: x509.Certificate) -> Identity:
    """mTLS identity: SHA-256 fingerprint of the leaf DER and the subject principal."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return Identity(
        client_identity="mtls_cert_fingerprint:" + hashlib.sha256(der).hexdigest(),
        principal=principal_of(cert.subject),
        source="mtls",
    )


def identity_from_proxy_header(value: str) -> Identity:
    """Trusted-proxy identity: the header value is the verified subject."""
    value = value.strip()
    return Identity(client_identity=f"trusted_proxy:{value}", principal=value,
                    source="trusted_proxy")


class Authorizer:
    """Maps principals to the commands they may run; no grant means read-only."""

    def __init__(self, config: AuthorizationConfig) -> None:
        self._grants: dict[str, frozenset[str]] = {}
        for grant in config.operators:
            self._grants[grant.principal] = self._grants.get(grant.principal,
                                                             frozenset()) | grant.commands

    def permits(self, identity: Identity, command: str) -> bool:
        return command in self._grants.get(identity.principal, frozenset())

    def permitted(self, identity: Identity) -> list[str]:
        """The commands ``identity`` may run, in the contract's order (for ``server_hello``)."""
        granted = self._grants.get(identity.principal, frozenset())
        return [c for c in COMMANDS if c in granted]
