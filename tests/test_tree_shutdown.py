"""The tree's shutdown phases follow what happens, on a fake clock."""

from __future__ import annotations

from twisted.internet import defer

from supervisor import ChildKind, ChildSpec, ShutdownPolicy, Strategy, SupervisorSpec
from supervisor.testing import ManualTask, TreeHarness

SHUTDOWN = ShutdownPolicy(graceful_timeout_ms=2000, abort_wait_ms=500)


class Stubborn:
    """A task that ignores the polite stop; notes the last event sequence when it is aborted."""

    def __init__(self, harness_events) -> None:
        self._events = harness_events
        self.aborted_after: int | None = None
        self.aborted_at: float | None = None

    def __call__(self, ctx):
        def abort(d: defer.Deferred) -> None:
            self.aborted_after = self._events().last_sequence
            self.aborted_at = ctx.clock.seconds()

        return defer.Deferred(abort)


def root_phases(harness: TreeHarness) -> list:
    return [e for e in harness.events("shutdown_phase_changed", path="/root")]


def test_a_tree_whose_children_all_stop_politely_never_aborts_stragglers():
    spec = SupervisorSpec(shutdown=SHUTDOWN, children=[
        ChildSpec("a", ChildKind.TASK, factory=ManualTask()),
        ChildSpec("b", ChildKind.TASK, factory=ManualTask()),
        ChildSpec("held", ChildKind.TASK, factory=ManualTask(), hold="paused"),
    ])
    harness = TreeHarness(spec).start()
    began = harness.clock.seconds()
    harness.stop()
    assert [e.payload["phase"] for e in root_phases(harness)] == [
        "request_stop", "graceful_drain", "reconcile", "completed"]
    assert all(e.payload["phase"] != "abort_stragglers" for e in harness.events("shutdown_phase_changed"))
    assert harness.clock.seconds() == began  # nobody waited for a timeout


def test_abort_stragglers_begins_when_the_straggler_is_aborted_not_after_the_shutdown():
    harness = None
    stubborn = Stubborn(lambda: harness.supervisor.events)
    spec = SupervisorSpec(shutdown=SHUTDOWN, children=[
        ChildSpec("stubborn", ChildKind.TASK, factory=stubborn),
        ChildSpec("polite", ChildKind.TASK, factory=ManualTask()),
    ])
    harness = TreeHarness(spec).start()
    began = harness.clock.seconds()
    harness.stop()
    phases = {e.payload["phase"]: e for e in root_phases(harness)}
    assert list(phases) == ["request_stop", "graceful_drain", "abort_stragglers", "reconcile", "completed"]
    polite_done = harness.events("shutdown_phase_changed", path="/root/polite")[-1]
    stubborn_phases = {e.payload["phase"]: e for e in
                       harness.events("shutdown_phase_changed", path="/root/stubborn")}
    # the polite child (declared last) stopped first, during the graceful drain
    assert phases["graceful_drain"].sequence < polite_done.sequence < phases["abort_stragglers"].sequence
    # the straggler is aborted once its graceful budget ran out, after the tree entered the phase
    assert phases["abort_stragglers"].occurred_at == began + 2.0 == stubborn.aborted_at
    assert stubborn_phases["abort_stragglers"].sequence < phases["abort_stragglers"].sequence
    assert phases["abort_stragglers"].sequence <= stubborn.aborted_after
    assert stubborn_phases["completed"].sequence < phases["reconcile"].sequence
    assert phases["abort_stragglers"].correlation_id == phases["request_stop"].correlation_id


def test_a_straggler_inside_a_nested_supervisor_moves_the_tree_to_abort_stragglers():
    harness = None
    stuck = Stubborn(lambda: harness.supervisor.events)
    spec = SupervisorSpec(shutdown=SHUTDOWN, children=[
        ChildSpec("inner", ChildKind.SUPERVISOR, strategy=Strategy.ONE_FOR_ONE, children=[
            ChildSpec("stuck", ChildKind.TASK, factory=stuck),
            ChildSpec("fine", ChildKind.TASK, factory=ManualTask()),
        ]),
    ])
    harness = TreeHarness(spec).start()
    report = harness.stop()
    assert report["children"][0]["outcome"] == "stopped"
    assert [r["outcome"] for r in report["children"][0]["children"]] == ["stopped", "aborted"]
    entered = [e for e in root_phases(harness) if e.payload["phase"] == "abort_stragglers"]
    assert len(entered) == 1 and entered[0].sequence <= stuck.aborted_after


def test_aborting_a_straggler_outside_a_shutdown_is_no_tree_phase():
    harness = None
    stubborn = Stubborn(lambda: harness.supervisor.events)
    spec = SupervisorSpec(shutdown=SHUTDOWN, children=[ChildSpec("s", ChildKind.TASK, factory=stubborn)])
    harness = TreeHarness(spec).start()
    assert harness.command("pause_child", "/root/s").accepted
    assert stubborn.aborted_at is not None
    assert root_phases(harness) == []


def test_request_stop_is_announced_before_the_tree_reports_stopping():
    harness = TreeHarness(SupervisorSpec(children=[ChildSpec("a", ChildKind.TASK, factory=ManualTask())]))
    stream = []
    harness.supervisor.events.subscribe(
        lambda e: stream.append(("event", e.payload["phase"]))
        if e.target_path == "/root" and e.event_type == "shutdown_phase_changed" else None)
    harness.supervisor.subscribe_state(
        lambda d: stream.append(("status", d["topology"]["root"]["state_summary"])) if "topology" in d else None)
    harness.start()
    harness.stop()
    assert stream == [
        ("status", "running"), ("event", "request_stop"), ("status", "stopping"),
        ("event", "graceful_drain"), ("event", "reconcile"), ("status", "stopped"), ("event", "completed"),
    ]
    assert harness.supervisor.status == "stopped"
