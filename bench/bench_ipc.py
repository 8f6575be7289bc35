"""Target IPC: ``state`` round trip with 200 children, and event streaming, each beside a bare
Twisted NDJSON echo over a Unix socket measured in the same run (the floor).

Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.endpoints import UNIXClientEndpoint  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402

from bench._common import emit, summary_ms  # noqa: E402
from bench.peers.harness import row  # noqa: E402
from supervisor.config.target import IpcConfig, TargetConfig  # noqa: E402
from supervisor.ipc.service import ipc_services  # noqa: E402
from supervisor.testing import ManualTask  # noqa: E402
from supervisor.tree.runtime import Supervisor  # noqa: E402
from supervisor.tree.spec import ChildKind, ChildSpec, Observability, SupervisorSpec  # noqa: E402

CHILDREN = 200
ROUND_TRIPS = int(os.environ.get("BENCH_ROUND_TRIPS", 500))
BURST = int(os.environ.get("BENCH_BURST", 20_000))
PACED_SECONDS = float(os.environ.get("BENCH_PACED_SECONDS", 3))
RATE = 1000
RATIO_GOAL = 0.8


class Lines(Protocol):
    """Client side: counts lines, remembers arrival times, answers ``waiter`` per line."""

    def __init__(self) -> None:
        self.buffer = b""
        self.count = 0
        self.on_line = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                return
            line, self.buffer = self.buffer[:end], self.buffer[end + 1:]
            self.count += 1
            if self.on_line is not None:
                self.on_line(line)


class Echo(Protocol):
    """The floor: a bare NDJSON server that writes back every line it gets."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Firehose(Protocol):
    """The floor for streaming: the server writes lines it is handed, nothing else."""

    instances: list["Firehose"] = []

    def connectionMade(self) -> None:
        Firehose.instances.append(self)


async def connect(reactor, path: str) -> Lines:
    client = Lines()
    await UNIXClientEndpoint(reactor, path).connect(Factory.forProtocol(lambda: client))
    return client


