"""The registration payload of CONTRACTS.md §2 and its failure ack.

:meth:`Registration.from_json` runs the §2 checks in the contract's order, each failure a
:class:`RegistrationRefused` with the contract's code. Two of them depend on where the payload
is read: which ``ipc_path`` prefixes are allowed and which leases are granted. A relay passes
those as a :class:`RegistrationPolicy`, applied at their place in the order; without one only
the contract's own rules hold (an absolute path, a lease within ``LEASE_SECONDS_RANGE``). The
checks that follow the model's (symlinks, owners, conflicts) are the relay's.

Numbers (:mod:`supervisor.wire.bounds`): ``lease_seconds`` and ``timeout_seconds`` that are
not integers, or beyond what a JavaScript client reads exactly, are malformed
(``invalid_registration_json``); a lease outside the granted range is
``invalid_lease_seconds`` and a timeout outside ``COMMAND_TIMEOUT_SECONDS_RANGE`` is
``unsupported_command_schema``, the contract's code for a timeout of 0.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import attrs

from supervisor.wire.bounds import (COMMAND_TIMEOUT_SECONDS_RANGE, LEASE_SECONDS_RANGE,
                                     SAFE_INT_MAX, int_in)

__all__ = ["CommandSpec", "Registration", "RegistrationPolicy", "RegistrationRefused",
           "MAX_TARGET_ID_CHARS", "MAX_DISPLAY_NAME_CHARS", "MAX_SUPPORTED_COMMANDS"]

MAX_TARGET_ID_CHARS = 256
MAX_DISPLAY_NAME_CHARS = 256  # every target_list carries every name: keep them short
MAX_SUPPORTED_COMMANDS = 64
_KEYS = frozenset({"target_id", "display_name", "ipc_path", "lease_seconds",
                   "supported_commands"})
_COMMAND_KEYS = frozenset({"name", "idempotent", "timeout_seconds"})


@attrs.define(auto_exc=True, eq=False)
class RegistrationRefused(Exception):
    """A failed registration; becomes the §2 failure ack."""

    code: str
    message: str
    retryable: bool = False

    def to_ack(self) -> dict[str, Any]:
        return {"ok": False, "error": {"code": self.code, "message": self.message},
                "retryable": self.retryable}


class RegistrationPolicy(Protocol):
    """The reader's rules for what §2 leaves open (a relay's configuration)."""

    def ipc_path(self, path: str) -> str:
        """The path to record for an absolute ``path``, or ``ipc_path_not_allowed``."""

    def lease_seconds(self, requested: int | None) -> int:
        """The lease to grant (``requested`` is None when the payload has none), or
        ``invalid_lease_seconds``."""


class _ContractRules:
    """The policy of a reader without one: any absolute path, a lease in LEASE_SECONDS_RANGE."""

    def ipc_path(self, path: str) -> str:
        return path

    def lease_seconds(self, requested: int | None) -> int:
        low, high = LEASE_SECONDS_RANGE
        if requested is None or not low <= requested <= high:
            raise RegistrationRefused("invalid_lease_seconds",
                                      f"lease_seconds must be an integer from {low} to {high}")
        return requested


def _malformed(message: str) -> RegistrationRefused:
    return RegistrationRefused("invalid_registration_json", message)


def _is_int(value: Any) -> bool:
    """An integer, not a boolean, that a JavaScript client reads exactly."""
    return int_in(value, (-SAFE_INT_MAX, SAFE_INT_MAX))


def _is_text(value: Any) -> bool:
    """A str that is valid Unicode: JSON escapes can smuggle in lone surrogates (``\\ud800``),
    which no UTF-8 wire, log file or path can carry later."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@attrs.frozen
class CommandSpec:
    """One entry of a registration's ``supported_commands``."""

    name: str
    idempotent: bool
    timeout_seconds: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "idempotent": self.idempotent,
                "timeout_seconds": self.timeout_seconds}


