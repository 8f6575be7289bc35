"""(2) status query latency with 20 and 100 process children: our IPC ``status`` (the lean
flat rows, not the full ``state``), supervisord's
XML-RPC ``getAllProcessInfo`` (over its unix HTTP socket) and circus's ``status`` (its zmq
client), each timed in-process by a client running under that tool's own interpreter
(bench/peers/driver.py): send, read the whole reply, decode it. procmon has no status API.

Env: BENCH_STATUS_QUERIES (500 per trial), BENCH_TRIALS (3), BENCH_STATUS_CHILDREN ("20,100"),
BENCH_PEERS. Prints one JSON object.

The floor (beside ours): the same client against a bare Twisted server that answers each
request with our target's captured reply (bench/peers/status_floor.py), so the reply's size
and the socket round trip are priced apart from our ``status`` itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import emit  # noqa: E402
from bench.peers import daemons, harness  # noqa: E402
from bench.peers.harness import env_int, guarded, lat_summary, median_of, row  # noqa: E402

QUERIES = env_int("BENCH_STATUS_QUERIES", 500)
TRIALS = env_int("BENCH_TRIALS", 3)
FLOOR = pathlib.Path(__file__).parent / "peers" / "status_floor.py"
SIZES = [int(n) for n in os.environ.get("BENCH_STATUS_CHILDREN", "20,100").split(",")]


def trial(python: str, args: list[str], size: int) -> dict:
    out = subprocess.run([python, daemons.DRIVER, "status", *args, str(QUERIES)],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"status driver failed: {out.stderr[-1500:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    if data["rows"] != size:  # circus would add circusd-stats if it ran
        raise RuntimeError(f"status listed {data['rows']} rows, expected {size}")
    return lat_summary(data["samples"])


def captured_reply(path: str) -> bytes:
    """One ``status`` reply line of our target, as it sent it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        request = {"request_id": "floor", "method": "status", "params": {"target_id": daemons.TARGET_ID}}
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("the target closed the status connection")
            reply += chunk
    return reply


def summary(trials: list[dict], **extra) -> dict:
    return {"p50_ms": median_of(trials, "p50_ms"), "p99_ms": median_of(trials, "p99_ms"),
            "trials": trials, **extra}


def measure(session: harness.Session, peer: str, size: int, floors: dict) -> dict:
    names = [f"s{size}_{i:03d}" for i in range(size)]
    with session.running(peer, [(n, "hold") for n in names]) as d:
        mark = session.hub.mark()
        session.hub.wait_all_up(mark, names, 60 + size, d.check_alive)
        d.wait_ready()
        trials = [trial(d.python, d.status_args(), size) for _ in range(TRIALS)]
        if peer == "ours":
            floors[str(size)] = guarded("floor", lambda: floor(d.python, d.workdir, captured_reply(d.socket_path()), size))
    return summary(trials)


def floor(python: str, workdir, reply: bytes, size: int) -> dict:
    """The same client against a Twisted server answering with ``reply`` (see module doc)."""
    reply_file, path = workdir / "floor-reply.json", workdir / "floor.sock"
    reply_file.write_bytes(reply)
    server = subprocess.Popen([python, str(FLOOR), str(path), str(reply_file)],
                              stdout=subprocess.PIPE, text=True)
    try:
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the status floor server did not start")
        trials = [trial(python, ["ours", str(path), daemons.TARGET_ID], size) for _ in range(TRIALS)]
    finally:
        server.kill()
        server.wait(timeout=30)
    return summary(trials, reply_bytes=len(reply))


def main() -> None:
    harness.use_results_dir()
    peers = harness.selected_peers()
    results: dict[str, dict] = {}
    floors: dict[str, dict] = {}
    with harness.Session() as session:
        for size in SIZES:
            for peer in peers:
                key = f"{peer}"
                results.setdefault(key, {})
                if not daemons.PEERS[peer].has_status:
                    results[key] = {"unavailable": daemons.UNAVAILABLE[(peer, "status")]}
                    continue
                results[key][str(size)] = guarded(peer, lambda: measure(session, peer, size, floors))
    if floors:
        results["floor"] = floors
    rows = []
    for size in SIZES:
        for stat in ("p50_ms", "p99_ms"):
            values = {p: harness.value(r, str(size), stat) for p, r in results.items()}
            target, met = None, None
            ours, supd, circus = (values.get(p) for p in ("ours", "supervisord", "circus"))
            known = [isinstance(v, (int, float)) for v in (ours, supd, circus)]
            if size == 20 and stat == "p50_ms":
                target = "≤ ½ circus and ≥ 5× faster than supervisord"
                if all(known):
                    met = ours <= circus / 2 and supd / ours >= 5
            elif size == 100 and stat == "p99_ms":
                target = "≤ ½ circus"
                if known[0] and known[2]:
                    met = ours <= circus / 2
            rows.append(row(f"status, {size} children, {stat[:3]} (ms)", values, target, met))
    emit("peer_status", {
        "title": "(2) status query latency",
        "queries_per_trial": QUERIES, "trials": TRIALS, "sizes": SIZES,
        "results": results, "rows": rows,
        "method": "client-side perf_counter around one call incl. reply decode; persistent "
                  "connection; 20 warm-up calls; median over trials of each trial's p50/p99",
        "generated_at": time.time(),
    })


if __name__ == "__main__":
    main()
