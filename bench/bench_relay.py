"""Relay benchmarks against a real ``twistd supervisor-relay`` subprocess.

(a) fan-out, every end in its own process: the relay (``twistd -n supervisor-relay``), a
    real target (``twistd -n supervisor-target``) whose task child
    ``bench/relaybench/emitter.py`` logs ``BENCH_RATE`` (1,000) lines/s while a gate file
    exists, and N sessions (``BENCH_SESSIONS``, default 1,10,100,1000) spread over up to
    ``BENCH_CLIENT_PROCS`` (4) client processes (``bench/relaybench/client.py``: wss:// with
    the operator's client certificate, a lean RFC 6455 client so that the clients' own cost
    per message stays small). Every log line carries ``time.time()`` at emission in its
    fields; latency = receipt − emission (one machine, one clock), so it covers target ring
    → IPC push → relay → TLS → session. Reported per N over a ``BENCH_SECONDS`` (5) window
    (``BENCH_LARGE_SECONDS`` (2) from ``BENCH_LARGE_SESSIONS`` (1,000) sessions on, so the
    largest run stays short) plus the drain (at most ``BENCH_DRAIN_SECONDS``, 30):
    delivered messages/s, p50/p99 latency, relay CPU % (utime+stime from
    /proc) and RSS, and the CPU of the target, of the clients and of the whole machine
    (2 cores, shared) for context. The relay's ``limits.max_sessions`` and the soft
    RLIMIT_NOFILE of this process (inherited by the relay) and of the clients are raised to
    fit the largest N; at 1,000 sessions the relay has to write 1,000,000 messages/s, more
    than two shared cores can, so that run measures a saturated relay: delivered/s, drain
    time and ``dropped_count`` messages say by how much.
(b) registrations: ``BENCH_TARGETS`` (1,000) targets heartbeating; acks/s when sent as fast
    as ``BENCH_REG_CONCURRENCY`` connections allow, relay RSS with them registered, and the
    CPU of the relay and of the driver (this process) so a driver-bound figure shows.
(c) idle memory per established session (``BENCH_IDLE_SESSIONS``).
(b) and (c) run against a second, fresh relay with the driver (this process) as client.

``BENCH_PYSPY=/path/to/py-spy`` additionally samples the relay with py-spy during the
window of ``BENCH_PYSPY_SESSIONS`` sessions (default the largest N) and writes the profile
to ``BENCH_PYSPY_OUT`` (default /tmp/relay-fanout.pyspy.txt, raw collapsed stacks).
``BENCH_RELAY_REACTOR=asyncio`` runs the relay on Twisted's asyncio reactor instead of epoll
(how the fleet's NATS client could have shared the relay's thread; docs/fleet.md). Prints one JSON object.
"""

from __future__ import annotations

import array
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "relay"))

import yaml  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402

from bench._common import emit, percentile, rss_kib, summary_ms  # noqa: E402
from bench.peers.harness import row  # noqa: E402
from relay_faketarget import registration_payload  # noqa: E402
from relay_helpers import ORIGIN, config_dict, connect_ws, make_pki, register  # noqa: E402

RATE = int(os.environ.get("BENCH_RATE", 1000))
SESSIONS = [int(n) for n in os.environ.get("BENCH_SESSIONS", "1,10,100,1000").split(",")]
SECONDS = float(os.environ.get("BENCH_SECONDS", 5))
P99_GOAL_MS = 5
LARGE_SESSIONS = int(os.environ.get("BENCH_LARGE_SESSIONS", 1000))
LARGE_SECONDS = float(os.environ.get("BENCH_LARGE_SECONDS", 2))
DRAIN_SECONDS = float(os.environ.get("BENCH_DRAIN_SECONDS", 30))
CLIENT_PROCS = int(os.environ.get("BENCH_CLIENT_PROCS", 4))
TARGETS = int(os.environ.get("BENCH_TARGETS", 1000))
#: twistd's ``--reactor`` for the relay (the default epoll, or e.g. ``asyncio`` to compare)
RELAY_REACTOR = os.environ.get("BENCH_RELAY_REACTOR", "")
REG_SECONDS = float(os.environ.get("BENCH_REG_SECONDS", 3))
REG_CONCURRENCY = int(os.environ.get("BENCH_REG_CONCURRENCY", 32))
IDLE_SESSIONS = int(os.environ.get("BENCH_IDLE_SESSIONS", 100))
PYSPY = os.environ.get("BENCH_PYSPY")
PYSPY_OUT = os.environ.get("BENCH_PYSPY_OUT", "/tmp/relay-fanout.pyspy.txt")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# processes ----------------------------------------------------------------------------------

