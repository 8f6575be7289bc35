"""The control commands of CONTRACTS.md §4: wire names, order and which need confirmation."""

from __future__ import annotations

COMMANDS: tuple[str, ...] = (
    "restart_child",
    "pause_child",
    "resume_child",
    "quarantine_child",
    "remove_child",
    "add_child",
    "shutdown_tree",
)

DANGEROUS_COMMANDS: frozenset[str] = frozenset({"remove_child", "add_child", "shutdown_tree"})


def ipc_method(command: str) -> str:
    """The §1 IPC method that carries ``command``."""
    return f"command.{command}"
