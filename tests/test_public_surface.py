"""The names ``supervisor`` exports, and that importing one end does not load the others."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

import supervisor

INIT = pathlib.Path(supervisor.__file__)


def test_exports():
    assert supervisor.__all__ == [
        "ChildContext",
        "ChildKind",
        "ChildSpec",
        "CommandOutcome",
        "CommandRequest",
        "ConfigError",
        "Criticality",
        "Health",
        "IllegalTransition",
        "Lifecycle",
        "Observability",
        "Policy",
        "Readiness",
        "RestartPolicy",
        "ShutdownPolicy",
        "Strategy",
        "Supervisor",
        "SupervisorSpec",
        "TargetConfig",
        "WireError",
        "load_target_config",
        "supervisor_from_config",
    ]
    for name in supervisor.__all__:
        value = getattr(supervisor, name)
        assert getattr(value, "__name__", name) == name, name
    assert set(supervisor.__all__) <= set(dir(supervisor))


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="NoSuchThing"):
        supervisor.NoSuchThing  # noqa: B018


def test_type_checkers_see_the_names_where_the_lazy_map_finds_them():
    """The ``if TYPE_CHECKING:`` imports and the lazy map name the same module per name."""
    tree = ast.parse(INIT.read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and getattr(node.test, "id", None) == "TYPE_CHECKING")
    declared = {alias.name: stmt.module for stmt in block.body
                if isinstance(stmt, ast.ImportFrom) for alias in stmt.names}
    lazy = {name: module for module, names in supervisor._EXPORTS.items() for name in names}
    assert declared == lazy
    assert sorted(lazy) == sorted(supervisor.__all__)


def loaded_after(statement: str) -> list[str]:
    """The ``supervisor`` modules a fresh interpreter holds after ``statement``."""
    script = (f"import sys\n{statement}\n"
              "import json\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith('supervisor'))))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(run.stdout)


def test_the_relay_loads_nothing_of_the_tree():
    modules = loaded_after("import supervisor.relay.service")
    assert "supervisor.relay.service" in modules
    assert [m for m in modules if m == "supervisor.tree" or m.startswith("supervisor.tree.")] == []
    assert "supervisor.config.target" not in modules and "supervisor.ipc" not in modules


def test_importing_the_package_loads_only_the_package():
    assert loaded_after("import supervisor") == ["supervisor"]
    assert "supervisor.tree.spec" in loaded_after("from supervisor import ChildSpec")
