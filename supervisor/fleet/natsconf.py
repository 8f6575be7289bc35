"""A nats-server configuration for a fleet: TLS with client certificates mapped to users, and
each user's permissions (what it may publish and hear).

``python -m supervisor.fleet.natsconf --out nats.conf --listen 127.0.0.1:4222 --cert S.pem
--key S-key.pem --ca ca.pem --host a="CN=host-a, O=Supervisor Fleet" --gateway "CN=fleet-gateway,
O=Supervisor Fleet"`` writes it; :func:`write_nats_config` does the same from Python.

Users are certificate subjects (``verify_and_map``). A principal (RDNs in certificate order,
``", "`` between them, as the relay writes it) is given to nats-server in RFC 2253 form: RDNs
reversed, ``","`` between them (``O=Supervisor Fleet,CN=host-a``), which is what
``x509.Certificate.Subject.String()`` yields in Go. nats-server 2.9.10 was found to match either
order, with or without spaces, but other versions compare that string exactly, so it is the one
written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import attrs

from supervisor.fleet.subjects import MAX_PAYLOAD_BYTES, PREFIX, gateway_token, valid_host_id

__all__ = ["HostUser", "ClusterConfig", "rfc2253", "render_nats_config", "write_nats_config",
           "host_permissions", "gateway_permissions", "main"]


@attrs.frozen
class HostUser:
    """A host relay: its fleet id and the principal of its NATS client certificate."""

    host_id: str
    principal: str


@attrs.frozen
class ClusterConfig:
    """A nats-server cluster (routes between servers), for a multi-server deployment.

    Route connections use the server certificate as a client too, so in a cluster it needs
    both the serverAuth and the clientAuth extended key usage."""

    name: str
    listen: str
    routes: tuple[str, ...] = ()


def _split_rdns(principal: str) -> list[str]:
    """RDNs of ``"CN=a, O=b"`` (commas escaped with a backslash stay inside their value)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in principal:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ",":
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    if any(not part or "=" not in part for part in parts):
        raise ValueError(f"not a distinguished name: {principal!r}")
    return parts


def rfc2253(principal: str) -> str:
    """``"CN=host-a, O=Fleet"`` (certificate order) as ``"O=Fleet,CN=host-a"`` (RFC 2253)."""
    return ",".join(reversed(_split_rdns(principal)))


def host_permissions(host_id: str) -> dict[str, object]:
    """Publish only under ``fleet.host.<host_id>.``, answer requests, hear only its own rpc."""
    return {
        "publish": {"allow": [f"{PREFIX}.host.{host_id}.>"]},
        "subscribe": {"allow": [f"{PREFIX}.rpc.{host_id}.*"]},
        "allow_responses": True,
    }


def gateway_permissions(principal: str) -> dict[str, object]:
    """Send requests only under its own token; hear every host and its own replies."""
    return {
        "publish": {"allow": [f"{PREFIX}.rpc.*.{gateway_token(principal)}"]},
        "subscribe": {"allow": [f"{PREFIX}.host.>", "_INBOX.>"]},
    }


