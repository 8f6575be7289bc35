"""The DashboardState model of CONTRACTS.md §1, computed from the live tree on demand."""

from __future__ import annotations

from typing import Any, Iterator

from supervisor.tree.model import ChildRuntime, SupervisorNode, runtime_row, walk
from supervisor.tree.lifecycle import Lifecycle
from supervisor.tree.spec import ChildKind
from supervisor.wire.timestamps import rfc3339, stamp, unix_nanos
from supervisor.wire.ndjson import encodable

RECENT_LIMIT = 128

_KIND = {
    ChildKind.TASK: "child_task",
    ChildKind.PROCESS: "child_process",
    ChildKind.SERVICE: "child_service",
    ChildKind.SUPERVISOR: "supervisor",
}


def _walk_ordered(node: SupervisorNode) -> Iterator[tuple[ChildRuntime, int]]:
    """Like :func:`walk`, with each child's position among its siblings."""
    for order, child in enumerate(node.children.values()):
        yield child, order
        if child.subtree is not None:
            yield from _walk_ordered(child.subtree)


def rows(root: SupervisorNode) -> list[dict[str, Any]]:
    """Every child's RuntimeState, in declaration order, depth first."""
    return [runtime_row(c) for c in walk(root)]


def _child_node(child: ChildRuntime) -> dict[str, Any]:
    return {
        "node_id": child.path,
        "child_id": child.name,
        "path": child.path,
        "name": child.spec.label,
        "kind": _KIND[child.spec.kind],
        "tags": list(child.spec.tags),
        "criticality": child.spec.criticality.value,
        "state_summary": child.phase.wire.value,
        "diagnostics": {
            "message": child.message,
            "since": rfc3339(child.since),
            "policy": child.last_policy_decision,
        },
    }


def topology(root: SupervisorNode) -> dict[str, Any]:
    """The tree's nodes (the root first) and its parent/child and dependency edges."""
    tree = root.tree
    root_node = {
        "node_id": root.path,
        "child_id": None,
        "path": root.path,
        "name": tree.name,
        "kind": "root_supervisor",
        "tags": [],
        "criticality": "critical",
        "state_summary": tree.status,
        "diagnostics": {},
    }
    nodes = [root_node]
    edges = []
    for child, order in _walk_ordered(root):
        nodes.append(_child_node(child))
        parent = child.node.path
        edges.append(
            {
                "edge_id": f"parent:{parent}->{child.path}",
                "source_path": parent,
                "target_path": child.path,
                "kind": "parent_child",
                "order": order,
            }
        )
        # the dependency is the source: the arrow reads "dep is needed by child"
        for order, dep in enumerate(child.spec.dependencies):
            dep_path = f"{parent}/{dep}"
            edges.append(
                {
                    "edge_id": f"dependency:{dep_path}->{child.path}",
                    "source_path": dep_path,
                    "target_path": child.path,
                    "kind": "dependency",
                    "order": order,
                }
            )
    return {
        "root": root_node,
        "nodes": nodes,
        "edges": edges,
        "declaration_order": [n["path"] for n in nodes],
    }


#: States in which a child's current generation has a live OS process (its ``pid``).
_PROCESS_UP = frozenset({Lifecycle.STARTING, Lifecycle.RUNNING, Lifecycle.STOPPING})


def _status_row(child: ChildRuntime) -> dict[str, Any]:
    state = child.phase.wire
    runner = child.runner
    pid = getattr(runner, "pid", None) if state in _PROCESS_UP else None
    started = child.started_at if state is Lifecycle.RUNNING else None
    return {
        "child_path": child.path,
        "kind": _KIND[child.spec.kind],
        "lifecycle_state": state.value,
        "health": child.health.value,
        "readiness": child.readiness.value,
        "pid": pid,
        "generation": child.generation,
        "restart_count": child.restart_count,
        "last_failure": child.last_failure,
        "started_at": None if started is None else rfc3339(started),
        "started_at_unix_nanos": None if started is None else unix_nanos(started),
        "resources": None if runner is None else child.node.tree.resources_of(child.path),
    }


def status(root: SupervisorNode, display_name: str) -> dict[str, Any]:
    """The lean status read: one flat row per child, nothing that changes without a new
    ``state_generation`` (uptime is carried as ``started_at``, so one answer stays true)."""
    tree = root.tree
    return {
        "target_id": tree.target_id,
        "display_name": encodable(display_name),
        "instance_id": tree.instance_id,
        "state_generation": tree.state_generation,
        **stamp("generated", tree.now()),
        "rows": [_status_row(c) for c in walk(root)],
    }


def publish_topology(root: SupervisorNode) -> None:
    """Count a topology change (a child added or removed, the tree's status) and publish it."""
    root.tree.state_changed(lambda: {"topology": topology(root), "runtime_state": rows(root)})


def dashboard_state(root: SupervisorNode, display_name: str) -> dict[str, Any]:
    """The full §1 DashboardState of the tree under ``root`` as it is right now."""
    tree = root.tree
    return {
        "target": {
            "target_id": tree.target_id,
            "display_name": encodable(display_name),
            "registration_state": "active",
            "connection_state": "connected",
            "instance_id": tree.instance_id,
        },
        "topology": topology(root),
        "runtime_state": rows(root),
        "recent_events": [e.to_json() for e in tree.events.last(RECENT_LIMIT)],
        "recent_logs": [r.to_json() for r in tree.logs.last(RECENT_LIMIT)],
        "dropped_event_count": tree.dropped_count("events"),
        "dropped_log_count": tree.dropped_count("logs"),
        "config_version": tree.config_version,
        **stamp("generated", tree.now()),
        "state_generation": tree.state_generation,
        "target_resources": tree.own_resources(),
    }
