"""The registration listener (§2): one JSON line in, one ack line out, then close.

Each connection is bounded in size (``limits.max_message_bytes``) and time
(``timeouts.registration_read_seconds``); at most ``limits.max_registration_connections`` are
handled at once (further ones are closed on accept). A bad line gets a failure ack; nothing a
peer sends can stop the listener. Registration never opens the target's IPC socket.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from supervisor.config.relay import RegistrationConfig
from supervisor.relay.registry import (
    CommandSpec,
    Registration,
    RegistrationRefused,
    Registry,
)
from supervisor.wire.ndjson import NDJSONReceiver, decode, encode
from supervisor.wire.errors import WireError
from supervisor.wire.unixsocket import listen_unix, peer_uid

__all__ = [
    "parse_registration",
    "normalise_ipc_path",
    "path_under_prefix",
    "RegistrationProtocol",
    "RegistrationFactory",
    "RegistrationListener",
]

_KEYS = frozenset({"target_id", "display_name", "ipc_path", "lease_seconds",
                   "supported_commands"})
_COMMAND_KEYS = frozenset({"name", "idempotent", "timeout_seconds"})
MAX_TARGET_ID_CHARS = 256
MAX_SUPPORTED_COMMANDS = 64


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _malformed(message: str) -> RegistrationRefused:
    return RegistrationRefused("invalid_registration_json", message, False)


def normalise_ipc_path(path: str, realpath: Callable[[str], str] = os.path.realpath) -> str:
    """Resolve ``..`` and symlinked parent directories; the final component is kept as is."""
    head, tail = os.path.split(path)
    if tail in ("", ".", ".."):
        return realpath(path)
    return os.path.join(realpath(head or "/"), tail)


def path_under_prefix(path: str, prefix: str) -> bool:
    """True when ``path`` lies strictly below directory ``prefix``, compared by components."""
    parts = [p for p in path.split("/") if p]
    prefix_parts = [p for p in prefix.split("/") if p]
    return len(parts) > len(prefix_parts) and parts[: len(prefix_parts)] == prefix_parts


def parse_registration(line: bytes, config: RegistrationConfig) -> Registration:
    """Validate one registration line with every §2 check up to (not incl.) the registry's."""
    try:
        payload = decode(line, stage="registration")
    except WireError as e:
        raise _malformed(e.message) from None
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
    if not isinstance(target_id, str) or len(target_id) > MAX_TARGET_ID_CHARS:
        raise _malformed(f"target_id must be a string of at most {MAX_TARGET_ID_CHARS} chars")
    if display_name is not None and not isinstance(display_name, str):
        raise _malformed("display_name must be a string")
    if not isinstance(ipc_path, str) or "\x00" in ipc_path:
        raise _malformed("ipc_path must be a string")
    if lease is not None and not _is_int(lease):
        raise _malformed("lease_seconds must be an integer")
    if not isinstance(commands, list) or len(commands) > MAX_SUPPORTED_COMMANDS:
        raise _malformed(f"supported_commands must be a list of at most "
                         f"{MAX_SUPPORTED_COMMANDS} objects")
    for item in commands:
        if not isinstance(item, dict) or set(item) != _COMMAND_KEYS:
            raise _malformed("each supported command must have exactly name, idempotent, "
                             "timeout_seconds")
        if (not isinstance(item["name"], str) or not isinstance(item["idempotent"], bool)
                or not _is_int(item["timeout_seconds"])):
            raise _malformed("supported command fields have the wrong types")

    if not target_id.strip():
        raise RegistrationRefused("empty_target_id", "target_id must not be blank", False)
    if not os.path.isabs(ipc_path):
        raise RegistrationRefused("relative_ipc_path",
                                  f"ipc_path {ipc_path!r} is not absolute", False)
    resolved = normalise_ipc_path(ipc_path)
    allowed = [os.path.realpath(p) for p in config.allowed_ipc_path_prefixes]
    if not any(path_under_prefix(resolved, prefix) for prefix in allowed):
        raise RegistrationRefused(
            "ipc_path_not_allowed",
            f"ipc_path {resolved} is not under an allowed prefix ({', '.join(allowed)})",
            False,
        )
    lease_seconds = config.default_lease_seconds if lease is None else lease
    if lease_seconds <= 0 or lease_seconds > config.max_lease_seconds:
        raise RegistrationRefused(
            "invalid_lease_seconds",
            f"lease_seconds must be between 1 and {config.max_lease_seconds}", False)
    specs = []
    for item in commands:
        if not item["name"].strip() or item["timeout_seconds"] <= 0:
            raise RegistrationRefused(
                "unsupported_command_schema",
                "supported commands need a non-blank name and timeout_seconds > 0", False)
        specs.append(CommandSpec(item["name"], item["idempotent"], item["timeout_seconds"]))
    if os.path.islink(resolved):
        raise RegistrationRefused("invalid_ipc_path",
                                  f"ipc_path {resolved} is a symbolic link", False)
    return Registration(
        target_id=target_id,
        display_name=display_name if display_name else target_id,
        ipc_path=resolved,
        lease_seconds=lease_seconds,
        supported_commands=tuple(specs),
    )


