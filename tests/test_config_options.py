"""Target YAML process options: environment references, numprocs groups, includes, users."""

from __future__ import annotations

import os
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
