"""The target's /metrics, scraped over a real socket and read with prometheus_client's parser."""

from __future__ import annotations

import sys

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor

from supervisor import ChildKind, ChildSpec, Observability, Policy, SupervisorSpec, Supervisor
from supervisor.config.target import parse_target_config
from supervisor.target.metrics import metrics_service
from supervisor.tree.resources import ProcSampler
from supervisor.tree.spec import ResourcesConfig
from supervisor.testing import ManualTask
from tests.http_support import get
from tests.waiting import eventually

PY = sys.executable


async def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """``{sample name: {sorted labels: value}}`` of one scrape."""
    code, headers, body = await get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    assert headers[b"Content-Type"][0].startswith(b"text/plain")
    text = body.decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by_path(samples: dict, name: str) -> dict[str, float]:
    return {dict(labels)["child_path"]: value for labels, value in samples.get(name, {}).items()}


@pytest_twisted.ensureDeferred
async def test_the_scrape_matches_the_tree():
    work = ManualTask()
    spec = SupervisorSpec(
        children=[
            ChildSpec("sleeper", ChildKind.PROCESS, command=[PY, "-c", "import time; time.sleep(60)"]),
            ChildSpec("flaky", ChildKind.TASK, factory=work),
            ChildSpec("slow", ChildKind.TASK, factory=ManualTask(),
                      policy=Policy(initial_backoff_ms=60_000, max_backoff_ms=60_000, jitter_ratio=0)),
            ChildSpec("held", ChildKind.TASK, factory=ManualTask(), hold="paused"),
        ],
        policy=Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0),
        observability=Observability(resources=ResourcesConfig(100)),
    )
    sup = Supervisor(spec, reactor=reactor, clock=reactor, sampler=ProcSampler())
    service = metrics_service(sup, reactor, "tcp:0:interface=127.0.0.1")
    sup.startService()
    service.startService()
    try:
        port = (await service.listening).getHost().port
        for runs in (2, 3):
            work.current.fail()
            await eventually(lambda: len(work.runs) == runs
                             and sup.child("/root/flaky").state.value == "running")
        await eventually(lambda: sup.child("/root/flaky").restart_count == 2)
        slow = sup.child("/root/slow")
        slow.spec.factory.current.fail()
        await eventually(lambda: slow.state.value == "restarting")
        await eventually(lambda: sup.resources.latest.get("/root/sleeper"), what="a sample")

        samples = await scrape(port)
        rows = {r["child_path"]: r for r in sup.rows()}
        states = {}
        for labels, value in samples["supervisor_child_state"].items():
            if value == 1.0:
                states[dict(labels)["child_path"]] = dict(labels)["state"]
        assert states == {path: row["lifecycle_state"] for path, row in rows.items()}
        assert states["/root/held"] == "paused" and states["/root/slow"] == "restarting"
        assert sum(samples["supervisor_child_state"].values()) == len(rows)
        assert by_path(samples, "supervisor_child_restarts_total") == {
            path: row["restart_count"] for path, row in rows.items()}
        backoff = by_path(samples, "supervisor_child_backoff_seconds")
        assert 50 < backoff["/root/slow"] <= 60
        assert backoff["/root/flaky"] == 0 and backoff["/root/sleeper"] == 0
        rss = by_path(samples, "supervisor_child_rss_bytes")
        assert set(rss) == {"/root", "/root/sleeper"}  # the target itself, and its process child
        assert rss["/root/sleeper"] == sup.resources.latest["/root/sleeper"].rss_bytes
        assert by_path(samples, "supervisor_child_threads")["/root/sleeper"] >= 1
        events = {dict(labels)["event_type"]: value
                  for labels, value in samples["supervisor_events_total"].items()}
        assert events == {k: float(v) for k, v in sup.tree.metrics.items()}
        assert events["child_restarted"] == 2
        assert samples["supervisor_state_generation"][()] == sup.tree.state_generation
        assert samples["supervisor_resource_samples_total"][()] >= 1
    finally:
        await service.stopService()
        await sup.stopService()


def test_the_listen_setting_stays_on_localhost_unless_written_otherwise():
    def listen(value):
        data = {"observability": {"prometheus": {"listen": value}}}
        return parse_target_config(data, "/srv/app").spec.observability.prometheus.listen

    assert listen("tcp:9464") == "tcp:9464:interface=127.0.0.1"
    assert listen("tcp:9464:interface=0.0.0.0") == "tcp:9464:interface=0.0.0.0"
    assert listen("unix:run/metrics.sock") == "unix:/srv/app/run/metrics.sock"
    assert parse_target_config({}, "/tmp").spec.observability.prometheus.listen is None
    for bad in ("9464", "tcp:70000", "ssl:9464", "tcp:9464:backlog=5"):
        try:
            listen(bad)
        except Exception as e:
            assert "observability.prometheus.listen" in str(e)
        else:
            raise AssertionError(bad)
