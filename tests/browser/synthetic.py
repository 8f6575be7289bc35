"""Synthetic §3 session messages for client-only browser tests: a tree that shows every
lifecycle state, events, logs, audit records, and large trees for scale checks."""

from __future__ import annotations

TARGET = "payments-worker-a"
COMMANDS = ["restart_child", "pause_child", "resume_child", "quarantine_child",
            "remove_child", "add_child", "shutdown_tree"]
STATES = ["running", "failed", "restarting", "paused", "quarantined", "starting",
          "stopping", "stopped", "completed"]


def ts(i: int = 0) -> str:
    return f"2026-11-28T13:{(i // 60) % 60:02d}:{i % 60:02d}.{(i * 7919) % 1000000:06d}Z"


def server_hello() -> dict:
    return {
        "type": "server_hello",
        "session_id": "9b2f0c1e-5d1a-4c55-a1f3-2d0e9c7b1a44",
        "client_identity": "mtls_cert_fingerprint:" + "3f" * 32,
        "log_event_filter_mode": "remote",
        "log_event_filter_conditions": {
            "target_ids": [], "child_paths": [], "lifecycle_states": [], "event_types": [],
            "severities": [], "sequence_min": None, "correlation_id": None,
        },
        "filter_config_version": 0,
    }


def target_list(*targets: tuple[str, str, str], commands=COMMANDS) -> dict:
    return {"type": "target_list", "targets": [
        {"target_id": tid, "display_name": name, "registration_state": "active",
         "connection_state": cs,
         "supported_commands": [{"name": c, "idempotent": False, "timeout_seconds": 30}
                                for c in commands]}
        for tid, name, cs in targets]}


def node(path: str, kind: str, name: str, state: str = "running") -> dict:
    return {"node_id": path, "child_id": None if path == "/root" else path.rsplit("/", 1)[1],
            "path": path, "name": name, "kind": kind, "tags": [], "criticality": "standard",
            "state_summary": state, "diagnostics": {}}


def runtime(path: str, state: str, **extra) -> dict:
    row = {"child_path": path, "lifecycle_state": state,
           "health": "healthy" if state == "running" else "unknown",
           "readiness": "ready" if state == "running" else "not_ready", "generation": 1,
           "attempt": 1, "restart_count": 0, "last_failure": None,
           "last_policy_decision": None, "shutdown_state": "idle"}
    row.update(extra)
    return row


def event(target: str, seq: int, event_type: str, path: str, severity: str = "info",
          correlation_id: str | None = None, payload: dict | None = None) -> dict:
    return {"type": "event", "target_id": target, "event": {
        "target_id": target, "sequence": seq, "correlation_id": correlation_id or f"corr-{seq}",
        "event_type": event_type, "severity": severity, "target_path": path,
        "child_id": path.rsplit("/", 1)[1], "occurred_at": ts(seq), "config_version": "v1",
        "payload": payload or {}}}


def log(target: str, seq: int, message: str, path: str, severity: str = "info") -> dict:
    return {"type": "log", "target_id": target, "log": {
        "target_id": target, "sequence": seq, "correlation_id": None, "severity": severity,
        "message": message, "fields": {"stream": "stdout", "child_path": path},
        "occurred_at": ts(seq)}}


