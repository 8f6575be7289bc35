"""Target YAML process options: environment references, numprocs groups, includes, users."""

from __future__ import annotations

import pwd

import pytest

from supervisor import ChildKind, ConfigError, load_target_config
from supervisor.config import target
from supervisor.config.target import parse_target_config

PROC = {"name": "p", "kind": "process", "command": ["/bin/true"]}


def parse(config, environ=None):
    return parse_target_config(config, "/srv/app", environ or {})


def test_environment_references_are_expanded_in_string_values():
    config = parse({
        "supervisor": {"name": "${SITE}"},
        "children": [{**PROC, "command": ["/bin/echo", "${GREETING:-hello}", "${SITE}-x", "$${LITERAL}"],
                      "environment": {"PORT": "${PORT:-8000}", "EMPTY": "${UNSET:-}"},
                      "cwd": "${HOME_DIR}"}],
    }, {"SITE": "shop", "HOME_DIR": "/home/shop", "PORT": "9000"})
    child = config.spec.children[0]
    assert config.spec.name == "shop"
    assert child.command == ("/bin/echo", "hello", "shop-x", "${LITERAL}")
    assert child.environment == {"PORT": "9000", "EMPTY": ""}
    assert child.cwd == "/home/shop"


@pytest.mark.parametrize("value, message", [
    ("${MISSING}", "children[0].command[1]: environment variable MISSING is not set"),
    ("${MISSING", "children[0].command[1]: malformed ${...} reference"),
    ("${1BAD}", "children[0].command[1]: malformed ${...} reference"),
])
def test_an_unset_reference_without_default_names_the_key(value, message):
    with pytest.raises(ConfigError) as caught:
        parse({"children": [{**PROC, "command": ["/bin/echo", value]}]})
    assert message in str(caught.value)