@attrs.frozen
class Registration:
    """A §2 payload; read by a relay, ``ipc_path`` is the path its policy recorded."""

    target_id: str
    display_name: str
    ipc_path: str
    lease_seconds: int
    supported_commands: tuple[CommandSpec, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "target_id": self.target_id,
            "display_name": self.display_name,
            "ipc_path": self.ipc_path,
            "lease_seconds": self.lease_seconds,
            "supported_commands": [c.to_json() for c in self.supported_commands],
        }

    def command(self, name: str) -> CommandSpec | None:
        """The registered spec of ``name``, if the target supports it."""
        for spec in self.supported_commands:
            if spec.name == name:
                return spec
        return None

    @classmethod
    def from_json(cls, payload: Any, policy: RegistrationPolicy | None = None) -> Registration:
        """Validate a decoded payload: the shape (``invalid_registration_json``), then
        ``empty_target_id``, ``relative_ipc_path``, the policy's path and lease checks and
        ``unsupported_command_schema``, in that order. ``lease_seconds`` may be absent or
        null (the policy decides) and a null or empty ``display_name`` is the target id."""
        rules = policy if policy is not None else _ContractRules()
        if not isinstance(payload, dict):
            raise _malformed("registration must be a JSON object")
        unknown = sorted(set(payload) - _KEYS)
        if unknown:
            raise _malformed(f"unknown key {unknown[0]!r}")
        missing = sorted(_KEYS - set(payload) - {"lease_seconds"})
        if missing:
            raise _malformed(f"missing key {missing[0]!r}")
        target_id, display_name, ipc_path = (payload["target_id"], payload["display_name"],
                                             payload["ipc_path"])
        lease, commands = payload.get("lease_seconds"), payload["supported_commands"]
        if not _is_text(target_id) or len(target_id) > MAX_TARGET_ID_CHARS:
            raise _malformed(f"target_id must be a string of at most {MAX_TARGET_ID_CHARS} "
                             "chars")
        if display_name is not None and (not _is_text(display_name)
                                         or len(display_name) > MAX_DISPLAY_NAME_CHARS):
            raise _malformed(f"display_name must be a string of at most "
                             f"{MAX_DISPLAY_NAME_CHARS} chars")
        if not _is_text(ipc_path) or "\x00" in ipc_path:
            raise _malformed("ipc_path must be a string")
        if lease is not None and not _is_int(lease):
            raise _malformed(f"lease_seconds must be an integer of at most {SAFE_INT_MAX}")
        if not isinstance(commands, list) or len(commands) > MAX_SUPPORTED_COMMANDS:
            raise _malformed(f"supported_commands must be a list of at most "
                             f"{MAX_SUPPORTED_COMMANDS} objects")
        for item in commands:
            if not isinstance(item, dict) or set(item) != _COMMAND_KEYS:
                raise _malformed("each supported command must have exactly name, idempotent, "
                                 "timeout_seconds")
            if (not _is_text(item["name"]) or not isinstance(item["idempotent"], bool)
                    or not _is_int(item["timeout_seconds"])):
                raise _malformed("supported command fields have the wrong types (name: string, "
                                 "idempotent: boolean, timeout_seconds: integer of at most "
                                 f"{SAFE_INT_MAX})")

        if not target_id.strip():
            raise RegistrationRefused("empty_target_id", "target_id must not be blank")
        if not os.path.isabs(ipc_path):
            raise RegistrationRefused("relative_ipc_path",
                                      f"ipc_path {ipc_path!r} is not absolute")
        recorded_path = rules.ipc_path(ipc_path)
        lease_seconds = rules.lease_seconds(lease)
        specs = []
        low, high = COMMAND_TIMEOUT_SECONDS_RANGE
        for item in commands:
            if not item["name"].strip() or not low <= item["timeout_seconds"] <= high:
                raise RegistrationRefused(
                    "unsupported_command_schema",
                    f"supported commands need a non-blank name and timeout_seconds from {low} "
                    f"to {high}")
            specs.append(CommandSpec(item["name"], item["idempotent"], item["timeout_seconds"]))
        return cls(
            target_id=target_id,
            display_name=display_name or target_id,
            ipc_path=recorded_path,
            lease_seconds=lease_seconds,
            supported_commands=tuple(specs),
        )
