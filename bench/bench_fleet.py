"""Fleet benchmark: many host relays behind one gateway on a real TLS nats-server, against a
single relay with the same load as the floor.

(a) fleet: one ``nats-server`` (TLS, client certificates, the fleet's permissions as
    ``supervisor.fleet.natsconf`` writes them), ``BENCH_FLEET_HOSTS`` (100) host relays with
    ``fleet.enabled``, spread over ``BENCH_FLEET_WORKERS`` (4) processes
    (``bench/relaybench/hosts.py``: each host a ``RelayService`` with its own NATS client,
    as ``twistd supervisor-relay`` builds it), each host with ``BENCH_FLEET_TARGETS`` (10)
    lightweight targets (in-memory §1 targets on real Unix sockets, registered over the real
    registration socket), and one ``twistd -n supervisor-fleet`` gateway with
    ``BENCH_FLEET_SESSIONS`` (20) wss:// sessions (``bench/relaybench/client.py``, split over
    ``BENCH_FLEET_CLIENT_PROCS`` (2) processes).
(b) floor: one ``twistd -n supervisor-relay`` (no fleet), ``BENCH_FLEET_TARGETS`` targets
    registered to it, the same number of sessions straight to it.

Per phase, in this order:
- the seconds from a session's ``client_hello`` to its first ``target_list`` holding every
  target (sessions opened one after the other; p50 and max), and from the first session's
  opening until every session holds every target's ``state``;
- once the servers are quiet again, CPU % (of one core) over ``BENCH_FLEET_IDLE_SECONDS``
  (2) of idle;
- over ``BENCH_FLEET_SECONDS`` (5), all targets together log ``BENCH_FLEET_RATE`` (5,000)
  records/s, each carrying ``time.time()`` at emission, and every session receives every
  record: latency = receipt − emission (one machine, one clock) over target → host relay →
  NATS → gateway → session, or target → relay → session for the floor; delivered, dropped
  (``dropped_count`` messages) and the drain after emission stops (at most
  ``BENCH_FLEET_DRAIN_SECONDS``, 30); CPU % and RSS of the gateway, of nats-server, of the
  floor relay and, for context, of the host processes, the clients and the whole machine;
  where messages waited (the host processes' reactor lateness and fleet bus queues, the
  server's session queues and incoming bus bytes, sampled four times a second).

The floor runs after the fleet is stopped, so both phases have the machine to themselves.
Prints one JSON object with the ratios fleet/floor.

``BENCH_FLEET_KEEP=1`` keeps the working folder (every process's log) and names it on stderr.
``BENCH_FLEET_PYSPY=/path/to/py-spy`` also samples the gateway and the first host process
during the fleet's window and writes their profiles (raw collapsed stacks) to
``BENCH_FLEET_PYSPY_OUT`` (default /tmp/fleet-<process>.pyspy.txt).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
RELAY_TESTS = os.path.join(ROOT, "tests", "relay")
sys.path.insert(0, ROOT)
sys.path.insert(0, RELAY_TESTS)

import yaml  # noqa: E402

from bench._common import emit, percentile, rss_kib, summary_ms  # noqa: E402
from bench.bench_relay import (ClientProc, Procs, collect, cpu_seconds, drain,  # noqa: E402
                               machine_busy, port_open, raise_nofile, wait_until)
from relay_helpers import ORIGIN, PUBLIC_URL, config_dict, make_pki  # noqa: E402
from tests.fleet.nats_support import NatsServer  # noqa: E402
from tests.ports import free_port  # noqa: E402

HOSTS = int(os.environ.get("BENCH_FLEET_HOSTS", 100))
TARGETS = int(os.environ.get("BENCH_FLEET_TARGETS", 10))
SESSIONS = int(os.environ.get("BENCH_FLEET_SESSIONS", 20))
RATE = float(os.environ.get("BENCH_FLEET_RATE", 5000))
SECONDS = float(os.environ.get("BENCH_FLEET_SECONDS", 5))
IDLE_SECONDS = float(os.environ.get("BENCH_FLEET_IDLE_SECONDS", 2))
DRAIN_SECONDS = float(os.environ.get("BENCH_FLEET_DRAIN_SECONDS", 30))
WORKERS = int(os.environ.get("BENCH_FLEET_WORKERS", 4))
CLIENT_PROCS = int(os.environ.get("BENCH_FLEET_CLIENT_PROCS", 2))
GATEWAY = "fleet-gateway"
OPERATORS = [{"principal": "CN=demo operator", "commands": "all"}]
PYSPY = os.environ.get("BENCH_FLEET_PYSPY")
PYSPY_OUT = os.environ.get("BENCH_FLEET_PYSPY_OUT", "/tmp/fleet-{process}.pyspy.txt")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
LIMITS = {"max_sessions": 256, "session_queue": 10000, "max_targets": 4 * HOSTS * TARGETS}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([BENCH, ROOT, RELAY_TESTS])}


def relay_config(folder: str, pki: Any, **sections: Any) -> dict[str, Any]:
    """A relay's config as the tests write it, but with the production timeouts (the tests'
    short sweep and reconnect intervals would cost 100 relays CPU an operator never pays)."""
    config = config_dict(folder, pki, limits=LIMITS, **sections)
    del config["timeouts"]
    return config


def progress(text: str) -> None:
    """A line on stderr, so a long run shows where it is."""
    print(f"bench_fleet {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def dump(path: str, data: Any) -> str:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f)
    return path


def metric(port: int, sample: str) -> float | None:
    """The value of the exact sample (name with labels) at the metrics endpoint on ``port``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


