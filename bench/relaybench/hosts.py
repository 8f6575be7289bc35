"""A process of fleet hosts for ``bench_fleet.py``: host relays and lightweight targets.

``python -m relaybench.hosts --spec SPEC.json`` (with the repository and ``tests/relay`` on
``PYTHONPATH``). The spec lists hosts, each ``{host_id, folder, relay_config | null,
registration_path}``: with a ``relay_config`` the host's relay runs in this process as a
:class:`~supervisor.relay.service.RelayService` (its fleet side, NATS client thread and all,
as ``twistd supervisor-relay`` would build it); without one the targets register to the
relay already listening on ``registration_path``. Each host gets ``targets_per_host``
targets: :class:`~supervisor.testing.MemoryTarget` on real Unix sockets, registered over
the real registration socket and re-registered well inside their lease.

Line protocol on stdin/stdout (driven by ``bench_fleet.py``):
- ``ready`` once every relay listens and every target is registered (``error ...`` and exit 1
  when that fails);
- ``go WINDOW RATE``: every target together emits ``RATE`` log records per second (paced
  against the wall clock, round-robin over the targets), each with ``fields.bench_w`` (the
  window) and ``fields.bench_t`` (``time.time()`` at emission);
- ``halt`` → ``sent N`` (records emitted in the window);
- ``lag`` → ``lag <ms> <messages>``: the most this process's reactor ran late (a 10 ms
  timer's lateness) and the most messages its fleet buses held unsent, both since the last
  ``lag``;
- ``quit``: stop every relay and exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import yaml
from twisted.internet import defer, reactor, stdio, task
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.protocols.basic import LineReceiver

from relay_faketarget import FakeTarget, registration_payload
from relay_helpers import register
from supervisor.config.relay import parse_relay_config
from supervisor.relay.service import RelayService

TICK_SECONDS = 0.005
LEASE_SECONDS = 120
RENEW_SECONDS = 30
LAG_SECONDS = 0.01


class Hosts:
    """The relays and targets of this process, and the emitter over all targets."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.services: list[RelayService] = []
        self.targets: list[tuple[str, FakeTarget]] = []  # (registration path, target)
        self.loop: task.LoopingCall | None = None
        self.window = ""
        self.rate = 0.0
        self.started = 0.0
        self.sent = 0
        self._next = 0
        self.lag = 0.0
        self.backlog = 0
        self._beat = time.monotonic()
        self._watch = task.LoopingCall(self._watch_lag)

    async def start(self) -> None:
        for host in self.spec["hosts"]:
            if host.get("relay_config"):
                with open(host["relay_config"], encoding="utf-8") as f:
                    config = parse_relay_config(yaml.safe_load(f), host["folder"])
                service = RelayService(config, reactor=reactor)
                service.startService()
                self.services.append(service)
            for i in range(self.spec["targets_per_host"]):
                path = os.path.join(host["folder"], f"t{i}.sock")
                target = FakeTarget(reactor, f"t{i}", path, children={"worker": "running"})
                self.targets.append((host["registration_path"], target.start()))
        await self.renew()
        self._watch.start(LAG_SECONDS)
        task.LoopingCall(lambda: defer.ensureDeferred(self.renew())).start(
            RENEW_SECONDS, now=False)

    async def renew(self) -> None:
        """Register every target (a registration heartbeat), a few at a time."""
        pending = list(self.targets)
        while pending:
            batch, pending = pending[:32], pending[32:]
            answers = await defer.gatherResults([
                defer.ensureDeferred(register(path, registration_payload(
                    target.target_id, target.path, LEASE_SECONDS)))
                for path, target in batch], consumeErrors=True)
            refused = [a for a in answers if not a.get("ok")]
            if refused:
                raise RuntimeError(f"registration refused: {refused[0]}")

    def _watch_lag(self) -> None:
        now = time.monotonic()
        self.lag = max(self.lag, now - self._beat - LAG_SECONDS)
        self._beat = now
        pending = sum(s.fleet.bus.pending_messages for s in self.services if s.fleet)
        self.backlog = max(self.backlog, pending)

    def take_lag(self) -> tuple[float, int]:
        taken = (self.lag, self.backlog)
        self.lag, self.backlog = 0.0, 0
        return taken

    def go(self, window: str, rate: float) -> None:
        self.halt()
        self.window, self.rate, self.sent = window, rate, 0
        self.started = time.monotonic()
        self.loop = task.LoopingCall(self._tick)
        self.loop.start(TICK_SECONDS)

    def _tick(self) -> None:
        due = int((time.monotonic() - self.started) * self.rate) + 1
        targets, n = self.targets, len(self.targets)
        window = self.window
        while self.sent < due:
            target = targets[self._next % n][1]
            self._next += 1
            target.emit_log("bench", fields={"bench_w": window, "bench_t": time.time()})
            self.sent += 1

    def halt(self) -> int:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        self.loop = None
        return self.sent

    async def stop(self) -> None:
        self.halt()
        for _, target in self.targets:
            target.stop()
        await defer.gatherResults([defer.maybeDeferred(s.stopService) for s in self.services],
                                  consumeErrors=True)


class Control(LineReceiver):
    """The driver's commands on stdin."""

    delimiter = b"\n"

    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts

    def say(self, text: str) -> None:
        self.sendLine(text.encode())

    def lineReceived(self, line: bytes) -> None:
        words = line.decode().split()
        if not words:
            return
        if words[0] == "go":
            self.hosts.go(words[1], float(words[2]))
        elif words[0] == "halt":
            self.say(f"sent {self.hosts.halt()}")
        elif words[0] == "lag":
            lag, backlog = self.hosts.take_lag()
            self.say(f"lag {lag * 1000:.1f} {backlog}")
        elif words[0] == "quit":
            defer.ensureDeferred(self.hosts.stop()).addBoth(lambda _: reactor.stop())

    def connectionLost(self, reason: Any = None) -> None:
        if reactor.running:  # the driver went away: do not linger
            defer.ensureDeferred(self.hosts.stop()).addBoth(lambda _: reactor.stop())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    with open(args.spec, encoding="utf-8") as f:
        spec = json.load(f)
    log = open(args.log, "a", encoding="utf-8")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log)], redirectStandardIO=False)
    hosts = Hosts(spec)
    control = Control(hosts)

    async def start() -> None:
        try:
            await hosts.start()
        except Exception as e:  # noqa: BLE001 - reported to the driver, then exit
            control.say(f"error {type(e).__name__}: {e}")
            reactor.stop()
            return
        control.say("ready")

    stdio.StandardIO(control)
    reactor.callWhenRunning(lambda: defer.ensureDeferred(start()))
    reactor.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
