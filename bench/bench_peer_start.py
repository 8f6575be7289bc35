"""(4) time to start 100 process children until all are running, ours beside the peers.

t0 is taken just before the daemon is launched (``twistd -n supervisor-target``, ``supervisord
-n``, ``circusd``, procmon); "running" is each child's own ``up`` report (CLOCK_MONOTONIC), so
the same event ends the clock for everyone. Also reported: launch → first child up (daemon
start-up: interpreter, imports, config) and first → last child up (the spawning itself).
The floor: the harness Popen()s the same children itself. Trials are interleaved peer by peer. Env: BENCH_START_CHILDREN (100), BENCH_TRIALS (3),
BENCH_PEERS. Prints one JSON object.

Beside it, the start-up floor of each Twisted daemon (``imports``): the wall time and RSS of an
interpreter that only imports what the daemon imports before it starts anything — ours
(twistd, the reactor without TLS as ``supervisor-target`` runs it, the target's modules),
procmon (the reactor and procmon, in its own venv), and the reactor alone in our venv with and
without the TLS stack that Twisted's reactor imports when pyOpenSSL is installed. Median of
BENCH_IMPORT_RUNS (5), interleaved.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import emit  # noqa: E402
from bench.peers import harness  # noqa: E402
from bench.peers.harness import env_int, guarded, median_of, ms, row  # noqa: E402

CHILDREN = env_int("BENCH_START_CHILDREN", 100)
TRIALS = env_int("BENCH_TRIALS", 3)
IMPORT_RUNS = env_int("BENCH_IMPORT_RUNS", 5)
#: what each daemon imports before it starts a child, and what the reactor alone costs
IMPORTS = {
    "ours": "import twisted.scripts.twistd, supervisor.target.tap; "
            "supervisor.target.tap.leave_out_tls(); "
            "import twisted.internet.reactor, supervisor.target.service, supervisor.ipc.service",
    "reactor": "import twisted.internet.reactor",
    "reactor_without_tls": "import sys; sys.modules['OpenSSL'] = None; import twisted.internet.reactor",
    "procmon": "import twisted.internet.reactor, twisted.runner.procmon",
}
_REPORT = "; import re; print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"


def trial(session: harness.Session, peer: str, index: int) -> dict:
    names = [f"{peer}{index}_{i:03d}" for i in range(CHILDREN)]
    mark = session.hub.mark()
    with session.running(peer, [(n, "hold") for n in names]) as d:
        ups = session.hub.wait_all_up(mark, names, 60 + CHILDREN, d.check_alive)
    times = sorted(m.t for m in ups.values())
    return {
        "all_running_ms": ms(times[-1] - d.launched_at),
        "first_child_ms": ms(times[0] - d.launched_at),
        "spawn_spread_ms": ms(times[-1] - times[0]),
    }


def floor_trial(session: harness.Session, index: int) -> dict:
    """The floor: the harness itself Popen()s the same children one after another."""
    import signal
    import subprocess

    from bench.peers import daemons

    names = [f"floor{index}_{i:03d}" for i in range(CHILDREN)]
    mark = session.hub.mark()
    procs = []
    t0 = time.monotonic()
    try:
        for n in names:
            procs.append(subprocess.Popen(daemons.child_argv("hold", n, session.hub.path),
                                          stdout=subprocess.PIPE, start_new_session=True))
        ups = session.hub.wait_all_up(mark, names, 60 + CHILDREN)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
            p.stdout.close()
    times = sorted(m.t for m in ups.values())
    return {"all_running_ms": ms(times[-1] - t0), "first_child_ms": ms(times[0] - t0),
            "spawn_spread_ms": ms(times[-1] - times[0])}


def import_floor() -> dict:
    """Wall time and RSS of interpreters that only import (see the module docstring)."""
    import statistics
    import subprocess

    from bench.peers import envs

    pythons = {name: sys.executable for name in IMPORTS}
    pythons["procmon"] = envs.ensure("procmon")
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in IMPORTS}
    for _ in range(IMPORT_RUNS):
        for name, code in IMPORTS.items():
            t0 = time.monotonic()
            out = subprocess.run([pythons[name], "-c", code + _REPORT], capture_output=True, text=True,
                                 timeout=120, check=True)
            samples[name].append((time.monotonic() - t0, int(out.stdout.split()[-1])))
    return {name: {"wall_ms": ms(statistics.median(t for t, _ in got)),
                   "rss_kib": statistics.median(r for _, r in got)} for name, got in samples.items()}


def main() -> None:
    harness.use_results_dir()
    peers = harness.selected_peers()
    runs: dict[str, list[dict]] = {"floor": [], **{p: [] for p in peers}}
    failed: dict[str, dict] = {}
    with harness.Session() as session:
        for index in range(TRIALS):
            runs["floor"].append(floor_trial(session, index))
            for peer in peers:
                if peer in failed:
                    continue
                result = guarded(peer, lambda: trial(session, peer, index))
                if "unavailable" in result:
                    failed[peer] = result
                else:
                    runs[peer].append(result)
    imports = guarded("imports", import_floor)
    results = {
        p: failed.get(p) or {k: median_of(t, k) for k in ("all_running_ms", "first_child_ms", "spawn_spread_ms")}
        | {"trials": t}
        for p, t in runs.items()
    }

    def best_peer_ratio(key: str) -> bool | None:
        ours = results["ours"].get(key)
        peers_v = [r[key] for p, r in results.items() if p not in ("ours", "floor") and r.get(key)]
        if not isinstance(ours, (int, float)) or not peers_v:
            return None
        return min(peers_v) / ours >= 2

    values = lambda key: {p: harness.value(r, key) for p, r in results.items()}  # noqa: E731
    rows = [
        row(f"start {CHILDREN} children: launch → all running (ms)", values("all_running_ms"),
            "≥ 2× faster than the best peer", best_peer_ratio("all_running_ms")),
        row(f"start {CHILDREN} children: launch → first child up (ms)", values("first_child_ms")),
        row(f"start {CHILDREN} children: first → last child up (ms)", values("spawn_spread_ms"),
            "≥ 2× faster than the best peer", best_peer_ratio("spawn_spread_ms")),
    ]
    if "unavailable" not in imports:
        for key, label in (("wall_ms", "imports before the first child (ms)"), ("rss_kib", "RSS after those imports (KiB)")):
            rows.append(row(label, {"ours": imports["ours"][key], "procmon": imports["procmon"][key],
                                    "floor": imports["reactor_without_tls"][key]}))
    emit("peer_start", {
        "title": f"(4) start {CHILDREN} process children until all are running",
        "children": CHILDREN, "trials": TRIALS, "results": results, "imports": imports, "rows": rows,
        "method": "t0 just before launching the daemon; each child's own up report ends the clock",
        "generated_at": time.time(),
    })


if __name__ == "__main__":
    main()