def demo_state(target: str = TARGET, display: str = "payments worker a") -> dict:
    """The demo-shaped tree: failing, restarting, paused, quarantined, healthy, a process
    child, and a nested supervisor with a dependency edge."""
    spec = [
        ("/root/invoice_writer", "child_process", "invoice writer", "running"),
        ("/root/flaky_fetcher", "child_task", "flaky fetcher", "failed"),
        ("/root/ledger_sync", "child_task", "ledger sync", "restarting"),
        ("/root/report_builder", "child_task", "report builder", "paused"),
        ("/root/bad_importer", "child_task", "bad importer", "quarantined"),
        ("/root/heartbeat", "child_service", "heartbeat", "running"),
        ("/root/payments", "supervisor", "payments supervisor", "running"),
        ("/root/payments/gateway", "child_task", "gateway", "running"),
        ("/root/payments/settler", "child_process", "settler", "starting"),
        ("/root/payments/archiver", "child_task", "archiver", "completed"),
    ]
    nodes = [node("/root", "root_supervisor", "root supervisor")]
    edges, rows = [], []
    order_by_parent: dict[str, int] = {}
    for path, kind, name, state in spec:
        nodes.append(node(path, kind, name, state))
        parent = path.rsplit("/", 1)[0]
        order = order_by_parent.get(parent, 0)
        order_by_parent[parent] = order + 1
        edges.append({"edge_id": f"parent:{parent}->{path}", "source_path": parent,
                      "target_path": path, "kind": "parent_child", "order": order})
        extra = {}
        if state == "failed":
            extra = {"last_failure": "exit status 3 (connection refused)", "restart_count": 4,
                     "attempt": 5, "last_policy_decision": "restart after 1600 ms (backoff)"}
        if state == "restarting":
            extra = {"restart_count": 2, "last_policy_decision": "restart after 400 ms (backoff)"}
        rows.append(runtime(path, state, **extra))
    # settler depends on gateway: the dependency is the source
    edges.append({"edge_id": "dependency:/root/payments/gateway->/root/payments/settler",
                  "source_path": "/root/payments/gateway",
                  "target_path": "/root/payments/settler", "kind": "dependency", "order": 0})
    events = [
        event(target, 1, "child_started", "/root/invoice_writer")["event"],
        event(target, 2, "child_running", "/root/invoice_writer")["event"],
        event(target, 3, "child_failed", "/root/flaky_fetcher", "error",
              payload={"exit_code": 3, "reason": "connection refused"})["event"],
        event(target, 4, "backoff_scheduled", "/root/flaky_fetcher", "warning",
              payload={"delay_ms": 1600})["event"],
        event(target, 5, "child_paused", "/root/report_builder", payload={"reason": "maintenance"})["event"],
        event(target, 6, "child_quarantined", "/root/bad_importer", "warning")["event"],
        event(target, 7, "child_restarting", "/root/ledger_sync", "warning")["event"],
    ]
    logs = [log(target, 1, "flushed 12 invoices", "/root/invoice_writer")["log"],
            log(target, 2, "heartbeat ok", "/root/heartbeat")["log"]]
    return {"type": "state", "target_id": target, "state": {
        "target": {"target_id": target, "display_name": display, "registration_state": "active",
                   "connection_state": "connected", "instance_id": f"i-{target}-1"},
        "topology": {"root": nodes[0], "nodes": nodes, "edges": edges,
                     "declaration_order": [n["path"] for n in nodes]},
        "runtime_state": rows, "recent_events": events, "recent_logs": logs,
        "dropped_event_count": 0, "dropped_log_count": 0, "config_version": "v1",
        "generated_at": ts(0), "state_generation": 12}}


def wide_state(target: str, children: int) -> dict:
    """A root with `children` task children in rotating lifecycle states."""
    nodes = [node("/root", "root_supervisor", "root supervisor")]
    edges, rows = [], []
    for i in range(children):
        path = f"/root/worker_{i:03d}"
        state = STATES[i % len(STATES)]
        nodes.append(node(path, "child_task", f"worker {i:03d}", state))
        edges.append({"edge_id": f"parent:/root->{path}", "source_path": "/root",
                      "target_path": path, "kind": "parent_child", "order": i})
        rows.append(runtime(path, state))
    return {"type": "state", "target_id": target, "state": {
        "target": {"target_id": target, "display_name": target, "registration_state": "active",
                   "connection_state": "connected", "instance_id": f"i-{target}-1"},
        "topology": {"root": nodes[0], "nodes": nodes, "edges": edges,
                     "declaration_order": [n["path"] for n in nodes]},
        "runtime_state": rows, "recent_events": [], "recent_logs": [],
        "dropped_event_count": 0, "dropped_log_count": 0, "config_version": "v1",
        "generated_at": ts(0), "state_generation": 1}}


def audit(target: str, command_id: str, command: str, path: str, result: str,
          reason: str = "maintenance window") -> dict:
    return {"type": "audit_event", "target_id": target, "audit": {
        "audit_id": f"a-{command_id}-{result}",
        "identity": {"client_identity": "mtls_cert_fingerprint:" + "3f" * 32,
                     "principal": "O=Example Ops, CN=demo operator", "source": "mtls"},
        "target_id": target, "command_id": command_id, "command": command,
        "target": {"child_path": path}, "reason": reason, "result": result, "detail": result,
        "occurred_at": ts(99)}}


def demo_session() -> list[dict]:
    """server_hello, target list (two targets, one unavailable), state, audit."""
    return [
        server_hello(),
        target_list((TARGET, "payments worker a", "connected"),
                    ("orders-worker-b", "orders worker b", "unavailable")),
        demo_state(),
        audit(TARGET, "cmd-7f3a", "pause_child", "/root/report_builder", "completed"),
    ]
