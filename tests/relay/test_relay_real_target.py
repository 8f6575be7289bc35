"""The relay against the real target: ``twistd -n supervisor-target`` registering with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread

from relay_faketarget import fixture
from relay_helpers import eventually
from tests.sequences import difference

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


def answers(ws) -> list[dict]:
    return [m for m in ws.received if str(m.get("request_id", "")).startswith("b")]


def _on_disk(folder: str, needle: bytes) -> bool:
    """Whether any history segment under ``folder`` holds ``needle``."""
    import glob

    for path in glob.glob(os.path.join(folder, "logs", "*.ndjson")):
        with open(path, "rb") as f:
            if needle in f.read():
                return True
    return False


@pytest_twisted.ensureDeferred
async def test_a_session_pages_through_a_fast_childs_history(relay, target_processes):
    relay.start()
    lines = 200_000
    history = os.path.join(relay.sockdir, "history")
    program = (f"import os, sys, time\nparent = os.getppid()\nw = sys.stdout.write\n"
               f"for i in range({lines}):\n    w('line %07d\\n' % i)\nsys.stdout.flush()\n"
               "while os.getppid() == parent: time.sleep(0.2)\n")  # until the target is gone
    config = target_config(relay.sockdir, relay.registration_path)
    with open(config) as f:
        data = yaml.safe_load(f)
    data["observability"] = {"history": {"enabled": True, "path": history}}
    data["children"].append({"name": "chatty", "kind": "process", "restart_policy": "temporary",
                             "command": [sys.executable, "-c", program]})
    with open(config, "w") as f:
        yaml.safe_dump(data, f)
    target = TargetProcess(config, relay.sockdir)
    target_processes.append(target)
    await eventually(lambda: relay.service.registry.get("real-target") is not None
                     or target.proc.poll() is not None, 30, "real target registered")
    assert target.proc.poll() is None, target.output()
    needle = f"line {lines - 1:07d}".encode()
    deadline = time.monotonic() + 120
    while not await deferToThread(_on_disk, history, needle):  # read off the reactor
        assert time.monotonic() < deadline, "the child's last line never reached the history"
        await task.deferLater(reactor, 0.1, lambda: None)
    ws = await relay.session()
    await ws.hello()
    await ws.next("state", timeout=10)
    await eventually(lambda: relay.service.hub.links["real-target"].state == "connected", 10)
    messages: list[str] = []
    cursor = None
    count = 0
    while True:
        count += 1
        ws.send({"type": "history_request", "request_id": f"h{count}", "target_id": "real-target",
                 "stream": "logs", "after": cursor, "limit": 1000, "child_path": "/root/chatty"})
        page = await ws.next("history_page", timeout=20)
        assert page["request_id"] == f"h{count}" and page["evicted"] is False
        messages += [r["message"] for r in page["records"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    differs = difference(messages, [f"line {i:07d}" for i in range(lines)])
    assert differs is None, (f"{differs}; dropped (events, logs) "
                             f"{relay.service.hub.links['real-target'].dropped}")
    # a target that is not bound, a bad limit, too many at once
    ws.send({"type": "history_request", "request_id": "x1", "target_id": "nobody",
             "stream": "logs"})
    error = await ws.next("error", timeout=10)
    assert (error["request_id"], error["error"]["code"]) == ("x1", "target_not_bound")
    ws.send({"type": "history_request", "request_id": "x2", "target_id": "real-target",
             "stream": "logs", "limit": 5000})
    error = await ws.next("error", timeout=10)
    assert (error["request_id"], error["error"]["code"]) == ("x2", "validation_failed")
    for i in range(8):
        ws.send({"type": "history_request", "request_id": f"b{i}", "target_id": "real-target",
                 "stream": "events", "limit": 10})
    await eventually(lambda: len(answers(ws)) == 8, 20, "every history request answered")
    pages = [a for a in answers(ws) if a["type"] == "history_page"]
    busy = [a for a in answers(ws) if a["type"] == "error"]
    assert len(pages) >= 1 and all(b["error"]["code"] == "history_busy" for b in busy)
    assert len(pages) + len(busy) == 8
    assert any(r["event_type"] == "child_started" for r in pages[0]["records"])
