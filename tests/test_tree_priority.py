"""priority orders the starts of siblings (lower first) and their stops (reverse), on a fake clock."""

from __future__ import annotations

from supervisor import ChildKind, ChildSpec, SupervisorSpec
from supervisor.testing import ManualTask, TreeHarness


def order(harness: TreeHarness, event_type: str) -> list[str]:
    return [e.child_id for e in harness.events(event_type) if e.child_id is not None]


def test_lower_priority_starts_first_and_stops_last_declaration_order_among_equals():
    spec = SupervisorSpec(children=[
        ChildSpec("web", ChildKind.TASK, factory=ManualTask(), priority=900),
        ChildSpec("db", ChildKind.TASK, factory=ManualTask(), priority=10),
        ChildSpec("cache", ChildKind.TASK, factory=ManualTask(), priority=10),
        ChildSpec("plain", ChildKind.TASK, factory=ManualTask()),
    ])
    harness = TreeHarness(spec).start()
    assert order(harness, "child_started") == ["db", "cache", "web", "plain"]
    harness.stop()
    stopped = [e.child_id for e in harness.events("shutdown_phase_changed")
               if e.child_id is not None and e.payload["phase"] == "request_stop"]
    assert stopped == ["plain", "web", "cache", "db"]


def test_dependencies_still_win_over_priority():
    spec = SupervisorSpec(children=[
        ChildSpec("db", ChildKind.TASK, factory=ManualTask(), priority=50),
        ChildSpec("api", ChildKind.TASK, factory=ManualTask(), priority=1, dependencies=["db"]),
    ])
    harness = TreeHarness(spec).start()
    assert order(harness, "child_started") == ["db", "api"]
    assert harness.lifecycle("/root/api") == "running"
