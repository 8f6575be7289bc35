"""The side-by-side benchmark harness runs: one tiny trial of each bench/bench_peer_*.py, of
bench/bench_history.py and of bench/bench_fleet.py.

Times are never asserted; each benchmark must exit 0, print one JSON object, and produce
positive numbers for ours, the floor and every peer that has the feature (a peer without it
must say why in ``unavailable``). Peer virtualenvs are built under bench/.peers/ on first use
and reused after that (keyed by a hash of their pinned requirements).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = {
    "BENCH_TRIALS": "1",
    "BENCH_CRASHES": "3",
    "BENCH_WARMUP": "1",
    "BENCH_SLOW_TRIALS": "1",
    "BENCH_STATUS_QUERIES": "5",
    "BENCH_STATUS_CHILDREN": "2,3",
    "BENCH_START_CHILDREN": "3",
    "BENCH_IDLE_SECONDS": "0.3",
    "BENCH_IDLE_SETTLE": "0.1",
    "BENCH_IDLE_CHILDREN": "1,3",
    "BENCH_EVENTS": "2",
    "BENCH_EVENT_CHILDREN": "2",
}
PEERS = ("ours", "supervisord", "circus", "procmon")
#: peers that lack a feature, by benchmark
WITHOUT = {"peer_status": {"procmon"}, "peer_events": {"procmon"}}


def run_bench(script: str, results: pathlib.Path, **extra: str) -> dict:
    env = {**os.environ, **TINY, **extra, "BENCH_RESULTS_DIR": str(results)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert (results / f"{result['benchmark']}.json").exists()
    return result


def numbers(node: object, path: str = "") -> list[tuple[str, float]]:
    if isinstance(node, dict):
        return [n for k, v in node.items() for n in numbers(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [n for i, v in enumerate(node) for n in numbers(v, f"{path}[{i}]")]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return [(path, node)]
    return []


def check(result: dict, expected: tuple[str, ...], keys: tuple[str, ...]) -> None:
    results = result["results"]
    for name in expected:
        entry = results[name]
        if name in WITHOUT.get(result["benchmark"], ()):
            assert "unavailable" in entry, entry
            continue
        assert "unavailable" not in json.dumps(entry), (name, entry)
        found = dict(numbers(entry))
        for key in keys:
            matching = [v for p, v in found.items() if p.endswith("." + key)]
            assert matching, (name, key, entry)
            for v in matching:
                if "cpu" in key:
                    assert v >= 0, (name, key, v)
                else:
                    assert v > 0, (name, key, v)
    assert result["rows"], result


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("bench-results")


def test_restart(results):
    result = run_bench("bench_peer_restart.py", results)
    check(result, ("floor", *PEERS), ("p50_ms", "p99_ms", "cpu_percent", "cpu_ms_per_restart"))


def test_status(results):
    result = run_bench("bench_peer_status.py", results)
    check(result, PEERS, ("p50_ms", "p99_ms"))


def test_start(results):
    result = run_bench("bench_peer_start.py", results)
    check(result, ("floor", *PEERS), ("all_running_ms", "first_child_ms", "spawn_spread_ms"))


def test_idle(results):
    result = run_bench("bench_peer_idle.py", results)
    check(result, PEERS, ("rss_kib", "idle_cpu_percent"))


def test_events(results):
    result = run_bench("bench_peer_events.py", results)
    check(result, ("floor", *PEERS), ("p50_ms", "p99_ms"))


def test_history(results):
    """20,000 lines: every peer keeps every line, and every figure is there."""
    result = run_bench("bench_history.py", results, BENCH_HISTORY_LINES="20000")
    figures = result["results"]
    for name in ("floor", "ours", "supervisord", "circus"):
        entry = figures[name]
        assert entry["lines_on_disk"] == 20000 and entry["lines_lost"] == 0, (name, entry)
        assert entry["seconds_until_on_disk"] > 0 and entry["supervisor_cpu_s"] >= 0, entry
        assert entry["throughput_vs_floor"] > 0, entry
        assert entry["child_cpu_s"] >= 0 and entry["child_waits"] >= 0 and entry["child_preempted"] >= 0, entry
        if name != "floor":
            assert entry["seconds_child_wrote"] > 0, entry
            assert entry["peak_rss_kib"] > 0, entry
    assert figures["ours_ring_only"]["seconds_until_read"] > 0
    assert figures["ours_ring_only"]["child_cpu_s"] >= 0
    assert figures["ours_sigkill"]["output_lost_before_kill_ms"] is not None


def test_fleet(results):
    """A tiny fleet (3 hosts × 2 targets, 2 sessions): every record reaches every session of
    the gateway and of the floor relay, and every figure is there."""
    result = run_bench("bench_fleet.py", results, BENCH_FLEET_HOSTS="3", BENCH_FLEET_TARGETS="2",
                       BENCH_FLEET_SESSIONS="2", BENCH_FLEET_RATE="100",
                       BENCH_FLEET_SECONDS="0.5", BENCH_FLEET_WORKERS="2",
                       BENCH_FLEET_CLIENT_PROCS="1")
    for phase, targets, servers in (("fleet", 6, ("gateway", "nats_server")),
                                    ("floor", 2, ("relay",))):
        figures = result[phase]
        assert figures["targets"] == targets, figures
        assert figures["emitted"] > 0, figures
        assert figures["delivered"] == figures["expected"] == 2 * figures["emitted"], figures
        assert figures["latency"]["samples"] == figures["delivered"], figures
        assert figures["target_list_after_hello"]["sessions"] == 2, figures
        assert figures["sessions_closed"] == 0 and figures["dropped_count_messages"] == 0
        for server in servers:
            assert figures[f"{server}_rss_kib"] > 0 and figures[f"{server}_cpu_percent"] >= 0
    assert set(result["ratios_fleet_to_floor"]) >= {"latency_p99", "server_cpu", "server_rss"}


def test_report_aggregates_this_run(tmp_path):
    rows = [{"metric": "status, 20 children, p50 (ms)", "values": {"ours": 2.0, "supervisord": 1.0},
             "target": "≤ 1 ms", "target_met": False, "lower_is_better": True, "compare": True}]
    for name in ("peer_restart", "peer_status"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"benchmark": name, "rows": rows}))
    results = tmp_path
    env = {**os.environ, "BENCH_RESULTS_DIR": str(results)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metrics"] > 0
    latest = json.loads((results / "latest.json").read_text())
    assert {r["benchmark"] for r in latest["results"]} >= {"peer_restart", "peer_status"}
    table = (results / "latest.md").read_text()
    assert "| metric |" in table and "ours/supervisord" in table
    assert "**BEHIND supervisord (2.00×)**" in table and "**NOT MET**" in table
