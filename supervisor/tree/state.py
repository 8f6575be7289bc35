"""The DashboardState model of CONTRACTS.md §1, computed from the live tree on demand."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from supervisor.tree.spec import ChildKind
from supervisor.wire.timestamps import rfc3339, stamp

if TYPE_CHECKING:
    from supervisor.tree.node import ChildRuntime, SupervisorNode
    from supervisor.tree.runtime import Supervisor

RECENT_LIMIT = 128

_KIND = {
    ChildKind.TASK: "child_task",
    ChildKind.PROCESS: "child_process",
    ChildKind.SERVICE: "child_service",
    ChildKind.SUPERVISOR: "supervisor",
}


def walk(node: "SupervisorNode") -> Iterator["ChildRuntime"]:
    """Every child below ``node`` in declaration order, depth first."""
    for child in node.children.values():
        yield child
        if child.subtree is not None:
            yield from walk(child.subtree)


def _walk_ordered(node: "SupervisorNode") -> Iterator[tuple["ChildRuntime", int]]:
    """Like :func:`walk`, with each child's position among its siblings."""
    for order, child in enumerate(node.children.values()):
        yield child, order
        if child.subtree is not None:
            yield from _walk_ordered(child.subtree)


def runtime_row(child: "ChildRuntime") -> dict[str, Any]:
    return {
        "child_path": child.path,
        "lifecycle_state": child.state.value,
        "health": child.health.value,
        "readiness": child.readiness.value,
        "generation": child.generation,
        "attempt": child.attempt,
        "restart_count": child.restart_count,
        "last_failure": child.last_failure,
        "last_policy_decision": child.last_policy_decision,
        "shutdown_state": child.shutdown_state.value,
    }


def _child_node(child: "ChildRuntime") -> dict[str, Any]:
    return {
        "node_id": child.path,
        "child_id": child.name,
        "path": child.path,
        "name": child.spec.label,
        "kind": _KIND[child.spec.kind],
        "tags": list(child.spec.tags),
        "criticality": child.spec.criticality.value,
        "state_summary": child.state.value,
        "diagnostics": {
            "message": child.message,
            "since": rfc3339(child.since),
            "policy": child.last_policy_decision,
        },
    }


def topology(sup: "Supervisor") -> dict[str, Any]:
    root_path = sup.root.path
    root = {
        "node_id": root_path,
        "child_id": None,
        "path": root_path,
        "name": sup.spec.name,
        "kind": "root_supervisor",
        "tags": [],
        "criticality": "critical",
        "state_summary": sup.status,
        "diagnostics": {},
    }
    nodes = [root]
    edges = []
    for child, order in _walk_ordered(sup.root):
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
        for order, dep in enumerate(child.spec.dependencies):
            dep_path = f"{parent}/{dep}"
            edges.append(
                {
                    "edge_id": f"dependency:{child.path}->{dep_path}",
                    "source_path": child.path,
                    "target_path": dep_path,
                    "kind": "dependency",
                    "order": order,
                }
            )
    return {
        "root": root,
        "nodes": nodes,
        "edges": edges,
        "declaration_order": [n["path"] for n in nodes],
    }


def dashboard_state(sup: "Supervisor", display_name: str) -> dict[str, Any]:
    """The full §1 DashboardState of ``sup`` as it is right now."""
    tree = sup.tree
    return {
        "target": {
            "target_id": tree.target_id,
            "display_name": display_name,
            "registration_state": "active",
            "connection_state": "connected",
        },
        "topology": topology(sup),
        "runtime_state": [runtime_row(c) for c in walk(sup.root)],
        "recent_events": [e.to_json() for e in tree.events.last(RECENT_LIMIT)],
        "recent_logs": [r.to_json() for r in tree.logs.last(RECENT_LIMIT)],
        "dropped_event_count": tree.events.evicted,
        "dropped_log_count": tree.logs.evicted,
        "config_version": tree.config_version,
        **stamp("generated", tree.now()),
        "state_generation": tree.state_generation,
    }
