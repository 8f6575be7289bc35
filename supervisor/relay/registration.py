"""The registration listener (§2): one JSON line in, one ack line out, then close.

Each connection is bounded in size (``limits.max_message_bytes``) and time
(``timeouts.registration_read_seconds``); at most ``limits.max_registration_connections`` are
handled at once (further ones are closed on accept). A bad line gets a failure ack; nothing a
peer sends can stop the listener. Registration never opens the target's IPC socket.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from supervisor.config.relay import RegistrationConfig
from supervisor.relay.registry import Registry
from supervisor.wire.ndjson import NDJSONReceiver, decode, encode
from supervisor.wire.errors import WireError
from supervisor.wire.registration import Registration, RegistrationRefused
from supervisor.wire.unixsocket import (SocketPathInUse, clear_stale_socket, listen_unix,
                                        peer_uid)

__all__ = [
    "parse_registration",
    "normalise_ipc_path",
    "path_under_prefix",
    "check_ipc_path",
    "RegistrationProtocol",
    "RegistrationFactory",
    "RegistrationListener",
]


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


@attrs.frozen
class _RelayRules:
    """The §2 checks that take the relay's configuration (a ``RegistrationPolicy``)."""

    config: RegistrationConfig

    def ipc_path(self, path: str) -> str:
        resolved = normalise_ipc_path(path)
        allowed = [os.path.realpath(p) for p in self.config.allowed_ipc_path_prefixes]
        if not any(path_under_prefix(resolved, prefix) for prefix in allowed):
            raise RegistrationRefused(
                "ipc_path_not_allowed",
                f"ipc_path {resolved} is not under an allowed prefix ({', '.join(allowed)})",
                False,
            )
        return resolved

    def lease_seconds(self, requested: int | None) -> int:
        lease = self.config.default_lease_seconds if requested is None else requested
        if lease <= 0 or lease > self.config.max_lease_seconds:
            raise RegistrationRefused(
                "invalid_lease_seconds",
                f"lease_seconds must be between 1 and {self.config.max_lease_seconds}", False)
        return lease


def _no_final_symlink(path: str) -> None:
    if os.path.islink(path):
        raise RegistrationRefused("invalid_ipc_path", f"ipc_path {path} is a symbolic link",
                                  False)


def check_ipc_path(path: str, config: RegistrationConfig) -> str:
    """The path checks of registration, again: ``path`` resolved now (symlinked parents
    followed) must still lie under an allowed prefix and not end in a symlink. The relay
    runs this before every IPC connect, since the folders may have changed since."""
    resolved = _RelayRules(config).ipc_path(path)
    _no_final_symlink(resolved)
    return resolved


def parse_registration(line: bytes, config: RegistrationConfig) -> Registration:
    """Validate one registration line with every §2 check up to (not incl.) the registry's."""
    try:
        payload = decode(line, stage="registration")
    except WireError as e:
        raise _malformed(e.message) from None
    registration = Registration.from_json(payload, _RelayRules(config))
    _no_final_symlink(registration.ipc_path)
    return registration


class RegistrationProtocol(NDJSONReceiver):
    """Handles one registration connection: read a line, ack it, close."""

    log = Logger()
    factory: "RegistrationFactory"

    def __init__(self) -> None:
        super().__init__()
        self._timer: IDelayedCall | None = None
        self._stuck_timer: IDelayedCall | None = None
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
        owner = getattr(self, "_owner", "unix_uid:unknown")
        if refused.code == "target_id_owner_mismatch":
            self.log.warn("registration refused: {code}: {message} (from {owner})",
                          code=refused.code, message=refused.message, owner=owner)
        else:
            self.log.info("registration refused: {code}: {message}", code=refused.code,
                          message=refused.message)
        if self.factory.on_refused is not None:
            self.factory.on_refused(refused.code)
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
        # cancelled as soon as the connection is gone: a pending timer would keep this
        # protocol and its transport alive for read_timeout after every registration
        self._stuck_timer = self.factory.clock.callLater(self.factory.read_timeout,
                                                         self._abortIfStuck)

    def _abortIfStuck(self) -> None:
        self._stuck_timer = None
        if self.transport is not None and self.transport.connected:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        stuck, self._stuck_timer = self._stuck_timer, None
        if stuck is not None and stuck.active():
            stuck.cancel()
        self._done = True
        if self._counted:
            self.factory.active -= 1
            self._counted = False


