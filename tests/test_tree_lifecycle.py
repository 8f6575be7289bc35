"""Dependencies, health, staged shutdown, the journal and the state model."""

from __future__ import annotations

import json
import pathlib

from twisted.internet import defer

from supervisor import ChildKind, ChildSpec, Policy, ShutdownPolicy, SupervisorSpec
from supervisor.testing import ManualTask, TreeHarness
from supervisor.tree.lifecycle import TABLE, IllegalTransition, Phase, Trigger, move_for

EXAMPLES = pathlib.Path(__file__).parent / "contract_examples"


def test_dependents_wait_until_their_dependency_is_running_and_ready():
    db, api = ManualTask(ready=False), ManualTask()
    spec = SupervisorSpec(children=[
        ChildSpec("api", ChildKind.TASK, factory=api, dependencies=["db"]),
        ChildSpec("db", ChildKind.TASK, factory=db, wait_ready=True),
    ])
    harness = TreeHarness(spec).start()
    assert harness.lifecycle("/root/db") == "running"
    assert harness.row("/root/db")["readiness"] == "not_ready"
    assert harness.lifecycle("/root/api") == "stopped"
    assert harness.row("/root/api")["last_policy_decision"] == "waiting for db"
    db.current.ctx.mark_ready()
    assert harness.lifecycle("/root/api") == "running"
    order = [e.target_path for e in harness.events("child_started")]
    assert order == ["/root/db", "/root/api"]
    edges = harness.supervisor.state()["topology"]["edges"]
    # the dependency is the source, the dependent the target
    assert {"edge_id": "dependency:/root/db->/root/api", "source_path": "/root/db",
            "target_path": "/root/api", "kind": "dependency", "order": 0} in edges
    assert not any(e["kind"] == "dependency" and e["source_path"] == "/root/api"
                   for e in edges)


def test_heartbeat_silence_makes_a_child_stale_and_optionally_failed():
    quiet, strict = ManualTask(heartbeat=True), ManualTask(heartbeat=True)
    policy = Policy(heartbeat_interval_ms=100, stale_after_ms=500, initial_backoff_ms=0,
                    max_backoff_ms=0, jitter_ratio=0)
    spec = SupervisorSpec(policy=policy, children=[
        ChildSpec("quiet", ChildKind.TASK, factory=quiet),
        ChildSpec("strict", ChildKind.TASK, factory=strict, stale_is_failure=True),
    ])
    harness = TreeHarness(spec).start()
    assert harness.row("/root/quiet")["health"] == "healthy"
    harness.advance(0.3)
    quiet.current.ctx.heartbeat()
    harness.advance(0.4)
    assert harness.row("/root/quiet")["health"] == "healthy"
    harness.advance(0.3)
    assert harness.row("/root/quiet")["health"] == "stale"
    stale = harness.events("child_heartbeat_stale", path="/root/quiet")
    assert len(stale) == 1 and stale[0].severity == "warning"
    assert harness.lifecycle("/root/quiet") == "running"
    # the strict child was failed and restarted
    assert harness.events("child_failed", path="/root/strict")[0].payload["reason"].startswith(
        "heartbeat stale")
    assert len(strict.runs) >= 2
    quiet.current.ctx.heartbeat()
    assert harness.row("/root/quiet")["health"] == "healthy"


def test_the_heartbeat_clock_runs_only_while_a_child_heartbeats():
    """An idle target is not woken to check children that never heartbeat."""
    beating, silent = ManualTask(heartbeat=True), ManualTask()
    policy = Policy(heartbeat_interval_ms=100, stale_after_ms=500)
    spec = SupervisorSpec(policy=policy, children=[
        ChildSpec("silent", ChildKind.TASK, factory=silent),
    ])
    harness = TreeHarness(spec).start()

    def checks() -> int:
        return sum(1 for call in harness.clock.getDelayedCalls()  # pending or running
                   if "HeartbeatMonitor.check" in repr(getattr(call.func, "__self__", call.func)))

    harness.advance(1)
    assert checks() == 0
    spec = SupervisorSpec(policy=policy, children=[
        ChildSpec("beating", ChildKind.TASK, factory=beating),
    ])
    harness = TreeHarness(spec).start()
    assert checks() == 1 and harness.row("/root/beating")["health"] == "healthy"
    harness.advance(0.6)
    assert harness.row("/root/beating")["health"] == "stale"
    assert checks() == 0, "a stale child is not checked again until it heartbeats"
    beating.current.ctx.heartbeat()
    assert checks() == 1 and harness.row("/root/beating")["health"] == "healthy"
    harness.advance(0.6)
    assert harness.row("/root/beating")["health"] == "stale"
    assert len(harness.events("child_heartbeat_stale", path="/root/beating")) == 2


def test_staged_shutdown_in_reverse_order_with_phases_and_aborts():
    polite, stubborn = ManualTask(), ManualTask(cooperative=False)
    spec = SupervisorSpec(
        shutdown=ShutdownPolicy(graceful_timeout_ms=2000, abort_wait_ms=500),
        children=[
            ChildSpec("polite", ChildKind.TASK, factory=polite),
            ChildSpec("stubborn", ChildKind.TASK, factory=stubborn),
        ],
    )
    harness = TreeHarness(spec).start()
    began = harness.clock.seconds()
    report = harness.stop()
    assert [r["child_path"] for r in report["children"]] == ["/root/stubborn", "/root/polite"]
    outcomes = {r["child_path"]: r["outcome"] for r in report["children"]}
    assert outcomes == {"/root/stubborn": "aborted", "/root/polite": "stopped"}
    assert harness.clock.seconds() - began >= 2.0
    phases = [e.payload["phase"] for e in harness.events("shutdown_phase_changed", path="/root/stubborn")]
    assert phases == ["request_stop", "graceful_drain", "abort_stragglers", "reconcile", "completed"]
    root_phases = [e.payload["phase"] for e in harness.events("shutdown_phase_changed", path="/root")]
    assert root_phases == ["request_stop", "graceful_drain", "abort_stragglers", "reconcile", "completed"]
    assert harness.row("/root/stubborn")["shutdown_state"] == "completed"
    assert all(harness.lifecycle(p) == "stopped" for p in ("/root/polite", "/root/stubborn"))
    assert harness.events("tree_stopped")


