"""(1) crash → restarted latency for a process child, beside supervisord, circus, procmon and the
bare ``Popen().wait()`` floor, with each supervisor's CPU use meanwhile.

The child prints a line, reports ``up``, reports ``exit`` and exits 1 at once, so every
supervisor runs a crash loop; latency = the new child's first-output time minus the old
child's exit time, both taken by the children on CLOCK_MONOTONIC. The first BENCH_WARMUP
crashes are discarded. Env: BENCH_CRASHES (200), BENCH_TRIALS (3), BENCH_SLOW_TRIALS (1:
supervisord's trials, ~1 s per crash), BENCH_SLOW_CRASHES (60: supervisord's crashes per trial,
so that its one trial takes a minute, not three), BENCH_PEERS.

Prints one JSON object.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import emit  # noqa: E402
from bench.peers import daemons, harness  # noqa: E402
from bench.peers.harness import env_int, guarded, lat_summary, median_of, ms, row  # noqa: E402

CRASHES = env_int("BENCH_CRASHES", 200)
TRIALS = env_int("BENCH_TRIALS", 3)
SLOW_TRIALS = env_int("BENCH_SLOW_TRIALS", 1)
SLOW_CRASHES = env_int("BENCH_SLOW_CRASHES", 60)
WARMUP = env_int("BENCH_WARMUP", 5)


def pair_latencies(messages: list[harness.Message]) -> list[float]:
    """For each exit, the next ``up`` from another pid: the restart latency."""
    ordered = sorted(messages, key=lambda m: m.t)
    out = []
    pending = None
    for m in ordered:
        if m.kind == "exit":
            pending = m
        elif m.kind == "up" and pending is not None and m.pid != pending.pid:
            out.append(m.t - pending.t)
            pending = None
    return out


def floor_trial(session: harness.Session, trial: int) -> dict:
    name = f"floor_{trial}"
    argv = daemons.child_argv("crash", name, session.hub.path)
    mark = session.hub.mark()
    t_cpu0, t0 = os.times(), time.monotonic()
    for _ in range(WARMUP + CRASHES + 1):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        proc.stdout.read()
        proc.wait()
        proc.stdout.close()
    t_cpu1, t1 = os.times(), time.monotonic()
    session.hub.wait(lambda: len(session.hub.since(mark, "up", name)) >= WARMUP + CRASHES + 1,
                     10, "floor datagrams")
    lat = pair_latencies(session.hub.since(mark, name=name))[WARMUP:WARMUP + CRASHES]
    cpu = (t_cpu1.user + t_cpu1.system) - (t_cpu0.user + t_cpu0.system)
    return {**lat_summary(lat), "cpu_percent": round(100 * cpu / (t1 - t0), 2),
            "cpu_ms_per_restart": ms(cpu / (WARMUP + CRASHES + 1))}


def peer_trial(session: harness.Session, peer: str, trial: int) -> dict:
    name = f"{peer}_{trial}"
    hub = session.hub
    per_crash_timeout = 5.0 if peer == "supervisord" else 1.0
    crashes = SLOW_CRASHES if peer == "supervisord" else CRASHES
    with session.running(peer, [(name, "crash")]) as d:
        mark = hub.mark()

        def exits() -> int:
            return len(hub.since(mark, "exit", name))

        hub.wait(lambda: exits() >= WARMUP, 60 + WARMUP * per_crash_timeout, f"{peer} warm-up crashes",
                 d.check_alive)
        cpu0, t0 = harness.cpu_seconds(d.pid), time.monotonic()
        first = exits()
        hub.wait(lambda: exits() >= first + crashes, 30 + crashes * per_crash_timeout,
                 f"{peer}: {crashes} crashes", d.check_alive)
        cpu1, t1 = harness.cpu_seconds(d.pid), time.monotonic()
        crashed = exits() - first
        hub.wait(lambda: len(hub.since(mark, "up", name)) > first + crashes, 30,
                 f"{peer}: last restart", d.check_alive)
    lat = pair_latencies(hub.since(mark, name=name))
    lat = lat[first:first + crashes]
    return {**lat_summary(lat), "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
            "cpu_ms_per_restart": ms((cpu1 - cpu0) / max(1, crashed)),
            "wall_s": round(t1 - t0, 3)}


def aggregate(trials: list[dict]) -> dict:
    return {
        "p50_ms": median_of(trials, "p50_ms"),
        "p99_ms": median_of(trials, "p99_ms"),
        "cpu_percent": median_of(trials, "cpu_percent"),
        "cpu_ms_per_restart": median_of(trials, "cpu_ms_per_restart"),
        "trials": trials,
    }


def main() -> None:
    harness.use_results_dir()
    peers = harness.selected_peers()
    runs: dict[str, list[dict]] = {"floor": [], **{p: [] for p in peers}}
    failed: dict[str, dict] = {}
    with harness.Session() as session:
        for trial in range(TRIALS):
            runs["floor"].append(floor_trial(session, trial))
            for peer in peers:
                if peer in failed or (peer == "supervisord" and trial >= SLOW_TRIALS):
                    continue
                result = guarded(peer, lambda: peer_trial(session, peer, trial))
                if "unavailable" in result:
                    failed[peer] = result
                else:
                    runs[peer].append(result)
    results = {name: failed.get(name) or aggregate(trials) for name, trials in runs.items()}
    floor_p50 = results["floor"]["p50_ms"]
    ours = results["ours"]
    overhead = round(ours["p50_ms"] - floor_p50, 3) if ours.get("p50_ms") is not None else None
    if overhead is not None:
        ours["overhead_above_floor_p50_ms"] = overhead
    values = lambda key: {n: harness.value(r, key) for n, r in results.items()}  # noqa: E731
    rows = [
        row("crash→restart p50 (ms)", values("p50_ms"),
            "overhead above floor ≤ 2 ms", overhead is not None and overhead <= 2),
        row("crash→restart p99 (ms)", values("p99_ms")),
        row("restart overhead above floor, p50 (ms)",
            {n: (round(r["p50_ms"] - floor_p50, 3) if r.get("p50_ms") is not None else harness.value(r, "p50_ms"))
             for n, r in results.items() if n != "floor"}),
        # informational: the loops run at different rates (supervisord restarts ~1/s)
        row("supervisor CPU during crash loop (% of a core)", values("cpu_percent"), compare=False),
        row("supervisor CPU per restart (ms)", values("cpu_ms_per_restart")),
    ]
    emit("peer_restart", {
        "title": "(1) crash → restarted latency, process child",
        "crashes_per_trial": CRASHES, "supervisord_crashes_per_trial": SLOW_CRASHES, "trials": TRIALS, "supervisord_trials": SLOW_TRIALS,
        "warmup_crashes": WARMUP, "results": results, "rows": rows,
        "circus_check_delay_s": daemons.CIRCUS_CHECK_DELAY,
        "method": "child-side CLOCK_MONOTONIC: new child's first output minus old child's exit; "
                  "CPU = daemon utime+stime from /proc/<pid>/stat over the crash loop",
        "generated_at": time.time(),
    })


if __name__ == "__main__":
    main()