async def request_latency(reactor, client: Lines, line: bytes, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        done: defer.Deferred = defer.Deferred()
        client.on_line = lambda _line: done.called or done.callback(None)
        t0 = time.perf_counter()
        client.transport.write(line)
        await done
        samples.append(time.perf_counter() - t0)
    client.on_line = None
    return samples


async def burst_throughput(reactor, client: Lines, emit_one, n: int) -> float:
    """Emit ``n`` records in chunks, yielding to the reactor; events/s until all arrived."""
    start_count = client.count
    t0 = time.perf_counter()
    for i in range(0, n, 100):
        for j in range(i, min(i + 100, n)):
            emit_one(j)
        await task.deferLater(reactor, 0, lambda: None)
    while client.count - start_count < n:
        await task.deferLater(reactor, 0.001, lambda: None)
    return n / (time.perf_counter() - t0)


async def paced_latency(reactor, client: Lines, emit_one, seconds: float) -> list[float]:
    """Emit at RATE per second; latency from emission to receipt of each line."""
    sent: dict[int, float] = {}
    latencies: list[float] = []

    def on_line(line: bytes) -> None:
        index = json.loads(line).get("i")
        if index is None:
            msg = json.loads(line)
            index = msg.get("event", {}).get("payload", {}).get("i")
        if index in sent:
            latencies.append(time.perf_counter() - sent.pop(index))

    client.on_line = on_line
    total = int(seconds * RATE)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / RATE
        delay = due - time.perf_counter()
        if delay > 0:
            await task.deferLater(reactor, delay, lambda: None)
        sent[i] = time.perf_counter()
        emit_one(i)
    deadline = time.perf_counter() + 5
    while sent and time.perf_counter() < deadline:
        await task.deferLater(reactor, 0.001, lambda: None)
    client.on_line = None
    return latencies


async def run(reactor) -> None:
    folder = tempfile.mkdtemp(prefix="bench", dir="/tmp")
    try:
        # the floor
        echo_port = reactor.listenUNIX(f"{folder}/echo.sock", Factory.forProtocol(Echo))
        hose_port = reactor.listenUNIX(f"{folder}/hose.sock", Factory.forProtocol(Firehose))
        echo = await connect(reactor, f"{folder}/echo.sock")
        request = b'{"request_id":"r","method":"state","params":{"target_id":"bench"}}\n'
        floor_rtt = await request_latency(reactor, echo, request, ROUND_TRIPS)
        hose_client = await connect(reactor, f"{folder}/hose.sock")
        while not Firehose.instances:
            await task.deferLater(reactor, 0.001, lambda: None)
        hose = Firehose.instances[-1]
        sample_event = None

        # the target
        spec = SupervisorSpec(
            observability=Observability(event_journal_capacity=4096),
            children=[ChildSpec(f"c{i}", ChildKind.TASK, factory=ManualTask()) for i in range(CHILDREN)],
        )
        ipc = IpcConfig(enabled=True, target_id="bench", path=f"{folder}/t.sock", max_pending_pushes=1_000_000,
                        max_pending_push_bytes=1 << 30)
        sup = Supervisor(spec, reactor=reactor, clock=reactor, target_id="bench")
        services = ipc_services(TargetConfig(spec=spec, ipc=ipc, base_dir=folder), sup, reactor)
        sup.startService()
        for s in services:
            s.startService()
        client = await connect(reactor, ipc.path)
        state_rtt = await request_latency(reactor, client, request, ROUND_TRIPS)
        subscriber = await connect(reactor, ipc.path)
        subscriber.transport.write(b'{"request_id":"s","method":"events.subscribe","params":{"target_id":"bench","session_established":true,"since_sequence":999999999}}\n')
        while subscriber.count < 1:
            await task.deferLater(reactor, 0.001, lambda: None)

        def tree_event(i: int) -> None:
            sup.tree.emit("child_heartbeat_stale", "/root/c0", "c0", "bench", {"i": i})

        sample_event = sup.events.last(1)[0].to_json() if len(sup.events) else {}

        def floor_event(i: int) -> None:
            hose.transport.write(json.dumps({"type": "event", "target_id": "bench", "i": i,
                                             "event": sample_event}).encode() + b"\n")

        floor_tput = await burst_throughput(reactor, hose_client, floor_event, BURST)
        ours_tput = await burst_throughput(reactor, subscriber, tree_event, BURST)
        floor_paced = await paced_latency(reactor, hose_client, floor_event, PACED_SECONDS)
        ours_paced = await paced_latency(reactor, subscriber, tree_event, PACED_SECONDS)

        for s in reversed(services):
            await defer.maybeDeferred(s.stopService)
        await sup.stopService()
        for c in (echo, hose_client, client, subscriber):
            c.transport.loseConnection()
        await echo_port.stopListening()
        await hose_port.stopListening()
        emit("ipc", {
            "children": CHILDREN,
            "state_round_trip": summary_ms(state_rtt),
            "floor_echo_round_trip": summary_ms(floor_rtt),
            "event_throughput_per_s": round(ours_tput),
            "floor_throughput_per_s": round(floor_tput),
            "throughput_ratio_vs_floor": round(ours_tput / floor_tput, 3),
            "event_latency_at_1000_per_s": summary_ms(ours_paced),
            "floor_latency_at_1000_per_s": summary_ms(floor_paced),
            "targets": {"throughput_ratio_vs_floor": f">= {RATIO_GOAL}",
                        "event_latency_at_1000_per_s.p99_ms": "< 10"},
            "rows": [row(f"IPC event stream, {BURST:,}-event burst (µs per event)",
                         {"floor": round(1e6 / floor_tput, 2), "ours": round(1e6 / ours_tput, 2)},
                         f"throughput ≥ {RATIO_GOAL} of the bare NDJSON floor",
                         ours_tput >= RATIO_GOAL * floor_tput, compare=False)],
        })
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(reactor) -> defer.Deferred:
    return defer.Deferred.fromCoroutine(run(reactor))


if __name__ == "__main__":
    task.react(main)
