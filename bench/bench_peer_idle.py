"""(3) supervisor daemon RSS and idle CPU with 100 process children, ours beside the peers.

Each daemon is started with 20 children, measured, stopped, then started with 100 children;
after all are up and BENCH_IDLE_SETTLE seconds (2) have passed, its CPU (utime+stime of the
daemon process only, /proc/<pid>/stat) is read over BENCH_IDLE_SECONDS (30) and its VmRSS at the
end. Per additional child = (RSS@100 − RSS@20) / 80. circus runs with the check_delay it uses
for its fastest restart (see bench_peer_restart). Then ours alone with BENCH_IDLE_HUGE
(1,000) children: RSS and CPU over BENCH_IDLE_HUGE_SECONDS (5) once all are up (0: skipped).
Env: BENCH_IDLE_SECONDS, BENCH_IDLE_CHILDREN ("20,100"), BENCH_PEERS. Prints one JSON object.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import emit, rss_kib  # noqa: E402
from bench.peers import daemons, harness  # noqa: E402
from bench.peers.harness import env_float, guarded, row  # noqa: E402

DURATION = env_float("BENCH_IDLE_SECONDS", 30)
SETTLE = env_float("BENCH_IDLE_SETTLE", 2)
SMALL, LARGE = (int(n) for n in os.environ.get("BENCH_IDLE_CHILDREN", "20,100").split(","))
HUGE = int(os.environ.get("BENCH_IDLE_HUGE", 1000))
HUGE_SECONDS = env_float("BENCH_IDLE_HUGE_SECONDS", 5)


def measure(session: harness.Session, peer: str, size: int, seconds: float) -> dict:
    names = [f"i{size}_{i:03d}" for i in range(size)]
    mark = session.hub.mark()
    with session.running(peer, [(n, "hold") for n in names]) as d:
        session.hub.wait_all_up(mark, names, 60 + size, d.check_alive)
        time.sleep(SETTLE)  # measurement window, not synchronisation: let start-up work finish
        d.check_alive()
        cpu0, t0 = harness.cpu_seconds(d.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = harness.cpu_seconds(d.pid), time.monotonic()
        rss = rss_kib(d.pid)
        restarts = len(session.hub.since(mark, "up")) - size
    return {"rss_kib": rss, "idle_cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
            "window_s": round(t1 - t0, 3), "unexpected_restarts": restarts}


def main() -> None:
    harness.use_results_dir()
    peers = harness.selected_peers()
    results: dict[str, dict] = {}
    with harness.Session() as session:
        for peer in peers:
            def run(peer: str = peer) -> dict:
                small = measure(session, peer, SMALL, min(DURATION, 1.0))
                large = measure(session, peer, LARGE, DURATION)
                return {
                    "rss_kib": large["rss_kib"], "idle_cpu_percent": large["idle_cpu_percent"],
                    f"rss_kib_{SMALL}": small["rss_kib"],
                    "kib_per_additional_child": round((large["rss_kib"] - small["rss_kib"]) / (LARGE - SMALL), 2),
                    "window_s": large["window_s"], "unexpected_restarts": large["unexpected_restarts"],
                }
            results[peer] = guarded(peer, run)
        if HUGE:
            results["ours"][f"at_{HUGE}"] = guarded("ours", lambda: measure(session, "ours", HUGE, HUGE_SECONDS))
    values = lambda key: {p: harness.value(r, key) for p, r in results.items()}  # noqa: E731
    rss = {p: r["rss_kib"] for p, r in results.items() if p != "ours" and "rss_kib" in r}
    ours = results["ours"]
    rss_met = per_child_met = cpu_met = None
    if "rss_kib" in ours:
        rss_met = (not rss) or ours["rss_kib"] <= 1.5 * min(rss.values())
        per_child_met = ours["kib_per_additional_child"] <= 20
        cpu_met = ours["idle_cpu_percent"] < 1
    rows = [
        row(f"daemon RSS with {LARGE} children (KiB)", values("rss_kib"), "≤ 1.5× the leanest peer", rss_met),
        row(f"RSS per additional child, {SMALL}→{LARGE} (KiB)", values("kib_per_additional_child"),
            "≤ 20 KiB", per_child_met),
        row(f"idle CPU with {LARGE} children (% of a core)", values("idle_cpu_percent"), "< 1 %", cpu_met),
    ]
    if HUGE:
        rows.append(row(f"daemon RSS with {HUGE} children (KiB)",
                        {"ours": harness.value(ours, f"at_{HUGE}", "rss_kib")}, compare=False))
    emit("peer_idle", {
        "title": f"(3) daemon RSS and idle CPU with {LARGE} process children",
        "idle_seconds": DURATION, "settle_seconds": SETTLE, "sizes": [SMALL, LARGE],
        "circus_check_delay_s": daemons.CIRCUS_CHECK_DELAY, "results": results, "rows": rows,
        "method": "VmRSS and utime+stime of the daemon process itself (children excluded)",
        "generated_at": time.time(),
    })


if __name__ == "__main__":
    main()
