"""Registration heartbeat (CONTRACTS.md §2, target side).

Sends the registration payload as soon as the IPC socket listens and then every
``registration_heartbeat_interval_seconds``; each attempt connects, writes one line and
reads one ack line within ``timeout_seconds``. Transport errors and retryable failures are
retried with capped exponential backoff with jitter (never faster than once a second, never
slower than the heartbeat interval); a non-retryable failure stops the heartbeat for good.
A missing relay never stops the target.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from supervisor.config.target import IpcConfig
from supervisor.wire.vocabulary import COMMANDS
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import NDJSONReceiver, decode, encode
from supervisor.wire.registration import CommandSpec, Registration

MAX_ACK_BYTES = 65536
MIN_RETRY_SECONDS = 1.0


def registration_payload(config: IpcConfig) -> dict[str, Any]:
    """The §2 payload: every command of §4, each with the configured command timeout."""
    return Registration(
        target_id=config.target_id,
        display_name=config.registration.display_name or config.target_id,
        ipc_path=config.path,
        lease_seconds=config.registration.lease_seconds,
        supported_commands=tuple(CommandSpec(name, False, config.command_timeout_seconds)
                                 for name in COMMANDS),
    ).to_json()


class _AckReader(NDJSONReceiver):
    """Writes the payload, fires ``ack`` with the first line the relay answers."""

    max_line_bytes = MAX_ACK_BYTES

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self._payload = payload
        self.ack: defer.Deferred[Any] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self._payload)

    def lineReceived(self, line: bytes) -> None:
        if not self.ack.called:
            try:
                self.ack.callback(decode(line, stage="registration"))
            except WireError as e:
                self.ack.errback(e)
        self.transport.loseConnection()

    def lineLengthExceeded(self) -> None:
        if not self.ack.called:
            self.ack.errback(WireError("invalid_ack", "registration", "ack line too long", None, True))
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.ack.called:
            self.ack.errback(WireError("no_ack", "registration", "relay closed without an ack", None, True))


class RegistrationHeartbeat(Service):
    """Keeps this target registered with the relay while the service runs."""

    _log = Logger()

    def __init__(self, config: IpcConfig, reactor: Any, rng: random.Random | None = None) -> None:
        self._config = config
        self._reg = config.registration
        self._reactor = reactor
        self._rng = rng or random.Random()
        self._payload = encode(registration_payload(config))
        self._call: Any = None
        self._attempt: defer.Deferred[Any] | None = None
        self._failures = 0
        self.stopped_for_good = False
        self.last_ack: dict[str, Any] | None = None
        self.acks = 0

    def begin(self) -> None:
        """Send the first registration now (called once the IPC socket listens)."""
        if self.running and not self.stopped_for_good and self._call is None and self._attempt is None:
            self._send()

    def stopService(self) -> None:
        Service.stopService(self)
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._attempt is not None:
            self._attempt.cancel()

    def _schedule(self, delay: float) -> None:
        if self.running and not self.stopped_for_good:
            self._call = self._reactor.callLater(delay, self._send)

    def _send(self) -> None:
        self._call = None
        self._attempt = defer.Deferred.fromCoroutine(self._exchange())
        self._attempt.addCallbacks(self._acked, self._failed)

    async def _exchange(self) -> Any:
        timeout = self._reg.timeout_seconds
        endpoint = UNIXClientEndpoint(self._reactor, self._reg.relay_registration_path, timeout=timeout)
        protocol = _AckReader(self._payload)
        factory = Factory.forProtocol(lambda: protocol)
        factory.noisy = False  # one connection per heartbeat: not worth two log lines each
        connecting = endpoint.connect(factory)
        connecting.addTimeout(timeout, self._reactor)
        await connecting
        ack = protocol.ack
        ack.addTimeout(timeout, self._reactor)
        try:
            return await ack
        finally:
            if protocol.transport is not None:
                protocol.transport.abortConnection()

    def _acked(self, ack: Any) -> None:
        self._attempt = None
        if not isinstance(ack, dict):
            self._retry("relay sent an ack that is not an object")
            return
        self.last_ack = ack
        if ack.get("ok") is True:
            self._failures = 0
            self.acks += 1
            self._schedule(self._reg.registration_heartbeat_interval_seconds)
            return
        error = ack.get("error") if isinstance(ack.get("error"), dict) else {}
        code, message = error.get("code", "unknown"), error.get("message", "")
        if ack.get("retryable") is True:
            self._retry(f"relay refused registration ({code}: {message})")
            return
        self.stopped_for_good = True
        self._log.error(
            "relay refused registration for good: {code}: {message}", code=code, message=message
        )

    def _failed(self, failure: Failure) -> None:
        self._attempt = None
        if failure.check(defer.CancelledError) and not self.running:
            return
        self._retry(f"registration attempt failed: {failure.getErrorMessage() or failure.type.__name__}")

    def _retry(self, why: str) -> None:
        self._failures += 1
        cap = float(self._reg.registration_heartbeat_interval_seconds)
        base = min(cap, MIN_RETRY_SECONDS * 2 ** min(self._failures - 1, 16))
        delay = max(MIN_RETRY_SECONDS, min(cap, base * (1 + self._rng.uniform(-0.2, 0.2))))
        self._log.warn("{why}; retrying in {delay:.1f} s", why=why, delay=delay)
        self._schedule(delay)
