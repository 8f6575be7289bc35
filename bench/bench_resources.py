"""Cost of resource sampling: the target's CPU with 100 process children, sampling off and on.

``twistd -n supervisor-target`` runs 100 ``sleep`` children twice: with
``observability.resources.interval_ms: 0`` (today's idle figure) and with the default 2000.
Once all children run and BENCH_RESOURCES_SETTLE seconds (3) have passed, the daemon's own CPU
(utime+stime, /proc/<pid>/stat, children excluded) is read over BENCH_RESOURCES_SECONDS (30).
The extra CPU is the difference. Beside it, the sampler alone: one sample of the same 100
process groups, timed in this process (CPU time per sample over 20 samples), as a share of a
core at the default interval. Env: BENCH_RESOURCES_SECONDS, BENCH_RESOURCES_SETTLE,
BENCH_RESOURCES_CHILDREN (100). Prints one JSON object.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import yaml  # noqa: E402

from bench._common import emit, rss_kib  # noqa: E402
from bench.peers.harness import cpu_seconds, env_float, row  # noqa: E402

DURATION = env_float("BENCH_RESOURCES_SECONDS", 30)
SETTLE = env_float("BENCH_RESOURCES_SETTLE", 3)
CHILDREN = int(os.environ.get("BENCH_RESOURCES_CHILDREN", "100"))
INTERVAL_MS = 2000
SLEEP = shutil.which("sleep") or "/bin/sleep"
TWISTD = str(pathlib.Path(sys.executable).parent / "twistd")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def children_of(pid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    count += 1
        except (OSError, ValueError, IndexError):
            pass
    return count


def measure(workdir: str, interval_ms: int) -> dict:
    config = {
        "supervisor": {"name": "resources bench"},
        "observability": {"resources": {"interval_ms": interval_ms}},
        "children": [{"name": f"s{i:03d}", "kind": "process", "command": [SLEEP, "3600"]}
                     for i in range(CHILDREN)],
    }
    path = os.path.join(workdir, f"target-{interval_ms}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    log = open(os.path.join(workdir, f"target-{interval_ms}.log"), "wb")
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "--logfile=-", "supervisor-target",
                             "--config", path], cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": REPO})
    try:
        deadline = time.monotonic() + 60
        while children_of(proc.pid) < CHILDREN:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"target did not start {CHILDREN} children (see {log.name})")
            time.sleep(0.1)  # polling a condition with a deadline, not synchronisation
        time.sleep(SETTLE)  # measurement window: let start-up work finish
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(DURATION)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        return {"cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
                "rss_kib": rss_kib(proc.pid), "window_s": round(t1 - t0, 3)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def sampler_alone(samples: int = 20) -> dict:
    """CPU time of one sample of CHILDREN process groups, in this process."""
    from supervisor.tree.resources import ProcSampler

    kids = [subprocess.Popen([SLEEP, "3600"], start_new_session=True) for _ in range(CHILDREN)]
    try:
        sampler = ProcSampler()
        groups = {k.pid for k in kids}
        sampler.sample_groups(groups)
        start = time.process_time()
        for _ in range(samples):
            found = sampler.sample_groups(groups)
        per_sample = (time.process_time() - start) / samples
        assert len(found) == CHILDREN, f"sampled {len(found)} of {CHILDREN} groups"
        return {"cpu_ms_per_sample": round(per_sample * 1000, 3),
                "share_of_core_percent": round(100 * per_sample / (INTERVAL_MS / 1000), 3),
                "processes_on_machine": len([p for p in os.listdir("/proc") if p.isdigit()])}
    finally:
        for k in kids:
            k.kill()
            k.wait()


def main() -> None:
    workdir = tempfile.mkdtemp(prefix="bench-resources-")
    try:
        off = measure(workdir, 0)
        on = measure(workdir, INTERVAL_MS)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    alone = sampler_alone()
    extra = round(on["cpu_percent"] - off["cpu_percent"], 3)
    rows = [
        row(f"idle CPU with {CHILDREN} children, sampling off (% of a core)",
            {"ours": off["cpu_percent"]}, compare=False),
        row(f"idle CPU with {CHILDREN} children, sampling every {INTERVAL_MS} ms (% of a core)",
            {"ours": on["cpu_percent"]}, compare=False),
        row("extra CPU of resource sampling (% of a core)", {"ours": extra}, "< 1 %", extra < 1,
            compare=False),
        row(f"one sample of {CHILDREN} process groups (CPU ms)", {"ours": alone["cpu_ms_per_sample"]},
            compare=False),
    ]
    emit("resources", {
        "title": f"resource sampling cost with {CHILDREN} process children",
        "children": CHILDREN, "interval_ms": INTERVAL_MS, "window_seconds": DURATION,
        "sampling_off": off, "sampling_on": on, "extra_cpu_percent": extra,
        "sampler_alone": alone, "rows": rows,
        "method": "utime+stime of the daemon process itself over the window, sampling off then on",
        "generated_at": time.time(),
    })


if __name__ == "__main__":
    main()