def quiet(pids: list[int], below: float = 15.0, timeout: float = 60.0) -> None:
    """Wait until each process uses under ``below`` % of a core over half a second (a
    server finishing the initial states would otherwise spill into the window)."""
    deadline = time.monotonic() + timeout
    while True:
        before = [cpu_seconds(p) for p in pids]
        time.sleep(0.5)
        busiest = max(100 * (cpu_seconds(p) - b) / 0.5 for p, b in zip(pids, before))
        if busiest < below:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the servers did not go quiet: {busiest:.0f} % of a core")


def start_hosts(procs: Procs, workdir: str, hosts: list[dict[str, Any]], workers: int
                ) -> list[ClientProc]:
    """The host processes, each with its share of ``hosts``, once every one is ready."""
    started = []
    for w in range(workers):
        share = hosts[w::workers]
        if not share:
            continue
        spec = os.path.join(workdir, f"hosts-{w}.json")
        with open(spec, "w", encoding="utf-8") as f:
            json.dump({"hosts": share, "targets_per_host": TARGETS}, f)
        log = os.path.join(workdir, f"hosts-{w}.log")
        proc = procs.start([sys.executable, "-m", "relaybench.hosts", "--spec", spec,
                            "--log", log], cwd=workdir, env=ENV, log=log, pipes=True)
        started.append(ClientProc(proc, len(share)))
    for worker in started:
        line = worker.read_line(300)
        if line != "ready":
            raise RuntimeError(f"host process: {line}")
    return started


#: gauges scraped from the server during the window: where messages wait
PROBES = {"session_queue_max": 'relay_session_queue_depth{aggregate="max"}',
          "bus_incoming_bytes_max": "fleet_bus_incoming_bytes"}