class Procs:
    """Every child started by the benchmark, each the leader of its own process group."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], *, cwd: str, env: dict[str, str] | None = None,
              log: str | None = None, pipes: bool = False) -> subprocess.Popen:
        """Start ``args`` in a new session; stderr (and stdout unless ``pipes``) to ``log``."""
        errors: Any = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(args, cwd=cwd, env=env, start_new_session=True,
                                    stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE if pipes else errors,
                                    stderr=errors)
        finally:
            if log is not None:
                errors.close()
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # leftovers of the group (children of the child), and a hung leader
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.started)):
            self.stop(proc)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(predicate: Any, timeout: float, what: str, proc: subprocess.Popen | None = None
               ) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark precondition not reached in time: {what}")
        time.sleep(0.02)


class ClientProc:
    """A relaybench.client process and its stdin/stdout line protocol."""

    def __init__(self, proc: subprocess.Popen, sessions: int) -> None:
        self.proc = proc
        self.sessions = sessions
        self._buf = b""

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("client process did not answer in time")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"client process exited ({self.proc.poll()})")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def ask(self, line: str, timeout: float = 10) -> str:
        self.send(line)
        return self.read_line(timeout)


def drain(clients: list[ClientProc], expected: int, since: float, limit: float
          ) -> tuple[int, int]:
    """Ask the clients for their counts until ``expected`` messages arrived or ``limit``
    seconds passed ``since``; (received, ``dropped_count`` messages seen)."""
    received = dropped = 0
    while time.monotonic() - since < limit:
        answers = [client.ask("count").split() for client in clients]
        received = sum(int(a[1]) for a in answers)
        dropped = sum(int(a[2]) for a in answers)
        if received >= expected:
            break
        time.sleep(0.02)
    return received, dropped


def collect(clients: list[ClientProc], workdir: str, tag: str
            ) -> tuple[array.array, list[dict[str, Any]]]:
    """Every client's latencies and report (the clients exit after it)."""
    latencies = array.array("d")
    reports = []
    for i, client in enumerate(clients):
        path = os.path.join(workdir, f"lat-{tag}-{i}.bin")
        line = client.ask(f"report {path}", 30)
        reports.append(json.loads(line.split(" ", 1)[1]))
        with open(path, "rb") as f:
            latencies.frombytes(f.read())
        os.unlink(path)
    return latencies, reports


# (a) fan-out with every end in its own process ---------------------------------------------

TARGET_YAML = """\
supervisor: {{strategy: one_for_one}}
policy: {{initial_backoff_ms: 100, max_backoff_ms: 1000}}
observability: {{event_journal_capacity: 1024, log_journal_capacity: 4096}}
ipc:
  enabled: true
  target_id: bench-target
  path: {ipc}
  bind_mode: replace_stale
  registration:
    enabled: true
    relay_registration_path: {reg}
    display_name: bench target
    lease_seconds: 60
    registration_heartbeat_interval_seconds: 5
children:
  - {{name: emitter, kind: task, callable: "relaybench.emitter:factory"}}
"""


def window_seconds(n: int) -> float:
    """How long the emitter runs for ``n`` sessions (short for the largest runs)."""
    return LARGE_SECONDS if n >= LARGE_SESSIONS else SECONDS


