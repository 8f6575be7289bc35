"""Shared helpers for the benchmarks: percentiles, RSS, JSON output."""

from __future__ import annotations

import json
import os
import pathlib
import resource
import statistics
import sys
from typing import Any

#: where :func:`emit` keeps its copies (``BENCH_RESULTS_DIR`` sends them elsewhere)
RESULTS = pathlib.Path(os.environ.get("BENCH_RESULTS_DIR") or pathlib.Path(__file__).parent / "results")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50/p99/mean of durations given in seconds, reported in milliseconds."""
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 3),
        "p99_ms": round(percentile(values, 99) * 1000, 3),
        "mean_ms": round(statistics.fmean(values) * 1000, 3) if values else float("nan"),
        "samples": len(values),
    }


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_kib(pid: int | None = None) -> int:
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def emit(name: str, result: dict[str, Any]) -> None:
    """Print one JSON object and keep a copy under bench/results/."""
    result = {"benchmark": name, "python": sys.version.split()[0], "cpus": os.cpu_count(), **result}
    text = json.dumps(result, sort_keys=True)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(text + "\n")