def _value(value: object, indent: str) -> str:
    """nats-server's config syntax (a superset of JSON) for ``value``."""
    if isinstance(value, dict):
        inner = indent + "  "
        rows = [f"{inner}{key}: {_value(item, inner)}" for key, item in value.items()]
        return "{\n" + "\n".join(rows) + f"\n{indent}}}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item, indent) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def render_nats_config(*, listen: str, cert: str, key: str, ca: str,
                       hosts: Sequence[HostUser], gateways: Sequence[str],
                       cluster: ClusterConfig | None = None,
                       tls_timeout_seconds: float = 2.0) -> str:
    """The configuration text (see the module docstring)."""
    seen: set[str] = set()
    users: list[dict[str, object]] = []
    for host in hosts:
        if not valid_host_id(host.host_id):
            raise ValueError(f"not a host id: {host.host_id!r}")
        users.append({"user": rfc2253(host.principal),
                      "permissions": host_permissions(host.host_id)})
    for principal in gateways:
        users.append({"user": rfc2253(principal), "permissions": gateway_permissions(principal)})
    for user in users:
        name = str(user["user"]).lower()
        if name in seen:
            raise ValueError(f"two users with the subject {user['user']!r}")
        seen.add(name)
    tls = {"cert_file": cert, "key_file": key, "ca_file": ca, "verify_and_map": True,
           "timeout": tls_timeout_seconds}
    lines = [
        "# nats-server configuration for a supervisor fleet (supervisor.fleet.natsconf)",
        f"listen: {_value(listen, '')}",
        f"max_payload: {MAX_PAYLOAD_BYTES}",
        f"tls: {_value(tls, '')}",
        "authorization: {",
        "  users: [",
    ]
    lines += [f"    {_value(user, '    ')}" for user in users]
    lines += ["  ]", "}"]
    if cluster is not None:
        block: dict[str, object] = {"name": cluster.name, "listen": cluster.listen,
                                    "tls": {"cert_file": cert, "key_file": key, "ca_file": ca,
                                            "timeout": tls_timeout_seconds}}
        if cluster.routes:
            block["routes"] = list(cluster.routes)
        lines.append(f"cluster: {_value(block, '')}")
    return "\n".join(lines) + "\n"


def write_nats_config(path: str, *, listen: str, cert: str, key: str, ca: str,
                      hosts: Sequence[HostUser] | dict[str, str],
                      gateways: Sequence[str], cluster: ClusterConfig | None = None) -> str:
    """Write :func:`render_nats_config`'s text to ``path`` (``hosts`` may be ``{host_id:
    principal}``); returns ``path``."""
    if isinstance(hosts, dict):
        hosts = [HostUser(host_id, principal) for host_id, principal in hosts.items()]
    cert, key, ca = (os.path.abspath(p) for p in (cert, key, ca))  # the server's cwd may differ
    text = render_nats_config(listen=listen, cert=cert, key=key, ca=ca, hosts=hosts,
                              gateways=gateways, cluster=cluster)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _host_arg(value: str) -> HostUser:
    host_id, sep, principal = value.partition("=")
    if not sep or not valid_host_id(host_id) or not principal.strip():
        raise argparse.ArgumentTypeError("must be HOST_ID=PRINCIPAL")
    return HostUser(host_id, principal.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write a fleet's nats-server configuration."""
    parser = argparse.ArgumentParser(prog="python -m supervisor.fleet.natsconf",
                                     description="Write a fleet's nats-server configuration.")
    parser.add_argument("--out", required=True, help="file to write")
    parser.add_argument("--listen", required=True, help="HOST:PORT for clients")
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument("--ca", required=True, help="CA that signed the client certificates")
    parser.add_argument("--host", action="append", type=_host_arg, default=[],
                        metavar="HOST_ID=PRINCIPAL", help="a host relay (repeatable)")
    parser.add_argument("--gateway", action="append", default=[], metavar="PRINCIPAL",
                        help="a gateway's certificate principal (repeatable)")
    parser.add_argument("--cluster", metavar="HOST:PORT", default=None,
                        help="listen for routes from other servers of a cluster")
    parser.add_argument("--cluster-name", default="fleet", help="the cluster's name")
    parser.add_argument("--route", action="append", default=[], metavar="URL",
                        help="another server's route URL, nats://host:port (repeatable)")
    args = parser.parse_args(argv)
    cluster = (ClusterConfig(args.cluster_name, args.cluster, tuple(args.route))
               if args.cluster else None)
    try:
        write_nats_config(args.out, listen=args.listen, cert=args.cert, key=args.key,
                          ca=args.ca, hosts=args.host, gateways=args.gateway, cluster=cluster)
    except ValueError as e:
        parser.error(str(e))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