def raise_nofile(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` (capped by the hard limit);
    children started afterwards (the relay) inherit it. Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def start_relay(procs: Procs, workdir: str, pki: Any, port: int,
                max_targets: int = 64) -> subprocess.Popen:
    most = max(SESSIONS + [IDLE_SESSIONS])
    raise_nofile(2 * most + max_targets + 256)
    config = config_dict(workdir, pki, listen={"bind": f"127.0.0.1:{port}"},
                         limits={"max_sessions": max(1024, most + 64),
                                 "session_queue": 10000,
                                 "max_targets": max_targets},
                         timeouts={"ipc_request_seconds": 10})
    config_path = os.path.join(workdir, "relay.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    env = {**os.environ, "PYTHONPATH": ROOT}
    reactor_option = [f"--reactor={RELAY_REACTOR}"] if RELAY_REACTOR else []
    relay = procs.start([TWISTD, "-n", "--pidfile=", "--logfile=-", *reactor_option,
                         "supervisor-relay", "--config", config_path], cwd=workdir, env=env,
                        log=os.path.join(workdir, "relay.log"))
    wait_until(lambda: port_open(port), 30, "relay listening", relay)
    return relay


def fan_out_one(procs: Procs, workdir: str, port: int, relay: subprocess.Popen,
                target: subprocess.Popen, gate: str, n: int, window: int) -> dict[str, Any]:
    k = max(1, min(CLIENT_PROCS, n))
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    clients = []
    for size in sizes:
        proc = procs.start([sys.executable, "-m", "relaybench.client", "--port", str(port),
                            "--ca", os.path.join(workdir, "ca.pem"),
                            "--cert", os.path.join(workdir, "operator.pem"),
                            "--key", os.path.join(workdir, "operator-key.pem"),
                            "--sessions", str(size), "--window", str(window),
                            "--origin", ORIGIN],
                           cwd=workdir, env={**os.environ, "PYTHONPATH": BENCH},
                           log=os.path.join(workdir, "client.log"), pipes=True)
        clients.append(ClientProc(proc, size))
    try:
        for client in clients:
            line = client.read_line(120)
            if line != "ready":
                raise RuntimeError(f"client: {line}")
        time.sleep(0.5)  # first states written and read; the relay is idle again
        pids = {"relay": [relay.pid], "target": [target.pid],
                "clients": [c.proc.pid for c in clients]}
        cpu0 = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        busy0 = machine_busy()
        t0 = time.monotonic()
        with open(gate + ".tmp", "w") as f:
            f.write(f"{window}\n")
        os.replace(gate + ".tmp", gate)
        spy = None
        seconds = window_seconds(n)
        if PYSPY and n == int(os.environ.get("BENCH_PYSPY_SESSIONS", max(SESSIONS))):
            spy = procs.start([PYSPY, "record", "-p", str(relay.pid), "-d",
                               str(max(1, int(seconds))), "-r", "500", "--nonblocking",
                               "-f", "raw",
                               "-o", PYSPY_OUT], cwd=workdir,
                              log=os.path.join(workdir, "pyspy.log"))
        time.sleep(seconds)
        os.unlink(gate)
        t_emit = time.monotonic()
        done = gate + ".emitted"
        wait_until(lambda: os.path.exists(done), 10, "emitter window count", target)
        with open(done) as f:
            w, emitted_text = f.read().split()
        os.unlink(done)
        assert int(w) == window, (w, window)
        emitted = int(emitted_text)
        expected = emitted * n
        received, dropped_msgs = drain(clients, expected, t_emit, DRAIN_SECONDS)
        t1 = time.monotonic()
        cpu1 = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        busy1 = machine_busy()
        relay_rss = rss_kib(relay.pid)
        latencies, reports = collect(clients, workdir, str(window))
        if spy is not None:
            try:
                spy.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                pass
            procs.stop(spy)
    finally:
        for client in clients:
            procs.stop(client.proc, timeout=5)
    elapsed = t1 - t0
    values = latencies.tolist()
    cpu = {name: round(100 * (cpu1[name] - cpu0[name]) / elapsed, 1) for name in cpu1}
    machine = 100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])  # % of all cores
    ncpu = os.cpu_count() or 1
    return {
        "sessions": n, "client_processes": k, "window_s": seconds, "emitted": emitted,
        "emitted_per_s": round(emitted / seconds, 1),
        "delivered": received, "expected": expected,
        "delivered_per_s": round(received / elapsed, 1),
        "drain_s": round(t1 - t_emit, 3),
        "dropped_count_messages": dropped_msgs,
        "latency": {**summary_ms(values),
                    "p90_ms": round(percentile(values, 90) * 1000, 3),
                    "max_ms": round(max(values) * 1000, 3) if values else float("nan")},
        "relay_cpu_percent": cpu["relay"],
        "relay_rss_kib": relay_rss,
        "target_cpu_percent": cpu["target"],
        "clients_cpu_percent": cpu["clients"],
        "machine_busy_percent": round(machine, 1),
        # CPU (% of one core) used by processes other than relay, target and clients
        # (e.g. another benchmark on this shared machine): high values spoil latencies
        "other_processes_cpu_percent": round(max(
            0.0, machine * ncpu - cpu["relay"] - cpu["target"] - cpu["clients"]), 1),
        "client_reports_closed": sum(r["closed"] for r in reports),
    }


def fan_out_phase(procs: Procs) -> list[dict[str, Any]]:
    workdir = tempfile.mkdtemp(prefix="rbf", dir="/tmp")
    try:
        pki = make_pki(workdir)
        pki.operator.write(os.path.join(workdir, "operator.pem"),
                           os.path.join(workdir, "operator-key.pem"))
        port = free_port()
        relay = start_relay(procs, workdir, pki, port)
        ipc = os.path.join(workdir, "t.sock")
        target_yaml = os.path.join(workdir, "target.yaml")
        with open(target_yaml, "w") as f:
            f.write(TARGET_YAML.format(ipc=ipc, reg=os.path.join(workdir, "reg.sock")))
        gate = os.path.join(workdir, "gate")
        target = procs.start([TWISTD, "-n", "--pidfile=", "--logfile=-",
                              "supervisor-target", "--config", target_yaml], cwd=workdir,
                             env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{BENCH}",
                                  "RELAYBENCH_GATE": gate, "RELAYBENCH_RATE": str(RATE)},
                             log=os.path.join(workdir, "target.log"))
        wait_until(lambda: os.path.exists(ipc), 30, "target IPC socket", target)
        results = [fan_out_one(procs, workdir, port, relay, target, gate, n, window)
                   for window, n in enumerate(SESSIONS, start=1)]
        procs.stop(target)
        procs.stop(relay)
        return results
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


# (b) registrations and (c) idle sessions, driven from this process -------------------------

async def wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark precondition not reached in time")
        await task.deferLater(reactor, 0.01, lambda: None)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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

    cpu0, own0 = cpu_seconds(pid), own_cpu_seconds()
    t0 = time.monotonic()
    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(REG_CONCURRENCY)])
    elapsed = time.monotonic() - t0
    return {"targets": TARGETS, "acks": acks[0], "failures": failures[0],
            "acks_per_s": round(acks[0] / elapsed, 1),
            "relay_cpu_percent": round(100 * (cpu_seconds(pid) - cpu0) / elapsed, 1),
            "driver_cpu_percent": round(100 * (own_cpu_seconds() - own0) / elapsed, 1),
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


async def in_process_phase(procs: Procs) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="rbr", dir="/tmp")
    try:
        pki = make_pki(workdir)
        port = free_port()
        relay = start_relay(procs, workdir, pki, port, max_targets=TARGETS + 200)
        idle = await idle_sessions(pki, port, relay.pid)
        regs = await registrations(workdir, relay.pid)
        return {"idle": idle, "registrations": regs}
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def run_reactor_phase(procs: Procs) -> dict[str, Any]:
    results: dict[str, Any] = {}
    errors: list[Any] = []

    async def go() -> None:
        try:
            results.update(await in_process_phase(procs))
        except BaseException as e:  # reported after the reactor stopped
            errors.append(e)
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(go()))
    reactor.run(installSignalHandlers=False)
    if errors:
        raise errors[0]
    return results


def run() -> None:
    procs = Procs()
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so finally clauses run
    try:
        fan = fan_out_phase(procs)
        rest = run_reactor_phase(procs)
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, previous)
    emit("relay", {
        "rate_per_s": RATE, "seconds": SECONDS, "fan_out": fan, **rest,
        "method": "fan-out: relay, target and clients in separate processes; "
                  "latency = session receipt - target emission (time.time())",
        "targets": {"p99_ms_at_100_sessions": P99_GOAL_MS, "heartbeats_per_s": 5000,
                    "idle_kib_per_session": 200},
        "rows": fan_out_rows(fan)})


def fan_out_rows(fan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's rows: fan-out p99 and relay RSS at 100 sessions and the large count."""
    rows = []
    for phase in fan:
        n = phase["sessions"]
        if n not in (100, LARGE_SESSIONS):
            continue
        p99 = phase["latency"]["p99_ms"]
        goal = n == 100
        rows.append(row(f"relay fan-out {RATE:,} ev/s to {n:,} sessions, p99 (ms)", {"ours": p99},
                        f"≤ {P99_GOAL_MS} ms" if goal else None, p99 <= P99_GOAL_MS if goal else None,
                        compare=False))
        rows.append(row(f"relay RSS with {n:,} sessions streaming (KiB)",
                        {"ours": phase["relay_rss_kib"]}, compare=False))
    return rows


if __name__ == "__main__":
    run()