class RegistrationProtocol(NDJSONReceiver):
    """Handles one registration connection: read a line, ack it, close."""

    log = Logger()
    factory: "RegistrationFactory"

    def __init__(self) -> None:
        super().__init__()
        self._timer: IDelayedCall | None = None
        self._done = False
        self._counted = False

    def connectionMade(self) -> None:
        f = self.factory
        self.max_line_bytes = f.max_line_bytes
        if f.active >= f.max_connections:
            self._done = True
            self.transport.abortConnection()
            return
        f.active += 1
        self._counted = True
        self._timer = f.clock.callLater(f.read_timeout, self._timedOut)
        try:
            uid = peer_uid(self.transport.getHandle())
            self._owner = f"unix_uid:{uid}" if uid is not None else "unix_uid:unknown"
        except OSError as e:
            self._refuse(RegistrationRefused("peer_credentials_unavailable",
                                             f"cannot read peer credentials: {e}", False))

    def lineReceived(self, line: bytes) -> None:
        if self._done:
            return
        try:
            registration = parse_registration(line, self.factory.config)
            entry = self.factory.registry.register(registration, self._owner)
        except RegistrationRefused as refused:
            self._refuse(refused)
            return
        except Exception:
            self.log.failure("registration handling failed")
            self._refuse(RegistrationRefused("internal_error", "relay failed to register",
                                             True))
            return
        self._finish({"ok": True, "target_id": entry.target_id, "status": "registered",
                      "retryable": False})

    def lineLengthExceeded(self) -> None:
        self._refuse(_malformed(f"registration line exceeds {self.max_line_bytes} bytes"))

    def _timedOut(self) -> None:
        self._timer = None
        self._refuse(RegistrationRefused(
            "registration_timeout",
            f"no complete registration line within {self.factory.read_timeout:g} s", True))

    def _refuse(self, refused: RegistrationRefused) -> None:
        self.log.info("registration refused: {code}: {message}", code=refused.code,
                      message=refused.message)
        self._finish(refused.to_ack())

    def _finish(self, ack: dict[str, Any]) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        # the ack is one short line: a peer that does not read it is cut off by close
        self.transport.write(encode(ack))
        self.transport.loseConnection()
        self.factory.clock.callLater(self.factory.read_timeout, self._abortIfStuck)

    def _abortIfStuck(self) -> None:
        if self.transport is not None and self.transport.connected:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._done = True
        if self._counted:
            self.factory.active -= 1
            self._counted = False


class RegistrationFactory(Factory):
    """Shared state of the registration listener (config, registry, clock, counters)."""

    protocol = RegistrationProtocol
    noisy = False

    def __init__(self, config: RegistrationConfig, registry: Registry, clock: IReactorTime,
                 *, read_timeout: float, max_line_bytes: int, max_connections: int) -> None:
        self.config = config
        self.registry = registry
        self.clock = clock
        self.read_timeout = read_timeout
        self.max_line_bytes = max_line_bytes
        self.max_connections = max_connections
        self.active = 0


class RegistrationListener(Service):
    """Listens on ``registration.listen_path`` with its mode in force at bind time."""

    log = Logger()

    def __init__(self, reactor: Any, factory: RegistrationFactory) -> None:
        self._reactor = reactor
        self.factory = factory
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self.port is not None:
            return
        config = self.factory.config
        os.makedirs(os.path.dirname(config.listen_path), mode=0o700, exist_ok=True)
        self.port = listen_unix(self._reactor, config.listen_path, self.factory,
                                config.permissions)
        self.log.info("registration listening on {path}", path=config.listen_path)

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None
