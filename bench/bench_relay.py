"""Relay benchmarks against a real ``twistd supervisor-relay`` subprocess.

(a) fan-out: one fake target emits events at ``BENCH_RATE`` (1,000/s) to N sessions
    (``BENCH_SESSIONS``, default 1,10,100) over wss:// with mTLS: delivered events/s,
    target→session latency p50/p99 (the driver is both emitter and receiver, so one clock),
    relay CPU (utime+stime over the window) and RSS;
(b) registrations: ``BENCH_TARGETS`` (1,000) targets heartbeating; acks/s when sent as fast
    as ``BENCH_REG_CONCURRENCY`` connections allow, and relay RSS with them registered;
(c) idle memory per established session (``BENCH_IDLE_SESSIONS``).

The driver (target + clients) runs in this process, so at high N it competes with the relay
for the CPU; figures are what this machine does, not the relay alone. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "relay"))

import yaml  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402

from bench._common import emit, rss_kib, summary_ms  # noqa: E402
from relay_faketarget import FakeTarget, registration_payload  # noqa: E402
from relay_helpers import config_dict, connect_ws, make_pki, register  # noqa: E402

RATE = int(os.environ.get("BENCH_RATE", 1000))
SESSIONS = [int(n) for n in os.environ.get("BENCH_SESSIONS", "1,10,100").split(",")]
SECONDS = float(os.environ.get("BENCH_SECONDS", 3))
TARGETS = int(os.environ.get("BENCH_TARGETS", 1000))
REG_SECONDS = float(os.environ.get("BENCH_REG_SECONDS", 3))
REG_CONCURRENCY = int(os.environ.get("BENCH_REG_CONCURRENCY", 32))
IDLE_SESSIONS = int(os.environ.get("BENCH_IDLE_SESSIONS", 100))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark precondition not reached in time")
        await task.deferLater(reactor, 0.01, lambda: None)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def fan_out(workdir: str, pki: Any, port: int, pid: int, n: int) -> dict[str, Any]:
    target = FakeTarget(reactor, f"fan-{n}", os.path.join(workdir, f"fan-{n}.sock")).start()
    await register(os.path.join(workdir, "reg.sock"),
                   registration_payload(target.target_id, target.path, lease=120))
    latencies: list[float] = []
    counts = [0]
    sessions = []
    for _ in range(n):
        ws = await connect_ws(port, pki, pki.operator, timeout=30)
        original = ws.onMessage

        def on_message(payload: bytes, is_binary: bool, ws: Any = ws, orig: Any = original
                       ) -> None:
            if payload.startswith(b'{"type":"event"'):
                message = json.loads(payload)
                latencies.append(time.perf_counter() - message["event"]["payload"]["t"])
                counts[0] += 1
            else:
                orig(payload, is_binary)

        ws.onMessage = on_message
        sessions.append(ws)
        ws.send({"type": "client_hello", "client_store_id": "bench", "resume_cursor": {}})
    await wait_for(lambda: all(ws.of_type("state") for ws in sessions), 60)
    await wait_for(lambda: "logs.tail" in target.methods(), 30)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    emitted = 0
    interval = 0.01
    per_tick = max(1, int(RATE * interval))
    while time.monotonic() - t0 < SECONDS:
        for _ in range(per_tick):
            target.emit_event(payload={"t": time.perf_counter()})
            emitted += 1
        await task.deferLater(reactor, interval, lambda: None)
    deadline = time.monotonic() + 10
    while counts[0] < emitted * n and time.monotonic() < deadline:
        await task.deferLater(reactor, 0.02, lambda: None)
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    result = {
        "sessions": n, "emitted": emitted, "delivered": counts[0],
        "delivered_per_s": round(counts[0] / elapsed, 1),
        "latency": summary_ms(latencies),
        "relay_cpu_percent": round(100 * cpu / elapsed, 1),
        "relay_rss_kib": rss_kib(pid),
    }
    for ws in sessions:
        ws.sendClose(1000)
    await target.stop()
    return result


async def registrations(workdir: str, pid: int) -> dict[str, Any]:
    path = os.path.join(workdir, "reg.sock")
    bodies = [json.dumps(registration_payload(f"t{i:05d}", os.path.join(workdir,
                         f"t{i:05d}.sock"), lease=30)).encode() + b"\n" for i in range(TARGETS)]
    rss0 = rss_kib(pid)
    acks = [0]
    failures = [0]
    stop_at = time.monotonic() + REG_SECONDS
    index = [0]

    async def worker() -> None:
        while time.monotonic() < stop_at:
            body = bodies[index[0] % TARGETS]
            index[0] += 1
            try:
                ack = await register(path, json.loads(body))
                if ack.get("ok"):
                    acks[0] += 1
                else:
                    failures[0] += 1
            except Exception:
                failures[0] += 1

    t0 = time.monotonic()
    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(REG_CONCURRENCY)])
    elapsed = time.monotonic() - t0
    return {"targets": TARGETS, "acks": acks[0], "failures": failures[0],
            "acks_per_s": round(acks[0] / elapsed, 1),
            "relay_rss_kib_before": rss0, "relay_rss_kib_with_targets": rss_kib(pid)}


async def idle_sessions(pki: Any, port: int, pid: int) -> dict[str, Any]:
    rss0 = rss_kib(pid)
    sessions = []
    for _ in range(IDLE_SESSIONS):
        ws = await connect_ws(port, pki, pki.operator, timeout=30)
        ws.send({"type": "client_hello", "client_store_id": "idle", "resume_cursor": {}})
        sessions.append(ws)
    await wait_for(lambda: all(ws.of_type("target_list") for ws in sessions), 60)
    await task.deferLater(reactor, 0.5, lambda: None)
    rss1 = rss_kib(pid)
    for ws in sessions:
        ws.sendClose(1000)
    return {"sessions": IDLE_SESSIONS, "rss_kib_before": rss0, "rss_kib_after": rss1,
            "kib_per_session": round((rss1 - rss0) / IDLE_SESSIONS, 1)}


async def main() -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="rlybench", dir="/tmp")
    pki = make_pki(workdir)
    port = free_port()
    config = config_dict(workdir, pki, listen={"bind": f"127.0.0.1:{port}"},
                         limits={"max_sessions": 1024, "session_queue": 10000,
                                 "max_targets": TARGETS + 200},
                         timeouts={"ipc_request_seconds": 10})
    config_path = os.path.join(workdir, "relay.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    env = {**os.environ, "PYTHONPATH": ROOT}
    log = open(os.path.join(workdir, "relay.log"), "wb")
    proc = subprocess.Popen([TWISTD, "-n", "--logfile=/dev/null", "supervisor-relay",
                             "--config", config_path], cwd=workdir, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        await wait_for(lambda: port_open(port), 30)
        idle = await idle_sessions(pki, port, proc.pid)
        fan = [await fan_out(workdir, pki, port, proc.pid, n) for n in SESSIONS]
        regs = await registrations(workdir, proc.pid)
        return {"rate_per_s": RATE, "seconds": SECONDS, "fan_out": fan, "registrations": regs,
                "idle": idle,
                "targets": {"p99_ms_at_100_sessions": 25, "heartbeats_per_s": 5000,
                            "idle_kib_per_session": 200}}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def run() -> None:
    results: dict[str, Any] = {}

    async def go() -> None:
        try:
            results.update(await main())
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(go()))
    reactor.run()
    emit("relay", results)


if __name__ == "__main__":
    run()