class RegistrationFactory(Factory):
    """Shared state of the registration listener (config, registry, clock, counters)."""

    protocol = RegistrationProtocol
    noisy = False

    def __init__(self, config: RegistrationConfig, registry: Registry, clock: IReactorTime,
                 *, read_timeout: float, max_line_bytes: int, max_connections: int,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.registry = registry
        self.clock = clock
        self.read_timeout = read_timeout
        self.max_line_bytes = max_line_bytes
        self.max_connections = max_connections
        self.active = 0
        #: told the code of every refused registration (the relay's metrics count them)
        self.on_refused = on_refused


def _private_name(path: str) -> str:
    """Where the listening port binds: beside ``path``, hidden (see RegistrationListener)."""
    head, tail = os.path.split(path)
    return os.path.join(head, "." + tail)


class RegistrationListener(Service):
    """Listens on ``registration.listen_path`` with its mode in force at bind time.

    Twisted's Unix port removes the path it bound when it stops, whatever file is there by
    then. So the port binds a private name beside the path (``.<name>``), and the path itself
    is a second (hard) link to that socket: stopping removes the private name, and the path
    is removed only while it still is this socket (same inode), never a file someone else
    put there.

    A watchdog (every ``check_interval`` seconds, the lease-sweep cadence) checks that the
    socket file is still the one we bound. When it was deleted or replaced, that is logged
    at critical level and the listener re-binds: a deleted path is recreated at once; a path
    now held by something else (a live socket, a regular file) is never touched, and the
    re-bind is retried (and the failure logged) on every check until the path is free.
    Connections already accepted are not affected.
    """

    log = Logger()

    def __init__(self, reactor: Any, factory: RegistrationFactory,
                 check_interval: float | None = None) -> None:
        self._reactor = reactor
        self.factory = factory
        self.port: IListeningPort | None = None
        self.inode: int | None = None
        self.rebinds = 0
        self.rebind_error: str | None = None
        self._rebinding = False
        self._watchdog: LoopingCall | None = None
        if check_interval is not None:
            self._watchdog = LoopingCall(self.check_socket)
            self._watchdog.clock = reactor
            self._check_interval = check_interval

    @property
    def _path(self) -> str:
        return self.factory.config.listen_path

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen_or_exit()

    def startService(self) -> None:
        super().startService()
        self._listen_or_exit()
        if self._watchdog is not None and not self._watchdog.running:
            self._watchdog.start(self._check_interval, now=False)

    def _listen_or_exit(self) -> None:
        """At start-up a path we cannot use ends start-up with a clear message."""
        try:
            self._listen()
        except (SocketPathInUse, OSError, CannotListenError) as e:
            raise SystemExit(f"cannot listen for registrations on {self._path}: {e}") from None

    def _listen(self) -> None:
        if self.port is not None:
            return
        path, private = self._path, _private_name(self._path)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        clear_stale_socket(path)
        port = listen_unix(self._reactor, private, self.factory,
                           self.factory.config.permissions)
        try:
            os.link(private, path)
        except OSError:
            port.stopListening()
            raise
        self.port, self.inode = port, os.lstat(private).st_ino
        self.log.info("registration listening on {path}", path=path)

    def socket_intact(self) -> bool:
        """True when the path still holds the socket this listener bound."""
        if self.port is None:
            return False
        try:
            return os.lstat(self._path).st_ino == self.inode
        except OSError:
            return False

    def _unlisten(self) -> Deferred[None]:
        """Stop listening; the path goes too if it still is our socket."""
        port, intact = self.port, self.socket_intact()
        self.port = self.inode = None
        if port is None:
            return succeed(None)
        if intact:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
        return maybeDeferred(port.stopListening)

    def check_socket(self) -> Deferred[None] | None:
        """The watchdog's check; re-binds when the socket file is gone or not ours."""
        if self._rebinding or not self.running:
            return None
        if self.port is not None and self.socket_intact():
            return None
        path = self._path
        if self.port is not None:
            what = "was replaced by something else" if os.path.lexists(path) else \
                "was deleted"
            self.log.critical("registration socket {path} {what}; targets cannot register "
                              "until it is re-bound; re-binding", path=path, what=what)
        self._rebinding = True
        d = self._unlisten()

        def rebind(_: Any) -> None:
            self._rebinding = False
            if not self.running:
                return
            try:
                self._listen()
            except (SocketPathInUse, OSError, CannotListenError) as e:
                message = str(e)
                if message != self.rebind_error:
                    self.log.critical("cannot re-bind registration socket {path}: {error}; "
                                      "retrying every check", path=path, error=message)
                self.rebind_error = message
                return
            self.rebinds += 1
            self.rebind_error = None
            self.log.warn("registration socket {path} re-bound", path=path)

        d.addCallback(rebind)
        d.addErrback(lambda f: self.log.failure("re-binding the registration socket failed",
                                                f))
        return d

    def stopService(self) -> Any:
        super().stopService()
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        return self._unlisten()