def test_service_children_start_stop_and_are_abandoned_when_stop_hangs():
    from twisted.application.service import Service

    class Hanging(Service):
        def stopService(self):
            Service.stopService(self)
            return defer.Deferred()

    services = []

    def make(ctx):
        services.append(Hanging())
        return services[-1]

    spec = SupervisorSpec(
        shutdown=ShutdownPolicy(graceful_timeout_ms=100, abort_wait_ms=100),
        children=[ChildSpec("svc", ChildKind.SERVICE, factory=make)],
    )
    harness = TreeHarness(spec).start()
    assert harness.lifecycle("/root/svc") == "running" and services[0].running
    report = harness.stop()
    assert report["children"][0]["outcome"] == "aborted"
    assert report["children"][0]["exit"] == "abandoned after stop timeout"


def test_a_service_reporting_failure_is_restarted():
    from twisted.application.service import Service

    contexts = []

    def make(ctx):
        contexts.append(ctx)
        return Service()

    spec = SupervisorSpec(
        policy=Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0),
        children=[ChildSpec("svc", ChildKind.SERVICE, factory=make)],
    )
    harness = TreeHarness(spec).start()
    contexts[0].fail("lost its database")
    harness.advance(0.01)
    assert harness.events("child_failed")[0].payload["reason"] == "lost its database"
    assert harness.lifecycle("/root/svc") == "running" and len(contexts) == 2


def test_every_transition_outside_the_table_is_illegal():
    for current in Phase:
        for trigger in Trigger:
            if (current, trigger) in TABLE:
                assert move_for("/root/x", current, trigger).source is current
            else:
                try:
                    move_for("/root/x", current, trigger)
                except IllegalTransition as e:
                    assert e.current is current.wire and e.phase is current
                else:
                    raise AssertionError(f"{current} on {trigger} should be illegal")


def test_journal_is_a_bounded_ring_with_monotonic_sequences():
    from supervisor import Observability

    spec = SupervisorSpec(
        policy=Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0,
                      child_restart_limit=1000, supervisor_failure_limit=1000),
        observability=Observability(event_journal_capacity=16),
        children=[ChildSpec("w", ChildKind.TASK, factory=ManualTask())],
    )
    harness = TreeHarness(spec).start()
    for _ in range(20):
        harness.crash("/root/w")
        harness.advance(0.01)
    events = list(harness.supervisor.events)
    assert len(events) == 16
    sequences = [e.sequence for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + 16))
    assert harness.supervisor.events.evicted == sequences[0] - 1
    state = harness.supervisor.state()
    assert state["dropped_event_count"] == sequences[0] - 1
    assert harness.supervisor.events.after(sequences[-3])[0].sequence == sequences[-2]


def _shape(value):
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def test_state_matches_the_contract_example_shape_and_generation_grows():
    spec = SupervisorSpec(children=[
        ChildSpec("invoice_writer", ChildKind.TASK, factory=ManualTask(), tags=["billing"],
                  display_name="invoice writer"),
    ])
    harness = TreeHarness(spec, target_id="payments-worker-a").start()
    harness.supervisor.tree.log("info", "hello", {"child_path": "/root/invoice_writer"})
    harness.crash("/root/invoice_writer")
    state = harness.supervisor.state("payments worker a")
    example = json.loads((EXAMPLES / "ipc.state.response.json").read_text())["result"]["state"]
    # beside the example's fields, the documented extension fields (docs/protocol.md)
    assert set(state) == set(example) | {"target_resources"}
    assert set(state["topology"]) == set(example["topology"])
    assert (_shape(state["runtime_state"][0]).keys()
            == _shape(example["runtime_state"][0]).keys() | {"resources"})
    node = state["topology"]["nodes"][1]
    assert set(node) == set(example["topology"]["nodes"][1])
    assert set(state["recent_events"][0]) == set(example["recent_events"][0])
    assert set(state["recent_logs"][0]) == set(example["recent_logs"][0])
    assert state["topology"]["edges"][0]["edge_id"] == "parent:/root->/root/invoice_writer"
    assert state["topology"]["declaration_order"] == ["/root", "/root/invoice_writer"]
    assert state["generated_at"].endswith("Z")
    before = state["state_generation"]
    harness.advance(1)
    assert harness.supervisor.state()["state_generation"] > before


def test_state_deltas_are_published_for_every_change():
    harness = TreeHarness(SupervisorSpec(children=[ChildSpec("w", ChildKind.TASK, factory=ManualTask())]))
    deltas = []
    harness.supervisor.subscribe_state(deltas.append)
    harness.start()
    assert "topology" in deltas[0]
    harness.command("pause_child", "/root/w")
    generations = [d["state_generation"] for d in deltas]
    assert generations == sorted(set(generations))
    assert deltas[-1]["runtime_state"][0]["lifecycle_state"] == "paused"
