"""(5) event delivery: time from a child's state change (the harness SIGKILLs it) to a
subscriber seeing the exit event — our IPC ``events.subscribe`` stream (``child_exited``),
supervisord's event listener protocol (``PROCESS_STATE_EXITED``) and circus's zmq pub/sub
(``watcher.<name>.reap``). Each subscriber is a separate client process that stamps
CLOCK_MONOTONIC when it has decoded the event. procmon publishes no events. The floor is
``peers/events_floor.py``: a bare epoll loop that reaps the child through its pidfd and writes
one NDJSON line to the same subscriber as ours, with nothing of a supervisor in between.

A kill whose exit event never reaches the subscriber (circus can drop its ``reap`` event when
its poll sees the zombie before its waitpid does) is counted in ``lost_events``, not timed.
Between kills the harness waits for the killed child's restart. Warm-up kills (until one event
arrives, at least 2) are discarded. Env: BENCH_EVENTS (20 per trial), BENCH_TRIALS (3),
BENCH_EVENT_CHILDREN (20), BENCH_PEERS. Prints one JSON object.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import emit  # noqa: E402
from bench.peers import daemons, harness  # noqa: E402
from bench.peers.harness import env_int, guarded, lat_summary, median_of, row  # noqa: E402

EVENTS = env_int("BENCH_EVENTS", 20)
TRIALS = env_int("BENCH_TRIALS", 3)
CHILDREN = env_int("BENCH_EVENT_CHILDREN", 20)
MAX_WARMUP = 10


def measure(session: harness.Session, peer: str) -> dict:
    hub = session.hub
    names = [f"e_{i:03d}" for i in range(CHILDREN)]
    extra = {"has_listener": True} if peer == "supervisord" else {}
    mark = hub.mark()
    with session.running(peer, [(n, "hold") for n in names], **extra) as d:
        current = {n: m.pid for n, m in hub.wait_all_up(mark, names, 60 + CHILDREN, d.check_alive).items()}
        d.wait_ready()
        args = d.subscriber_args()
        if args is not None:
            sub = session.popen([d.python, daemons.DRIVER, *args], stdout=subprocess.PIPE)
            line = harness.read_line(sub, 30, f"{peer} subscriber")
            if line != "ready":
                raise RuntimeError(f"{peer} subscriber said {line!r}")
        restart_timeout = 10 if peer == "supervisord" else 5

        def kill_once(name: str) -> float | None:
            """SIGKILL the child, wait for its restart; the event latency if the event came."""
            before = hub.mark()
            old = current[name]
            t_kill = time.monotonic()
            os.kill(old, signal.SIGKILL)
            hub.wait(lambda: any(m.pid != old for m in hub.since(before, "up", name)), restart_timeout,
                     f"{peer}: restart of {name}", d.check_alive)
            current[name] = [m.pid for m in hub.since(before, "up", name) if m.pid != old][0]
            try:
                hub.wait(lambda: bool(hub.since(before, "ev", name)), restart_timeout,
                         f"{peer}: exit event of {name}", d.check_alive)
            except TimeoutError:
                return None
            return hub.since(before, "ev", name)[0].t - t_kill

        count = 0
        for attempt in range(MAX_WARMUP):
            if kill_once(names[attempt % CHILDREN]) is not None:
                count += 1
                if count >= 2:
                    break
        else:
            raise RuntimeError(f"{peer}: no exit event reached the subscriber in {MAX_WARMUP} kills")
        trials = []
        k = lost = 0
        for _ in range(TRIALS):
            samples = []
            for _ in range(EVENTS):
                latency = kill_once(names[k % CHILDREN])
                k += 1
                if latency is None:
                    lost += 1  # counted and reported, left out of the latencies
                else:
                    samples.append(latency)
            if len(samples) < EVENTS / 2:
                raise RuntimeError(f"{peer}: {EVENTS - len(samples)} of {EVENTS} exit events never arrived")
            trials.append(lat_summary(samples))
    return {"p50_ms": median_of(trials, "p50_ms"), "p99_ms": median_of(trials, "p99_ms"),
            "lost_events": lost, "kills": k, "trials": trials}


def main() -> None:
    harness.use_results_dir()
    peers = harness.selected_peers()
    results: dict[str, dict] = {}
    with harness.Session() as session:
        for peer in peers:
            if not daemons.PEERS[peer].has_events:
                results[peer] = {"unavailable": daemons.UNAVAILABLE[(peer, "events")]}
                continue
            results[peer] = guarded(peer, lambda: measure(session, peer))
        results["floor"] = guarded("floor", lambda: measure(session, "floor"))
    ours = results["ours"].get("p50_ms")
    others = [r["p50_ms"] for p, r in results.items() if p not in ("ours", "floor") and r.get("p50_ms")]
    met = (min(others) / ours >= 2) if isinstance(ours, (int, float)) and others else None
    values = lambda key: {p: harness.value(r, key) for p, r in results.items()}  # noqa: E731
    rows = [
        row("event delivery, child exit → subscriber, p50 (ms)", values("p50_ms"),
            "≥ 2× faster than the best peer", met),
        row("event delivery, child exit → subscriber, p99 (ms)", values("p99_ms")),
        row("exit events lost (count)", values("lost_events"), compare=False),
    ]
    emit("peer_events", {
        "title": "(5) event delivery latency",
        "events_per_trial": EVENTS, "trials": TRIALS, "children": CHILDREN,
        "circus_check_delay_s": daemons.CIRCUS_CHECK_DELAY, "results": results, "rows": rows,
        "method": "harness SIGKILLs a child at t0; subscriber process stamps CLOCK_MONOTONIC on decode",
        "generated_at": time.time(),
    })


if __name__ == "__main__":
    main()
