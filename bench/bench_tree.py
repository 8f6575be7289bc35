"""Supervision core: 10,000 task children and 200 process children.

Prints one JSON object: start time for 10,000 tasks, restart latency (crash → running again,
backoff 0) for tasks and for processes, time to build the state of 200 children, shutdown
time, peak RSS.

The state build is timed after a full collection and over enough calls that its p99 is not
simply the slowest call: otherwise it measures where the collector happens to pay for the
10,000-task tree torn down just before, not the build.
"""

from __future__ import annotations

import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from bench._common import emit, peak_rss_kib, summary_ms  # noqa: E402
from supervisor import ChildKind, ChildSpec, Policy, Supervisor, SupervisorSpec  # noqa: E402
from supervisor.testing import ManualTask, TreeHarness  # noqa: E402

ZERO_BACKOFF = Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0,
                      child_restart_limit=1_000_000, supervisor_failure_limit=1_000_000)
TASKS = int(os.environ.get("BENCH_TASKS", 10_000))
CRASHES = int(os.environ.get("BENCH_CRASHES", 1_000))
PROCESSES = int(os.environ.get("BENCH_PROCESSES", 200))
PROCESS_CRASHES = int(os.environ.get("BENCH_PROCESS_CRASHES", 100))
STATE_BUILDS = int(os.environ.get("BENCH_STATE_BUILDS", 500))


def tasks_benchmark() -> dict:
    work = ManualTask()
    spec = SupervisorSpec(policy=ZERO_BACKOFF,
                          children=[ChildSpec(f"t{i}", ChildKind.TASK, factory=work) for i in range(TASKS)])
    harness = TreeHarness(spec)
    began = time.perf_counter()
    harness.start()
    start_s = time.perf_counter() - began
    latencies = []
    for i in range(CRASHES):
        path = f"/root/t{(i * 7) % TASKS}"
        t0 = time.perf_counter()
        harness.crash(path)
        harness.clock.advance(0)
        latencies.append(time.perf_counter() - t0)
        assert harness.lifecycle(path) == "running"
    began = time.perf_counter()
    harness.stop()
    stop_s = time.perf_counter() - began
    return {"tasks": TASKS, "start_all_s": round(start_s, 4), "task_restart": summary_ms(latencies),
            "shutdown_s": round(stop_s, 4)}


async def processes_benchmark(reactor) -> dict:
    command = [sys.executable, "-S", "-c", "import time; time.sleep(3600)"]
    spec = SupervisorSpec(policy=ZERO_BACKOFF, children=[
        ChildSpec(f"p{i}", ChildKind.PROCESS, command=command) for i in range(PROCESSES)])
    sup = Supervisor(spec, reactor=reactor, clock=reactor)
    began = time.perf_counter()
    sup.startService()
    spawn_s = time.perf_counter() - began
    state_builds = []
    gc.collect()
    for _ in range(STATE_BUILDS):
        began = time.perf_counter()
        state = sup.state()
        state_builds.append(time.perf_counter() - began)
    assert len(state["runtime_state"]) == PROCESSES
    latencies = []
    for i in range(PROCESS_CRASHES):
        child = sup.child(f"/root/p{i % PROCESSES}")
        before = child.generation
        t0 = time.perf_counter()
        os.kill(child.runner.pid, 9)
        while not (child.generation > before and child.state.value == "running"):
            await task.deferLater(reactor, 0.0005, lambda: None)
        latencies.append(time.perf_counter() - t0)
    began = time.perf_counter()
    await sup.stopService()
    return {"processes": PROCESSES, "spawn_all_s": round(spawn_s, 4), "state_build": summary_ms(state_builds),
            "process_restart": summary_ms(latencies), "process_shutdown_s": round(time.perf_counter() - began, 4)}


def main(reactor) -> defer.Deferred:
    async def run() -> None:
        result = tasks_benchmark()
        result.update(await processes_benchmark(reactor))
        result["peak_rss_kib"] = peak_rss_kib()
        result["targets"] = {"start_all_s": "< 2", "task_restart.p50_ms": "< 1",
                             "process_restart.p50_ms": "< 50", "state_build.p50_ms": "< 5"}
        emit("tree", result)

    return defer.Deferred.fromCoroutine(run())


if __name__ == "__main__":
    task.react(main)