def measure(procs: Procs, workdir: str, label: str, port: int, expect_targets: int,
            workers: list[ClientProc], servers: dict[str, int], metrics_port: int
            ) -> dict[str, Any]:
    """Target list after hello, then the emission window, against the server on ``port``
    (its metrics on ``metrics_port``)."""
    k = max(1, min(CLIENT_PROCS, SESSIONS))
    sizes = [SESSIONS // k + (1 if i < SESSIONS % k else 0) for i in range(k)]
    window = f"{label}{int(time.time())}"
    clients = []
    t_open = time.monotonic()
    try:
        for size in sizes:  # one after the other: each measures its own lists alone
            proc = procs.start([sys.executable, "-m", "relaybench.client", "--port", str(port),
                                "--ca", os.path.join(workdir, "ca.pem"),
                                "--cert", os.path.join(workdir, "operator.pem"),
                                "--key", os.path.join(workdir, "operator-key.pem"),
                                "--sessions", str(size), "--window", window,
                                "--origin", ORIGIN, "--timeout", "120",
                                "--expect-targets", str(expect_targets)],
                               cwd=workdir, env=ENV, log=os.path.join(workdir, "client.log"),
                               pipes=True)
            client = ClientProc(proc, size)
            clients.append(client)
            line = client.read_line(180)
            if line != "ready":
                raise RuntimeError(f"client: {line}")
        def states() -> int:
            return sum(int(c.ask("count").split()[3]) for c in clients)

        wait_until(lambda: states() >= SESSIONS * expect_targets, 300,
                   "every session has every target's state")
        synced = time.monotonic() - t_open
        progress(f"{label}: every session has every state after {synced:.1f} s")
        quiet(list(servers.values()))
        pids = {**{name: [pid] for name, pid in servers.items()},
                "hosts": [w.proc.pid for w in workers],
                "clients": [c.proc.pid for c in clients]}
        idle0 = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        time.sleep(IDLE_SECONDS)
        cpu0 = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        busy0 = machine_busy()
        idle = {name: round(100 * (cpu0[name] - idle0[name]) / IDLE_SECONDS, 1)
                for name in pids if name != "clients"}
        progress(f"{label}: emitting {RATE:g}/s for {SECONDS:g} s")
        t0 = time.monotonic()
        share = RATE / len(workers)
        for worker in workers:
            worker.send(f"go {window} {share}")
        spies = []
        if PYSPY and label == "fleet":
            for process, pid in (("gateway", servers["gateway"]), ("host", workers[0].proc.pid)):
                spies.append(procs.start([
                    PYSPY, "record", "-p", str(pid), "-d", str(max(1, int(SECONDS))), "-r",
                    "200", "--nonblocking", "-f", "raw", "-o", PYSPY_OUT.format(process=process)],
                    cwd=workdir, log=os.path.join(workdir, "pyspy.log")))
        lags, backlogs = [], []
        probed: dict[str, list[float]] = {name: [] for name in PROBES}
        end = time.monotonic() + SECONDS
        for worker in workers:
            worker.ask("lag")
        while time.monotonic() < end:
            time.sleep(min(0.25, max(0.0, end - time.monotonic())))
            for worker in workers:
                _, lag, backlog = worker.ask("lag").split()
                lags.append(float(lag))
                backlogs.append(int(backlog))
            for name, sample in PROBES.items():
                value = metric(metrics_port, sample)
                if value is not None:
                    probed[name].append(value)
        emitted = sum(int(w.ask("halt").split()[1]) for w in workers)
        t_emit = time.monotonic()
        expected = emitted * SESSIONS
        received, dropped = drain(clients, expected, t_emit, DRAIN_SECONDS)
        t1 = time.monotonic()
        cpu1 = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        busy1 = machine_busy()
        rss = {name: rss_kib(pid) for name, pid in servers.items()}
        for spy in spies:
            spy.wait(60)
        latencies, reports = collect(clients, workdir, label)
        lists = [t for report in reports for t in report["target_list_s"]]
        closed = sum(report["closed"] for report in reports)
    finally:
        for client in clients:
            procs.stop(client.proc, timeout=5)
    elapsed = t1 - t0
    values = latencies.tolist()
    result: dict[str, Any] = {
        "sessions": SESSIONS, "targets": expect_targets,
        "target_list_after_hello": {
            "p50_ms": round(percentile(lists, 50) * 1000, 1),
            "max_ms": round(max(lists) * 1000, 1) if lists else float("nan"),
            "sessions": len(lists)},
        "all_states_in_every_session_s": round(synced, 3),
        "window_s": SECONDS, "emitted": emitted, "emitted_per_s": round(emitted / SECONDS, 1),
        "delivered": received, "expected": expected, "drain_s": round(t1 - t_emit, 3),
        "dropped_count_messages": dropped, "sessions_closed": closed,
        # how far the processes of hosts fell behind during the window: their reactors'
        # worst lateness, and the most messages their fleet buses held unsent
        "hosts_reactor_lag_max_ms": max(lags, default=0.0),
        "hosts_bus_backlog_max": max(backlogs, default=0),
        # the same for the server, scraped from its /metrics four times a second
        **{f"server_{name}": max(values, default=None) for name, values in probed.items()},
        "latency": {**summary_ms(values),
                    "max_ms": round(max(values) * 1000, 3) if values else float("nan")},
    }
    for name in pids:
        result[f"{name}_cpu_percent"] = round(100 * (cpu1[name] - cpu0[name]) / elapsed, 1)
    # the whole machine (every core: 100 % is all of them busy), for how loaded it was
    result["machine_busy_percent"] = round(
        100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 1)
    for name, value in idle.items():
        result[f"{name}_idle_cpu_percent"] = value
    for name, value in rss.items():
        result[f"{name}_rss_kib"] = value
    return result


def fleet_phase(procs: Procs, workdir: str, pki: Any) -> dict[str, Any]:
    host_ids = [f"h{i:03d}" for i in range(HOSTS)]
    nats = NatsServer(os.path.join(workdir, "nats"), host_ids=host_ids, gateways=(GATEWAY,))
    nats.start()
    try:
        trusted = sorted(nats.certs.gateway_principals.values())
        hosts = []
        for host_id in host_ids:
            folder = os.path.join(workdir, host_id)
            os.makedirs(folder)
            cert, key = nats.certs.hosts[host_id]
            config = relay_config(folder, pki,
                                  fleet={"enabled": True, "host_id": host_id,
                                         "trusted_gateways": trusted},
                                  nats={"servers": [nats.url],
                                        "tls": {"ca_path": nats.certs.ca_cert,
                                                "certificate_path": cert,
                                                "private_key_path": key}})
            hosts.append({"host_id": host_id, "folder": folder,
                          "relay_config": dump(os.path.join(folder, "relay.yaml"), config),
                          "registration_path": config["registration"]["listen_path"]})
        workers = start_hosts(procs, workdir, hosts, WORKERS)
        port, metrics_port = free_port(), free_port()
        cert, key = nats.certs.gateways[GATEWAY]
        gateway_config = dump(os.path.join(workdir, "gateway.yaml"), {
            "listen": {"bind": f"127.0.0.1:{port}", "public_url": PUBLIC_URL},
            "tls": {"certificate_path": pki.server_cert_path,
                    "private_key_path": pki.server_key_path, "client_ca_path": pki.ca_path},
            "authorization": {"operators": OPERATORS},
            "audit": {"path": os.path.join(workdir, "gateway-audit.sqlite3")},
            "metrics": {"listen": f"tcp:{metrics_port}"},
            "limits": LIMITS,
            "nats": {"servers": [nats.url],
                     "tls": {"ca_path": nats.certs.ca_cert, "certificate_path": cert,
                             "private_key_path": key}},
        })
        gateway = procs.start([TWISTD, "-n", "--pidfile=", "--logfile=-", "supervisor-fleet",
                               "--config", gateway_config], cwd=workdir, env=ENV,
                              log=os.path.join(workdir, "gateway.log"))
        wait_until(lambda: port_open(port), 60, "gateway listening", gateway)
        wait_until(lambda: metric(metrics_port, 'fleet_gateway_hosts{available="true"}')
                   == HOSTS, 120, "every host available at the gateway", gateway)
        assert nats.process is not None
        result = measure(procs, workdir, "fleet", port, HOSTS * TARGETS, workers,
                         {"gateway": gateway.pid, "nats_server": nats.process.pid},
                         metrics_port)
        result["hosts"] = HOSTS
        result["host_processes"] = len(workers)
        for worker in workers:
            worker.send("quit")
        procs.stop(gateway)
        for worker in workers:
            procs.stop(worker.proc)
        return result
    finally:
        nats.stop()


def floor_phase(procs: Procs, workdir: str, pki: Any) -> dict[str, Any]:
    folder = os.path.join(workdir, "floor")
    os.makedirs(folder)
    port, metrics_port = free_port(), free_port()
    config = relay_config(folder, pki, listen={"bind": f"127.0.0.1:{port}"},
                          metrics={"listen": f"tcp:{metrics_port}"})
    relay = procs.start([TWISTD, "-n", "--pidfile=", "--logfile=-", "supervisor-relay",
                         "--config", dump(os.path.join(folder, "relay.yaml"), config)],
                        cwd=folder, env=ENV, log=os.path.join(folder, "relay.log"))
    wait_until(lambda: port_open(port), 60, "floor relay listening", relay)
    workers = start_hosts(procs, workdir, [{
        "host_id": "floor", "folder": folder, "relay_config": None,
        "registration_path": config["registration"]["listen_path"]}], 1)
    result = measure(procs, workdir, "floor", port, TARGETS, workers, {"relay": relay.pid},
                     metrics_port)
    for worker in workers:
        worker.send("quit")
        procs.stop(worker.proc)
    procs.stop(relay)
    return result


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def main() -> None:
    raise_nofile(4 * HOSTS * TARGETS + 1024)
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="bfl", dir="/tmp"))
    procs = Procs()
    try:
        pki = make_pki(workdir)
        pki.operator.write(os.path.join(workdir, "operator.pem"),
                           os.path.join(workdir, "operator-key.pem"))
        fleet = fleet_phase(procs, workdir, pki)
        floor = floor_phase(procs, workdir, pki)
    finally:
        procs.stop_all()
    if os.environ.get("BENCH_FLEET_KEEP"):
        progress(f"logs and configs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    emit("fleet", {
        "rate_per_s": RATE, "fleet": fleet, "floor": floor,
        "ratios_fleet_to_floor": {
            "target_list_max": ratio(fleet["target_list_after_hello"]["max_ms"],
                                     floor["target_list_after_hello"]["max_ms"]),
            "latency_p50": ratio(fleet["latency"]["p50_ms"], floor["latency"]["p50_ms"]),
            "latency_p99": ratio(fleet["latency"]["p99_ms"], floor["latency"]["p99_ms"]),
            "server_cpu": ratio(fleet["gateway_cpu_percent"], floor["relay_cpu_percent"]),
            "server_rss": ratio(fleet["gateway_rss_kib"], floor["relay_rss_kib"]),
        },
        "goals": {"target_list_max_ms": 1000, "latency_p99_ms": 50},
    })


if __name__ == "__main__":
    main()
