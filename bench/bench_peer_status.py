"""(2) status query latency with 20 and 100 process children: our IPC ``status`` (the lean
flat rows, not the full ``state``), supervisord's
XML-RPC ``getAllProcessInfo`` (over its unix HTTP socket) and circus's ``status`` (its zmq
client), each timed in-process by a client running under that tool's own interpreter
(bench/peers/driver.py): send, read the whole reply, decode it. procmon has no status API.

Env: BENCH_STATUS_QUERIES (500 per trial), BENCH_TRIALS (3), BENCH_STATUS_CHILDREN ("20,100"),
BENCH_PEERS. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import emit  # noqa: E402
from bench.peers import daemons, harness  # noqa: E402
from bench.peers.harness import env_int, guarded, lat_summary, median_of, row  # noqa: E402

QUERIES = env_int("BENCH_STATUS_QUERIES", 500)
TRIALS = env_int("BENCH_TRIALS", 3)
SIZES = [int(n) for n in os.environ.get("BENCH_STATUS_CHILDREN", "20,100").split(",")]


def measure(session: harness.Session, peer: str, size: int) -> dict:
    names = [f"s{size}_{i:03d}" for i in range(size)]
    with session.running(peer, [(n, "hold") for n in names]) as d:
        mark = session.hub.mark()
        session.hub.wait_all_up(mark, names, 60 + size, d.check_alive)
        d.wait_ready()
        trials = []
        for _ in range(TRIALS):
            out = subprocess.run([d.python, daemons.DRIVER, "status", *d.status_args(), str(QUERIES)],
                                 capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise RuntimeError(f"status driver failed: {out.stderr[-1500:]}")
            data = json.loads(out.stdout.strip().splitlines()[-1])
            if data["rows"] != size:  # circus would add circusd-stats if it ran
                raise RuntimeError(f"status listed {data['rows']} rows, expected {size}")
            trials.append(lat_summary(data["samples"]))
    return {"p50_ms": median_of(trials, "p50_ms"), "p99_ms": median_of(trials, "p99_ms"), "trials": trials}


def main() -> None:
    harness.use_results_dir()
    peers = harness.selected_peers()
    results: dict[str, dict] = {}
    with harness.Session() as session:
        for size in SIZES:
            for peer in peers:
                key = f"{peer}"
                results.setdefault(key, {})
                if not daemons.PEERS[peer].has_status:
                    results[key] = {"unavailable": daemons.UNAVAILABLE[(peer, "status")]}
                    continue
                results[key][str(size)] = guarded(peer, lambda: measure(session, peer, size))
    rows = []
    for size in SIZES:
        for stat in ("p50_ms", "p99_ms"):
            values = {p: harness.value(r, str(size), stat) for p, r in results.items()}
            target, met = None, None
            if size == 20 and stat == "p50_ms":
                ours, supd = values.get("ours"), values.get("supervisord")
                target = "≤ 1 ms and ≥ 5× faster than supervisord"
                if isinstance(ours, (int, float)):
                    met = ours <= 1 and (not isinstance(supd, (int, float)) or supd / ours >= 5)
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
