"""Target YAML: every rule names its key; the demo config loads; holds start held."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from supervisor import ConfigError, load_target_config
from supervisor.config.target import parse_target_config
from supervisor.testing import TreeHarness

ROOT = pathlib.Path(__file__).resolve().parent.parent
TASK = {"name": "w", "kind": "task", "callable": "supervisor.demo:steady_worker"}
IPC = {"enabled": True, "target_id": "t", "path": "/tmp/x.sock"}


@pytest.mark.parametrize(
    "config, message",
    [
        ({"bogus": 1}, "bogus: unknown key"),
        ({"supervisor": {"strategy": "one_for_some"}}, "supervisor.strategy: must be one of one_for_one, one_for_all, rest_for_one"),
        ({"policy": {"initial_backoff_ms": 500, "max_backoff_ms": 100}}, "policy.max_backoff_ms: must be ≥ initial_backoff_ms (500)"),
        ({"policy": {"jitter_ratio": 2}}, "policy.jitter_ratio: must be between 0 and 1"),
        ({"policy": {"child_restart_window_ms": 0}}, "policy.child_restart_window_ms: must be > 0"),
        ({"policy": {"child_restart_limit": "ten"}}, "policy.child_restart_limit: must be an integer"),
        ({"policy": {"heartbeat_interval_ms": 5000, "stale_after_ms": 1000}}, "policy.stale_after_ms: must be ≥ heartbeat_interval_ms (5000)"),
        ({"shutdown": {"graceful_timeout_ms": -1}}, "shutdown.graceful_timeout_ms: must be >= 0"),
        ({"observability": {"event_journal_capacity": 0}}, "observability.event_journal_capacity: must be >= 1"),
        ({"children": {"name": "x"}}, "children: must be a list of children"),
        ({"children": [{"kind": "task"}]}, "children[0].name: is required"),
        ({"children": [{**TASK, "name": "9bad"}]}, "children[0].name: must match"),
        ({"children": [TASK, TASK]}, "children[1].name: duplicate child name 'w'"),
        ({"children": [{**TASK, "kind": "thread"}]}, "children[0].kind: must be one of task, process, service, supervisor"),
        ({"children": [{**TASK, "callable": "nodots"}]}, "children[0].callable: must look like 'package.module:name'"),
        ({"children": [{**TASK, "callable": "no.such.module:f"}]}, "children[0].callable: cannot import no.such.module"),
        ({"children": [{**TASK, "command": ["x"]}]}, "children[0].command: is not used by a task child"),
        ({"children": [{"name": "p", "kind": "process", "command": []}]}, "children[0].command: must not be empty"),
        ({"children": [{"name": "p", "kind": "process", "command": ["x"], "stop_signal": "SIGNOPE"}]}, "children[0].stop_signal: unknown signal"),
        ({"children": [{**TASK, "restart_policy": "sometimes"}]}, "children[0].restart_policy: must be one of permanent, transient, temporary"),
        ({"children": [{**TASK, "dependencies": ["ghost"]}]}, "children[0].dependencies: 'ghost' is not a sibling of 'w'"),
        ({"children": [{**TASK, "name": "a", "dependencies": ["b"]}, {**TASK, "name": "b", "dependencies": ["a"]}]}, "children.dependencies: cycle a -> b -> a"),
        ({"children": [{**TASK, "policy": {"max_backoff_ms": 1}}]}, "children[0].policy.max_backoff_ms: must be ≥ initial_backoff_ms (100)"),
        ({"children": [{**TASK, "hold": "frozen"}]}, "children[0]: hold: must be paused or quarantined"),
        ({"children": [{"name": "s", "kind": "supervisor", "children": [{**TASK, "name": "x", "bad": 1}]}]}, "children[0].children[0].bad: unknown key"),
        ({"ipc": {**IPC, "path": "relative.sock"}}, "ipc.path: must be an absolute path"),
        ({"ipc": {**IPC, "target_id": "  "}}, "ipc.target_id: must not be blank"),
        ({"ipc": {**IPC, "bind_mode": "yolo"}}, "ipc.bind_mode: must be one of create_new, replace_stale"),
        ({"ipc": {**IPC, "permissions": "rw-"}}, "ipc.permissions: must be an octal string"),
        ({"ipc": {**IPC, "path": "/tmp/" + "x" * 120}}, "ipc.path: socket path is longer than 107 bytes"),
        ({"ipc": {**IPC, "registration": {"enabled": True, "relay_registration_path": "/tmp/r.sock",
                                           "lease_seconds": 10, "registration_heartbeat_interval_seconds": 10}}},
         "ipc.registration.registration_heartbeat_interval_seconds: must be < lease_seconds (10)"),
        ({"ipc": {**IPC, "registration": {"enabled": True, "relay_registration_path": "/tmp/r.sock",
                                           "display_name": "n" * 257}}},
         "ipc.registration.display_name: must be at most 256 characters"),
        ({"ipc": {**IPC, "registration": {"enabled": True, "relay_registration_path": "r.sock"}}},
         "ipc.registration.relay_registration_path: must be an absolute path"),
    ],
)
def test_config_errors_name_the_key_and_the_rule(config, message):
    with pytest.raises(ConfigError) as caught:
        parse_target_config(config, "/tmp")
    assert message in str(caught.value)


def test_pascal_case_strategies_and_per_child_overrides():
    config = parse_target_config({
        "supervisor": {"strategy": "RestForOne"},
        "policy": {"initial_backoff_ms": 50, "max_backoff_ms": 500},
        "shutdown": {"graceful_timeout_ms": 4000},
        "children": [{**TASK, "policy": {"max_backoff_ms": 100}, "shutdown": {"abort_wait_ms": 10}}],
    }, "/tmp")
    child = config.spec.children[0]
    assert config.spec.strategy.value == "rest_for_one"
    assert (child.policy.initial_backoff_ms, child.policy.max_backoff_ms) == (50, 100)
    assert (child.shutdown.graceful_timeout_ms, child.shutdown.abort_wait_ms) == (4000, 10)


def test_relative_cwd_is_taken_from_the_config_folder():
    config = parse_target_config({"children": [{"name": "p", "kind": "process", "command": ["true"], "cwd": "work"}]}, "/srv/app")
    assert config.spec.children[0].cwd == "/srv/app/work"


def test_the_demo_config_loads_and_shows_held_children():
    config = load_target_config(str(ROOT / "etc" / "demo-target.yaml"))
    harness = TreeHarness(config.spec, manifest_parser=config.manifest_parser()).start()
    assert harness.lifecycle("/root/report_builder") == "paused"
    assert harness.lifecycle("/root/legacy_sync") == "quarantined"
    assert harness.lifecycle("/root/ledger/reconciler") == "running"
    assert harness.row("/root/report_builder")["shutdown_state"] == "idle"
    resumed = harness.command("resume_child", "/root/report_builder")
    assert resumed.status == "completed" and harness.lifecycle("/root/report_builder") == "running"
    harness.stop()


def test_yaml_integers_for_permissions_are_read_as_octal():
    text = "ipc: {enabled: true, target_id: t, path: /tmp/x.sock, permissions: 0640}"
    assert parse_target_config(yaml.safe_load(text), "/tmp").ipc.permissions == 0o640


def test_config_files_read_through_libyaml_as_pyyaml_reads_them_and_errors_show_the_line(tmp_path):
    from supervisor.config import _common

    assert _common._FAST_LOADER is yaml.CSafeLoader  # the wheel carries libyaml
    for path in sorted((ROOT / "etc").glob("*.yaml")):
        assert _common.load_yaml_mapping(str(path)) == yaml.safe_load(path.read_text()), path
    bad = tmp_path / "bad.yaml"
    bad.write_text("children:\n  - {name: a\n  - x: [1,\n")
    with pytest.raises(ConfigError) as caught:
        load_target_config(str(bad))
    message = str(caught.value)
    assert "is not valid YAML" in message and f'in "{bad}", line 3, column 6' in message, message
    assert "- x: [1," in message and "^" in message, message  # the line, with a caret under it
    # a tab PyYAML's scanner refuses is refused whichever parser reads the file
    bad.write_text("supervisor: {strategy: one_for_one}\nipc:\t{enabled: false}\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_target_config(str(bad))


def test_the_production_configs_load():
    from supervisor.config.relay import load_relay_config

    relay = load_relay_config(str(ROOT / "etc" / "production-relay.yaml"))
    target = load_target_config(str(ROOT / "etc" / "production-target.yaml"))
    assert relay.listen.host == "0.0.0.0" and relay.registration.listen_path.startswith("/run/supervisor/")
    assert target.ipc.path.startswith(relay.registration.allowed_ipc_path_prefixes[0] + "/")
    assert target.ipc.registration.relay_registration_path == relay.registration.listen_path


def test_names_from_the_config_with_lone_surrogates_become_encodable():
    from supervisor.wire.ndjson import encode

    data = yaml.safe_load(
        'supervisor: {name: "root \\udcff"}\n'
        'ipc: {enabled: true, target_id: "t\\ud800", path: /tmp/x.sock,'
        ' registration: {enabled: true, relay_registration_path: /tmp/r.sock, display_name: "d\\udcff"}}\n'
        'children: [{name: w, kind: task, callable: "supervisor.demo:steady_worker",'
        ' display_name: "report-\\udcff.csv", tags: ["\\udcff"]}]\n')
    config = parse_target_config(data, "/tmp")
    assert config.spec.name == "root \ufffd"
    assert (config.ipc.target_id, config.ipc.registration.display_name) == ("t\ufffd", "d\ufffd")
    child = config.spec.children[0]
    assert (child.display_name, child.tags) == ("report-\ufffd.csv", ("\ufffd",))
    harness = TreeHarness(config.spec)
    encode(harness.supervisor.state("d\udcff"))  # raises UnicodeEncodeError if anything is left


def test_history_settings_are_read_checked_and_on_in_the_examples(tmp_path):
    text = """
