"""docs/configuration.md lists every key the loaders accept, with the defaults the code uses."""

from __future__ import annotations

import pathlib
import re

import attrs
import pytest

from supervisor.config import target
from supervisor.tree.spec import Observability, Policy, ShutdownPolicy

DOC = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()


def table(heading: str) -> dict[str, str]:
    """``{key: default}`` from the table under ``### heading``."""
    section = DOC.split(f"### `{heading}`", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]*) \|", section, re.M)
    return {key: default.strip() for key, default in rows}


@pytest.mark.parametrize(
    "heading, keys",
    [
        ("supervisor", ("strategy", "name")),
        ("policy", target.POLICY_KEYS),
        ("shutdown", target.SHUTDOWN_KEYS),
        ("observability", target.OBSERVABILITY_KEYS),
        ("children[]", target.CHILD_KEYS),
        ("ipc", target.IPC_KEYS),
        ("ipc.registration", target.REGISTRATION_KEYS),
    ],
)
def test_every_target_key_is_documented(heading, keys):
    assert set(table(heading)) == set(keys)


@pytest.mark.parametrize(
    "heading, model", [("policy", Policy), ("shutdown", ShutdownPolicy), ("observability", Observability)]
)
def test_documented_defaults_match_the_models(heading, model):
    documented = table(heading)
    for field in attrs.fields(model):
        assert documented[field.name] == str(field.default).lower(), field.name
