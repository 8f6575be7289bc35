"""Registration heartbeat (CONTRACTS.md §2, target side).

Sends the registration payload as soon as the IPC socket listens and then every
``registration_heartbeat_interval_seconds``; each attempt connects, writes one line and
reads one ack line within ``timeout_seconds``. Transport errors and retryable failures are
retried with capped exponential backoff (:mod:`supervisor._backoff`) spread by
``retry_jitter_ratio``, never faster than once a second and never slower than the heartbeat
interval; a non-retryable failure stops the heartbeat for good, except
``target_id_owner_mismatch``: the relay remembers another uid as the owner of this target id
(or the id is pinned to another uid), which an operator can change while this target runs, so
that refusal is logged as an error every time and retried with the same backoff. A missing
relay never stops the target.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Protocol

from automat import TypeMachineBuilder
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from supervisor._backoff import retry_policy
from supervisor.config.target import IpcConfig
from supervisor.tree.descendants import start_time
from supervisor.wire.unixsocket import peer_credentials
from supervisor.wire.vocabulary import COMMANDS
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import NDJSONReceiver, decode, encode
from supervisor.wire.registration import CommandSpec, Registration

MAX_ACK_BYTES = 65536
MIN_RETRY_SECONDS = 1.0
#: the refusal retried (loudly) although the relay marks it non-retryable
CONTESTED_CODE = "target_id_owner_mismatch"


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
        #: ``(pid, start time)`` of the relay's process (SO_PEERCRED), when readable
        self.peer: tuple[int, str | None] | None = None

    def connectionMade(self) -> None:
        handle = getattr(self.transport, "getHandle", None)  # an in-memory transport has none
        try:
            creds = peer_credentials(handle()) if handle is not None else None
        except OSError:
            creds = None
        if creds is not None:
            self.peer = (creds[0], start_time(creds[0]))
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
    """Keeps this target registered with the relay while the service runs.

    Its lifecycle is an Automat machine: ``idle`` → ``sending`` (:meth:`begin`: the IPC socket
    listens) → ``registered`` (acked; the next heartbeat is due after the interval) or
    ``retrying`` (a transport error or retryable refusal; due after a backoff delay) →
    ``sending`` …; a non-retryable refusal ends in ``gave_up`` until the process restarts,
    except a contested id (:data:`CONTESTED_CODE`), which is ``retrying`` with an error logged
    each time and :attr:`contested` set.
    Stopping the service cancels what is pending and returns to ``idle``.
    """

    _log = Logger()

    def __init__(self, config: IpcConfig, reactor: Any, rng: random.Random | None = None) -> None:
        self._config = config
        self._reg = config.registration
        self._reactor = reactor
        self._payload = encode(registration_payload(config))
        self._retry_delay = retry_policy(
            MIN_RETRY_SECONDS, float(self._reg.registration_heartbeat_interval_seconds),
            self._reg.retry_jitter_ratio, floor=MIN_RETRY_SECONDS,
            rand=(rng or random.Random()).random)
        self.phase = IDLE  # the machine's state, kept by its transitions
        self.failures = 0  # failed attempts in a row
        self.last_ack: dict[str, Any] | None = None
        #: ``(pid, start time)`` of the relay process that last acked this target's registration:
        #: IPC connections from that process carry commands ``via`` the relay
        self.relay_process: tuple[int, str | None] | None = None
        self._peer: tuple[int, str | None] | None = None
        self.acks = 0
        #: the relay's last answer refused this target id as another uid's (cleared by an ack)
        self.contested: str | None = None
        self._machine = _HEARTBEAT_MACHINE(self)

    @property
    def stopped_for_good(self) -> bool:
        """The relay refused this target for good (until the process restarts)."""
        return self.phase == GAVE_UP

    def begin(self) -> None:
        """Send the first registration now (called once the IPC socket listens)."""
        self._machine.begin()

    def stopService(self) -> None:
        Service.stopService(self)
        self._machine.stop()

    def _attempt(self, machine: "_HeartbeatInputs") -> "_Attempt":
        return _Attempt(defer.Deferred.fromCoroutine(self._exchange()),
                        lambda ack: self._answered(machine, ack),
                        lambda f: self._failed(machine, f))

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
            answer = await ack
            self._peer = protocol.peer
            return answer
        finally:
            if protocol.transport is not None:
                protocol.transport.abortConnection()

    def _answered(self, machine: "_HeartbeatInputs", ack: Any) -> None:
        if not isinstance(ack, dict):
            machine.retry("relay sent an ack that is not an object")
            return
        self.last_ack = ack
        self.contested = None
        if ack.get("ok") is True:
            self.relay_process = self._peer
            machine.acked()
            return
        error = ack.get("error") if isinstance(ack.get("error"), dict) else {}
        code, message = error.get("code", "unknown"), error.get("message", "")
        if code == CONTESTED_CODE:
            self.contested = str(message)
            machine.retry(f"relay refused registration of target id {self._config.target_id} "
                          f"({code}: {message}); the dashboard cannot reach this target until "
                          "the id is released to this uid")
        elif ack.get("retryable") is True:
            machine.retry(f"relay refused registration ({code}: {message})")
        else:
            machine.refused(str(code), str(message))

    def _failed(self, machine: "_HeartbeatInputs", failure: Failure) -> None:
        self.contested = None
        machine.retry(f"registration attempt failed: {failure.getErrorMessage() or failure.type.__name__}")


class _Attempt:
    """One registration exchange in flight. ``stop()`` cancels it; what it ends with after
    that goes nowhere (its own deadline is not a stop: that is a failure to retry)."""

    def __init__(self, exchange: defer.Deferred[Any], answered: Callable[[Any], None],
                 failed: Callable[[Failure], None]) -> None:
        self._exchange = exchange
        self._stopped = False
        exchange.addCallbacks(lambda ack: None if self._stopped else answered(ack),
                              lambda f: None if self._stopped else failed(f))

    def stop(self) -> None:
        self._stopped = True
        self._exchange.cancel()


# the phases of a heartbeat
IDLE = "idle"
SENDING = "sending"
REGISTERED = "registered"
RETRYING = "retrying"
GAVE_UP = "gave_up"


class _HeartbeatInputs(Protocol):
    """What can happen to a heartbeat (the inputs of its machine)."""

    def begin(self) -> None:
        """The IPC socket listens: register now."""

    def acked(self) -> None:
        """The relay registered (or renewed) this target."""

    def retry(self, why: str) -> None:
        """The attempt failed in a way worth retrying."""

    def refused(self, code: str, message: str) -> None:
        """The relay refused this target for good."""

    def due(self) -> None:
        """The next attempt is due."""

    def stop(self) -> None:
        """The service stops."""


def _build_heartbeat_machine() -> Callable[[RegistrationHeartbeat], _HeartbeatInputs]:
    m = TypeMachineBuilder(_HeartbeatInputs, RegistrationHeartbeat)
    idle = m.state(IDLE)
    gave_up = m.state(GAVE_UP)

    def send(machine: _HeartbeatInputs, hb: RegistrationHeartbeat) -> _Attempt:
        hb.phase = SENDING
        return hb._attempt(machine)

    def heartbeat_later(machine: _HeartbeatInputs, hb: RegistrationHeartbeat) -> IDelayedCall:
        hb.phase = REGISTERED
        hb.failures = 0
        hb.acks += 1
        return hb._reactor.callLater(hb._reg.registration_heartbeat_interval_seconds, machine.due)

    def retry_later(machine: _HeartbeatInputs, hb: RegistrationHeartbeat, why: str) -> IDelayedCall:
        hb.phase = RETRYING
        hb.failures += 1
        delay = hb._retry_delay(hb.failures)
        if hb.contested is not None:
            hb._log.error("{why}; retrying in {delay:.1f} s", why=why, delay=delay)
        else:
            hb._log.warn("{why}; retrying in {delay:.1f} s", why=why, delay=delay)
        return hb._reactor.callLater(delay, machine.due)

    sending = m.state(SENDING, send)
    registered = m.state(REGISTERED, heartbeat_later)
    retrying = m.state(RETRYING, retry_later)

    idle.upon(_HeartbeatInputs.begin).to(sending).returns(None)
    idle.upon(_HeartbeatInputs.stop).loop().returns(None)
    sending.upon(_HeartbeatInputs.acked).to(registered).returns(None)
    sending.upon(_HeartbeatInputs.retry).to(retrying).returns(None)
    registered.upon(_HeartbeatInputs.due).to(sending).returns(None)
    retrying.upon(_HeartbeatInputs.due).to(sending).returns(None)

    @sending.upon(_HeartbeatInputs.refused).to(gave_up)
    def give_up(machine: _HeartbeatInputs, hb: RegistrationHeartbeat, attempt: _Attempt,
                code: str, message: str) -> None:
        hb.phase = GAVE_UP
        hb._log.error("relay refused registration for good: {code}: {message}", code=code,
                      message=message)

    @sending.upon(_HeartbeatInputs.stop).to(idle)
    def cancel_attempt(machine: _HeartbeatInputs, hb: RegistrationHeartbeat,
                       attempt: _Attempt) -> None:
        hb.phase = IDLE
        attempt.stop()

    @registered.upon(_HeartbeatInputs.stop).to(idle)
    @retrying.upon(_HeartbeatInputs.stop).to(idle)
    def cancel_call(machine: _HeartbeatInputs, hb: RegistrationHeartbeat, call: IDelayedCall) -> None:
        hb.phase = IDLE
        call.cancel()

    # refused for good: the heartbeat ends until the process restarts
    gave_up.upon(_HeartbeatInputs.begin).loop().returns(None)
    gave_up.upon(_HeartbeatInputs.stop).loop().returns(None)
    return m.build()


_HEARTBEAT_MACHINE = _build_heartbeat_machine()
