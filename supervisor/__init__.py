"""OTP-style supervision trees for Twisted.

Build a tree from Python (:class:`SupervisorSpec`, :class:`ChildSpec`) or from YAML
(:func:`load_target_config`), run it as a Twisted service (:class:`Supervisor`), and watch
or control it through its command API, event journal and state model.
"""

from supervisor.config._common import ConfigError
from supervisor.config.target import TargetConfig, load_target_config
from supervisor.target.service import supervisor_from_config
from supervisor.tree.children import ChildContext
from supervisor.tree.lifecycle import Health, IllegalTransition, Lifecycle, Readiness
from supervisor.tree.runtime import CommandOutcome, CommandRequest, Supervisor
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
