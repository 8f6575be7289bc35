"""``ipc.add_child``: what an add_child manifest may start, checked before any import or spawn."""

from __future__ import annotations

import json
import sys

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor

from supervisor.config._common import ConfigError
from supervisor.config.target import AddChildPolicy, load_target_config, parse_target_config
from supervisor.testing import TreeHarness
from supervisor.tree.runtime import Supervisor
from tests.ipc_support import TARGET_ID, Target
from tests.waiting import eventually

PY = sys.executable


@pytest.fixture
def side_effect_module(tmp_path, monkeypatch):
    """A module whose import writes a file: the proof that it was imported."""
    marker = tmp_path / "imported.txt"
    name = f"add_child_side_effect_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "def run(ctx):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def _harness(allow: str = "") -> TreeHarness:
    text = f"ipc: {{add_child: {{{allow}}}}}" if allow else "{}"
    return TreeHarness.from_yaml(text).start()


@pytest.mark.parametrize("allow", ["", "allowed_callables: [supervisor.demo]",
                                   "allowed_callables: [add_child_side]"])
def test_a_callable_outside_the_list_is_refused_before_its_module_is_imported(
        side_effect_module, allow):
    name, marker = side_effect_module
    harness = _harness(allow)
    outcome = harness.command("add_child", None, child_manifest={
        "name": "evil", "kind": "task", "callable": f"{name}:run"})
    assert outcome.status == "failed" and outcome.error.code == "invalid_manifest"
    assert "ipc.add_child.allowed_callables" in outcome.error.message
    assert not marker.exists() and name not in sys.modules


def test_a_nested_child_is_checked_too(side_effect_module):
    name, marker = side_effect_module
    harness = _harness("allowed_callables: [supervisor.demo]")
    manifest = {"name": "group", "kind": "supervisor", "children": [
        {"name": "fine", "kind": "task", "callable": "supervisor.demo:steady_worker"},
        {"name": "evil", "kind": "task", "callable": f"{name}:run"}]}
    outcome = harness.command("add_child", None, child_manifest=manifest)
    assert outcome.error.code == "invalid_manifest" and not marker.exists()


def test_a_listed_module_prefix_allows_its_submodules_only(side_effect_module):
    name, marker = side_effect_module
    harness = _harness(f"allowed_callables: [{name}]")
    outcome = harness.command("add_child", None, child_manifest={
        "name": "ok", "kind": "task", "callable": f"{name}:run"})
    assert outcome.accepted, outcome
    assert marker.exists()
    refused = _harness("allowed_callables: [supervisor.dem]").command(
        "add_child", None, child_manifest={"name": "x", "kind": "task",
                                           "callable": "supervisor.demo:steady_worker"})
    assert refused.error.code == "invalid_manifest"


@pytest.mark.parametrize("command", [["/bin/echo", "hi"], ["echo", "hi"],
                                     ["/bin/../bin/true"], [PY, "-c", "print(1)"]])
def test_a_command_outside_the_list_is_refused(command):
    harness = _harness("allowed_commands: [/bin/true]")
    outcome = harness.command("add_child", None, child_manifest={
        "name": "p", "kind": "process", "command": command})
    assert outcome.status == "failed" and outcome.error.code == "invalid_manifest"
    assert "ipc.add_child.allowed_commands" in outcome.error.message


def test_numprocs_instances_are_checked_after_their_template_is_rendered():
    harness = _harness("allowed_commands: ['/bin/{name}']")
    outcome = harness.command("add_child", None, child_manifest={
        "name": "sh", "kind": "process", "command": ["/bin/{name}", "-c", "id"], "numprocs": 2})
    assert outcome.error.code == "invalid_manifest"
    assert "'/bin/sh'" in outcome.error.message


@pytest_twisted.ensureDeferred
async def test_a_listed_command_is_started():
    config = parse_target_config(yaml.safe_load(
        f"ipc: {{add_child: {{allowed_commands: [{json.dumps(PY)}]}}}}"), "/tmp")
    sup = Supervisor(config.spec, reactor=reactor, clock=reactor,
                     manifest_parser=config.manifest_parser())
    sup.startService()
    try:
        outcome = await sup.command(
            "add_child", None, requested_by="test", reason="test", child_manifest={
                "name": "sleeper", "kind": "process",
                "command": [PY, "-c", "import time; time.sleep(30)"]})
        assert outcome.accepted, outcome
        await eventually(lambda: sup.child("/root/sleeper").state.value == "running",
                         what="the listed program running")
    finally:
        await sup.stopService()


@pytest_twisted.ensureDeferred
async def test_over_ipc_the_default_refuses_every_manifest(side_effect_module):
    name, marker = side_effect_module
    target = Target().start()
    try:
        client = await target.connect()
        answer = await client.call("command.add_child", {
            "command_id": "c1", "correlation_id": None, "target_id": TARGET_ID,
            "command": "add_child", "reason": "try", "requested_by": "CN=op", "confirmed": True,
            "target": {"child_path": None, "child_manifest": {
                "name": "evil", "kind": "task", "callable": f"{name}:run"}}})
        result = answer["result"]["result"]
        assert (result["accepted"], result["status"]) == (False, "failed")
        assert result["error"]["code"] == "invalid_manifest"
        assert "empty" in result["error"]["message"]
        assert not marker.exists()
    finally:
        await target.stop()


@pytest.mark.parametrize("allow, key", [
    ("allowed_commands: [bin/true]", "ipc.add_child.allowed_commands[0]"),
    ("allowed_callables: ['../x']", "ipc.add_child.allowed_callables[0]"),
    ("allowed_callables: ['a..b']", "ipc.add_child.allowed_callables[0]"),
    ("allowed_callables: 'supervisor'", "ipc.add_child.allowed_callables"),
    ("other: []", "ipc.add_child.other"),
])
def test_the_lists_are_validated(allow, key):
    with pytest.raises(ConfigError) as e:
        parse_target_config(yaml.safe_load(f"ipc: {{add_child: {{{allow}}}}}"), "/tmp")
    assert e.value.key == key


def test_the_default_policy_is_empty():
    assert AddChildPolicy() == AddChildPolicy(allowed_commands=(), allowed_callables=())
    assert parse_target_config({}, "/tmp").ipc.add_child == AddChildPolicy()


def test_a_reload_keeps_the_lists_read_at_start(tmp_path, side_effect_module):
    name, marker = side_effect_module
    path = tmp_path / "target.yaml"
    path.write_text("ipc: {add_child: {allowed_callables: [supervisor.demo]}}\n")
    config = load_target_config(str(path))
    path.write_text(f"ipc: {{add_child: {{allowed_callables: [supervisor.demo, {name}]}}}}\n")
    reloaded = config.config_loader()()
    assert reloaded.not_applied == ("ipc.add_child.allowed_callables",)
    with pytest.raises(ConfigError) as e:
        reloaded.manifest_parser({"name": "evil", "kind": "task", "callable": f"{name}:run"})
    assert "allowed_callables" in e.value.message and not marker.exists()
