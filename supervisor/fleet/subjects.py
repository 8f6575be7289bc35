"""The fleet's NATS subjects and the tokens in them.

Every subject starts with :data:`PREFIX`. A host publishes only under
``fleet.host.<host_id>.``; a gateway publishes only requests ``fleet.rpc.<host_id>.<its
token>``, so a host knows from the subject alone which gateway principal asked (nats-server
enforces both; :mod:`supervisor.fleet.natsconf` writes those permissions).
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "PREFIX", "HOST_ID_PATTERN", "valid_host_id", "gateway_token", "target_token",
    "fleet_target_id", "split_fleet_target_id", "heartbeat_subject", "registry_subject",
    "stream_subject", "rpc_subject", "ALL_HEARTBEATS", "ALL_REGISTRIES", "host_rpc_pattern",
    "MAX_PAYLOAD_BYTES",
]

PREFIX = "fleet"
HOST_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PLAIN_TOKEN = HOST_ID_PATTERN
#: the largest message either side sends (nats-server's default ``max_payload``)
MAX_PAYLOAD_BYTES = 1024 * 1024


def valid_host_id(host_id: object) -> bool:
    """A host id is one subject token: letters, digits, ``_`` and ``-``, 1–64 of them."""
    return isinstance(host_id, str) and HOST_ID_PATTERN.fullmatch(host_id) is not None


def gateway_token(principal: str) -> str:
    """The subject token standing for a gateway's principal (its certificate subject)."""
    return hashlib.sha256(principal.encode("utf-8")).hexdigest()[:20]


def target_token(target_id: str) -> str:
    """A local target id as one subject token: itself when it is plain, else a digest."""
    if _PLAIN_TOKEN.fullmatch(target_id):
        return target_id
    return "~" + hashlib.sha256(target_id.encode("utf-8")).hexdigest()[:32]


def fleet_target_id(host_id: str, target_id: str) -> str:
    """The id a gateway's sessions know a host's target by."""
    return f"{host_id}/{target_id}"


def split_fleet_target_id(fleet_id: str) -> tuple[str, str] | None:
    """``(host_id, target_id)`` of a fleet id, or ``None`` when it is not one."""
    host_id, sep, target_id = fleet_id.partition("/")
    if not sep or not target_id or not valid_host_id(host_id):
        return None
    return host_id, target_id


def heartbeat_subject(host_id: str) -> str:
    return f"{PREFIX}.host.{host_id}.heartbeat"


def registry_subject(host_id: str) -> str:
    return f"{PREFIX}.host.{host_id}.registry"


def stream_subject(host_id: str, target_id: str) -> str:
    return f"{PREFIX}.host.{host_id}.stream.{target_token(target_id)}"


def rpc_subject(host_id: str, principal: str) -> str:
    return f"{PREFIX}.rpc.{host_id}.{gateway_token(principal)}"


def host_rpc_pattern(host_id: str) -> str:
    """What a host subscribes to for the requests of every gateway."""
    return f"{PREFIX}.rpc.{host_id}.*"


ALL_HEARTBEATS = f"{PREFIX}.host.*.heartbeat"
ALL_REGISTRIES = f"{PREFIX}.host.*.registry"
