"""reload_config through the relay to a real ``twistd supervisor-target``: advertised, granted,
confirmed, audited, and its diff carried back to the session."""

from __future__ import annotations

import os

import pytest_twisted
import yaml

from relay_helpers import eventually
from test_relay_real_target import TargetProcess, target_processes  # noqa: F401  (fixture)

WORKER = {"kind": "task", "callable": "supervisor.demo:steady_worker"}


def write_config(sockdir: str, registration_path: str, *names: str) -> str:
    data = {
        "ipc": {"enabled": True, "target_id": "reload-target",
                "path": os.path.join(sockdir, "reload-target.sock"), "bind_mode": "replace_stale",
                "registration": {"enabled": True, "relay_registration_path": registration_path,
                                 "display_name": "reload target", "lease_seconds": 30,
                                 "registration_heartbeat_interval_seconds": 10}},
        "children": [{"name": n, **WORKER} for n in names],
    }
    path = os.path.join(sockdir, "target.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


def reload_message(command_id: str, **extra) -> dict:
    return {"type": "command", "command_id": command_id, "correlation_id": None,
            "target_id": "reload-target", "command": "reload_config",
            "target": {"child_path": None}, "reason": "roll out new worker",
            "confirmed": False, **extra}


@pytest_twisted.ensureDeferred
async def test_reload_config_through_the_relay_is_granted_confirmed_and_audited(
        relay, target_processes):  # noqa: F811
    relay.start()
    config = write_config(relay.sockdir, relay.registration_path, "a", "b")
    target = TargetProcess(config, relay.sockdir)
    target_processes.append(target)
    await eventually(lambda: relay.service.registry.get("reload-target") is not None
                     or target.proc.poll() is not None, 30, "target registered")
    assert target.proc.poll() is None, target.output()
    ws = await relay.session()
    targets = (await ws.hello())["targets"]
    assert "reload_config" in [c["name"] for c in targets[0]["supported_commands"]]
    await ws.next("state", timeout=10)
    await eventually(lambda: relay.service.hub.links["reload-target"].state == "connected", 10)

    write_config(relay.sockdir, relay.registration_path, "a", "c")
    # a dry run needs no confirmation, changes nothing and carries the diff back
    ws.send(reload_message("dry-1", dry_run=True))
    result = (await ws.next("command_result", timeout=15))["result"]
    assert result["status"] == "completed", result
    assert result["diff"]["added"] == ["/root/c"] and result["diff"]["removed"] == ["/root/b"]
    assert result["diff"]["unchanged"] == 1
    assert result["state_delta"] is None
    # the real thing without confirmation is refused, and so is a dry run of another command
    ws.send(reload_message("unconfirmed-1"))
    assert (await ws.next("error", timeout=10))["error"]["code"] == "confirmation_required"
    ws.send({**reload_message("dry-pause", dry_run=True), "command": "pause_child",
             "target": {"child_path": "/root/a"}})
    assert (await ws.next("error", timeout=10))["error"]["code"] == "invalid_message_schema"
    # a principal without the grant may not run it
    limited = await relay.session(relay.pki.ordered_operator)
    await limited.next("server_hello")
    limited.send({"type": "client_hello", "client_store_id": "s2", "resume_cursor": {}})
    await limited.next("target_list")
    limited.send(reload_message("limited-1", confirmed=True))
    assert (await limited.next("error", timeout=10))["error"]["code"] == "command_not_permitted"
    # confirmed: applied; the events carry the command id
    ws.send(reload_message("real-1", confirmed=True))
    result = (await ws.next("command_result", timeout=15))["result"]
    assert result["status"] == "completed", result
    assert result["diff"]["added"] == ["/root/c"]
    paths = [n["path"] for n in result["state_delta"]["topology"]["nodes"]]
    assert "/root/c" in paths and "/root/b" not in paths

    def correlated() -> set[str]:
        return {m["event"]["event_type"] for m in ws.of_type("event")
                if m["event"]["correlation_id"] == "real-1"}

    await eventually(lambda: {"child_added", "child_removed", "config_reloaded"} <= correlated(),
                     10, "reload events")

    records = await relay.service.audit.all_records()
    by_id: dict[str, list] = {}
    for record in records:
        by_id.setdefault(record.command_id, []).append((record.result, record.detail))
    assert by_id["dry-1"] == [("accepted", "forwarded to target (dry run)"),
                              ("completed", "completed (dry run)")]
    assert by_id["unconfirmed-1"][0][0] == "rejected"
    assert "confirmation_required" in by_id["unconfirmed-1"][0][1]
    assert by_id["limited-1"][0][0] == "rejected"
    assert [r for r, _ in by_id["real-1"]] == ["accepted", "completed"]
    real = [r for r in records if r.command_id == "real-1"][-1]
    assert real.command == "reload_config" and real.confirmed and real.reason == "roll out new worker"
    assert real.identity.principal == "CN=demo operator"