observability:
  history: {enabled: true, path: hist, max_bytes: 1048576, segment_bytes: 65536,
            flush_interval_ms: 50}
"""
    history = parse_target_config(yaml.safe_load(text), str(tmp_path)).spec.observability.history
    assert (history.enabled, history.path, history.max_bytes, history.segment_bytes,
            history.flush_interval_ms) == (True, str(tmp_path / "hist"), 1048576, 65536, 50)
    for bad, key in (
        ("{enabled: true}", "observability.history.path"),
        ("{enabled: true, path: h, segment_bytes: 100}", "observability.history.segment_bytes"),
        ("{enabled: true, path: h, segment_bytes: 65536, max_bytes: 65536}",
         "observability.history.max_bytes"),
        ("{enabled: true, path: h, flush_interval_ms: 0}", "observability.history.flush_interval_ms"),
        ("{enabled: true, path: h, depth: 3}", "observability.history.depth"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_target_config(yaml.safe_load(f"observability: {{history: {bad}}}"), "/tmp")
        assert caught.value.key == key
    assert not parse_target_config({}, "/tmp").spec.observability.history.enabled
    for name in ("demo-target.yaml", "production-target.yaml"):
        assert load_target_config(str(ROOT / "etc" / name)).spec.observability.history.enabled


def test_a_process_child_may_have_a_rotated_log_file(tmp_path):
    text = """
children:
  - {name: p, kind: process, command: [sleep, "1"], log_file: {path: logs/p.log, backups: 5}}
"""
    child = parse_target_config(yaml.safe_load(text), str(tmp_path)).spec.children[0]
    assert (child.log_file.path, child.log_file.max_bytes, child.log_file.backups) == (
        str(tmp_path / "logs" / "p.log"), 50 * 1024 * 1024, 5)
    for bad, key in (("{name: t, callable: 'supervisor.demo:steady_worker', log_file: {path: x}}",
                      "children[0].log_file"),
                     ("{name: p, kind: process, command: [x], log_file: {path: x, max_bytes: 10}}",
                      "children[0].log_file.max_bytes"),
                     ("{name: p, kind: process, command: [x], log_file: {}}",
                      "children[0].log_file.path")):
        with pytest.raises(ConfigError) as caught:
            parse_target_config(yaml.safe_load(f"children: [{bad}]"), "/tmp")
        assert caught.value.key == key
