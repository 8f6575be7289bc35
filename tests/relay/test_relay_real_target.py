"""The relay against the real target: ``twistd -n supervisor-target`` registering with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import pytest_twisted
import yaml
from twisted.internet.threads import deferToThread

from relay_faketarget import fixture
from relay_helpers import eventually

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def target_config(sockdir: str, registration_path: str) -> str:
    data = {
        "supervisor": {"strategy": "one_for_one", "name": "real target"},
        "ipc": {"enabled": True, "target_id": "real-target",
                "path": os.path.join(sockdir, "real-target.sock"), "permissions": "0600",
                "bind_mode": "replace_stale",
                "registration": {"enabled": True, "relay_registration_path": registration_path,
                                 "display_name": "real target", "lease_seconds": 30,
                                 "registration_heartbeat_interval_seconds": 10}},
        "children": [{"name": "invoice_writer", "kind": "task",
                      "callable": "supervisor.demo:steady_worker"}],
    }
    path = os.path.join(sockdir, "target.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


class TargetProcess:
    def __init__(self, config: str, cwd: str) -> None:
        self.cwd = cwd
        self.log = open(os.path.join(cwd, "target.log"), "ab")
        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "--logfile=-", "supervisor-target", "--config", config],
            cwd=cwd, env={**os.environ, "PYTHONPATH": REPO}, stdout=self.log,
            stderr=subprocess.STDOUT)

    def output(self) -> str:
        with open(os.path.join(self.cwd, "target.log"), "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=15)
        self.log.close()


@pytest.fixture
def target_processes():
    started: list[TargetProcess] = []
    yield started
    for proc in started:
        proc.kill()


@pytest_twisted.ensureDeferred
async def test_real_target_session_command_and_restart(relay, target_processes):
    relay.start()
    config = target_config(relay.sockdir, relay.registration_path)
    first = TargetProcess(config, relay.sockdir)
    target_processes.append(first)
    await eventually(lambda: relay.service.registry.get("real-target") is not None
                     or first.proc.poll() is not None, 30, "real target registered")
    assert first.proc.poll() is None, first.output()
    ws = await relay.session()
    target_list = await ws.hello()
    assert [t["target_id"] for t in target_list["targets"]] == ["real-target"]
    state = (await ws.next("state", timeout=10))["state"]
    paths = [n["path"] for n in state["topology"]["nodes"]]
    assert "/root/invoice_writer" in paths
    await eventually(lambda: relay.service.hub.links["real-target"].state == "connected", 10)
    message = fixture("session.command.json")
    message.update(target_id="real-target", command_id="real-1")
    ws.send(message)
    result = (await ws.next("command_result", timeout=10))["result"]
    assert result["status"] == "completed", result
    assert result["requested_by"] == "CN=demo operator"
    event = await ws.next("event", timeout=10)
    assert event["target_id"] == "real-target"
    # SIGKILL the target: unavailable (the loss is seen at once: test_relay_link_units), then
    # back with a fresh state after a restart
    await deferToThread(first.kill)
    unavailable = await ws.next("connection_state", timeout=10)
    assert unavailable["state"] == "unavailable"
    second = TargetProcess(config, relay.sockdir)
    target_processes.append(second)
    assert (await ws.next("connection_state", timeout=20))["state"] == "connected"
    fresh = (await ws.next("state", timeout=10))["state"]
    assert fresh["target"]["target_id"] == "real-target"
    types = [m["type"] for m in ws.received]
    lost = next(i for i, m in enumerate(ws.received) if m.get("state") == "unavailable")
    assert "event" not in types[lost:types.index("state", lost)]  # the state came first