def test_the_process_environment_is_the_default_source(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTIONS_TEST_WORD", "from-env")
    path = tmp_path / "t.yaml"
    path.write_text("children:\n  - {name: p, kind: process, command: [/bin/echo, '${OPTIONS_TEST_WORD}']}\n")
    assert load_target_config(str(path)).spec.children[0].command[1] == "from-env"


def test_numprocs_makes_a_group_of_instances_named_by_process_name():
    config = parse({"children": [
        {"name": "cache", "kind": "task", "callable": "supervisor.demo:steady_worker"},
        {**PROC, "name": "worker", "numprocs": 3, "process_name": "{name}-{index}",
         "command": ["/bin/echo", "{process_name}", "{{literal}}"], "dependencies": ["cache"],
         "environment": {"SLOT": "{index:03d}"}, "priority": 5, "hold": "paused",
         "stop_signal": "SIGINT", "startsecs": 1, "exitcodes": [0, 2],
         "log_file": {"path": "/var/log/{process_name}.log"}},
    ]})
    group = config.spec.children[1]
    assert (group.kind, group.dependencies, group.priority, group.hold) == (
        ChildKind.SUPERVISOR, ("cache",), 5, "paused")
    assert [c.name for c in group.children] == ["worker-0", "worker-1", "worker-2"]
    last = group.children[2]
    assert last.kind is ChildKind.PROCESS and last.dependencies == () and last.hold is None
    assert last.command == ("/bin/echo", "worker-2", "{literal}")
    assert last.environment == {"SLOT": "002"}
    assert last.log_file.path == "/var/log/worker-2.log"  # one file per instance
    assert (last.stop_signal, last.startsecs, last.exitcodes) == ("SIGINT", 1.0, (0, 2))
    default = parse({"children": [{**PROC, "numprocs": 2}]}).spec.children[0]
    assert [c.name for c in default.children] == ["p_00", "p_01"]


@pytest.mark.parametrize("child, message", [
    ({**PROC, "numprocs": 2, "process_name": "{name}"},
     "children[0].process_name: gives 'p' for instances 0 and 1"),
    ({**PROC, "numprocs": 2, "process_name": "{nmae}"}, "children[0].process_name: bad template"),
    ({**PROC, "numprocs": 0}, "children[0].numprocs: must be >= 1"),
    ({**PROC, "process_name": "x"}, "children[0].process_name: is used only with numprocs"),
    ({**PROC, "exitcodes": [0, 300]}, "children[0].exitcodes: must be a non-empty list"),
    ({**PROC, "startsecs": -1}, "children[0].startsecs: must be >= 0"),
    ({**PROC, "startretries": "3"}, "children[0].startretries: must be an integer"),
    ({**PROC, "umask": "99"}, "children[0].umask: must be an octal string"),
    ({**PROC, "user": "no-such-user-here"}, "children[0].user: no such user 'no-such-user-here'"),
    ({**PROC, "group": "no-such-group-here"}, "children[0].group: no such group"),
    ({**PROC, "stop_as_group": "yes"}, "children[0].stop_as_group: must be true or false"),
    ({**PROC, "autostart": False}, "children[0].autostart: is not a key here; write hold: paused"),
    ({**PROC, "parent_death_signal": "SIGNOPE"}, "children[0].parent_death_signal: unknown signal"),
    ({"name": "t", "kind": "task", "callable": "supervisor.demo:steady_worker", "numprocs": 2},
     "children[0].numprocs: is not used by a task child"),
])
def test_process_option_errors_name_the_key(child, message):
    with pytest.raises(ConfigError) as caught:
        parse({"children": [child]})
    assert message in str(caught.value)


def test_user_and_group_need_a_root_target(monkeypatch):
    monkeypatch.setattr(target, "_euid", lambda: 1000)
    for key in ("user", "group"):
        with pytest.raises(ConfigError) as caught:
            parse({"children": [{**PROC, key: "nobody" if key == "user" else "nogroup"}]})
        assert str(caught.value) == f"children[0].{key}: needs the target to run as root (it runs as uid 1000)"


def test_user_group_umask_and_group_signals_are_kept():
    nobody = pwd.getpwnam("nobody")
    child = parse({"children": [{**PROC, "user": "nobody", "group": str(nobody.pw_gid),
                                 "umask": "022", "stop_as_group": False, "kill_as_group": False}]}
                  ).spec.children[0]
    assert (child.user, child.group, child.umask) == ("nobody", str(nobody.pw_gid), 0o022)
    assert (child.stop_as_group, child.kill_as_group) == (False, False)
    assert parse({"children": [PROC]}).spec.children[0].stop_as_group is True


def test_a_parent_death_signal_is_off_unless_asked_for():
    assert parse({"children": [PROC]}).spec.children[0].parent_death_signal is None
    child = parse({"children": [{**PROC, "parent_death_signal": "KILL"}]}).spec.children[0]
    assert child.parent_death_signal == "KILL"


def test_include_concatenates_children_and_a_duplicate_names_both_files(tmp_path):
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "10-web.yaml").write_text(
        "children:\n  - {name: web, kind: process, command: [/bin/true], cwd: www, dependencies: [db]}\n")
    (confd / "20-jobs.yaml").write_text(
        "children:\n  - {name: jobs, kind: process, command: ['${JOB_BIN:-/bin/true}']}\n")
    (confd / "notes.txt").write_text("not yaml children\n")
    main = tmp_path / "tree.yaml"
    main.write_text("include: [conf.d/*.yaml]\nchildren:\n  - {name: db, kind: process, command: [/bin/true]}\n")
    config = load_target_config(str(main), {})
    assert [c.name for c in config.spec.children] == ["db", "web", "jobs"]
    assert config.spec.children[1].cwd == str(confd / "www")
    assert config.spec.children[2].command == ("/bin/true",)

    (confd / "30-dup.yaml").write_text("children:\n  - {name: web, kind: process, command: [/bin/true]}\n")
    with pytest.raises(ConfigError) as caught:
        load_target_config(str(main), {})
    assert str(caught.value) == (
        f"{confd}/30-dup.yaml.children[0].name: duplicate child name 'web' "
        f"(in {confd}/10-web.yaml and in {confd}/30-dup.yaml)")

    (confd / "30-dup.yaml").write_text("ipc: {enabled: true}\n")
    with pytest.raises(ConfigError) as caught:
        load_target_config(str(main), {})
    assert str(caught.value) == f"{confd}/30-dup.yaml.ipc: unknown key"
