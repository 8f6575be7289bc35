"""OTP-style supervision trees for Twisted.

Build a tree from Python (:class:`SupervisorSpec`, :class:`ChildSpec`) or from YAML
(:func:`load_target_config`), run it as a Twisted service (:class:`Supervisor`), and watch
or control it through its command API, event journal and state model.

The names below are the public API; so are :mod:`supervisor.testing` (a tree on a fake
clock), :mod:`supervisor.ctl` and :mod:`supervisor.certs` (command-line tools),
:mod:`supervisor.demo` (workloads for YAML files to name) and the twistd plugins
``supervisor-target`` and ``supervisor-relay``. The subpackages behind them and the modules
whose names start with ``_`` are internal. Each name is imported when first used, so that
importing one part (the relay, say) does not load the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names and modules as _EXPORTS
    from supervisor.config._common import ConfigError
    from supervisor.config.target import TargetConfig, load_target_config
    from supervisor.target.service import supervisor_from_config
    from supervisor.tree.children import ChildContext
    from supervisor.tree.lifecycle import Health, IllegalTransition, Lifecycle, Readiness
    from supervisor.tree.commands import CommandOutcome, CommandRequest
    from supervisor.tree.runtime import Supervisor
    from supervisor.tree.spec import (
        ChildKind,
        ChildSpec,
        Criticality,
        Observability,
        Policy,
        RestartPolicy,
        ShutdownPolicy,
        Strategy,
        SupervisorSpec,
    )
    from supervisor.wire.errors import WireError

#: Where each public name lives; moving a class means changing its module here (and above).
_EXPORTS: dict[str, tuple[str, ...]] = {
    "supervisor.config._common": ("ConfigError",),
    "supervisor.config.target": ("TargetConfig", "load_target_config"),
    "supervisor.target.service": ("supervisor_from_config",),
    "supervisor.tree.children": ("ChildContext",),
    "supervisor.tree.lifecycle": ("Health", "IllegalTransition", "Lifecycle", "Readiness"),
    "supervisor.tree.commands": ("CommandOutcome", "CommandRequest"),
    "supervisor.tree.runtime": ("Supervisor",),
    "supervisor.tree.spec": (
        "ChildKind",
        "ChildSpec",
        "Criticality",
        "Observability",
        "Policy",
        "RestartPolicy",
        "ShutdownPolicy",
        "Strategy",
        "SupervisorSpec",
    ),
    "supervisor.wire.errors": ("WireError",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
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


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562) and keep it."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
