"""Applying a config reload to a running tree, from the diff :mod:`specdiff` computed.

In order: settings that apply live (policies, backoff, shutdown timeouts, strategies,
topology labels) are written to the children and levels concerned, with no restart;
removed children are stopped one after the other in reverse declaration order, staged as
the tree's shutdown stops them, and leave the tree; changed children that need a restart are
stopped, take the new spec and start again as a restart (their generation goes on); added
children are adopted and started; each level takes the file's declaration order (children
kept from run time last). Children the diff counts unchanged are not touched. Every move
carries the reload command's id as its correlation id.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import attrs

from supervisor.tree.lifecycle import HELD, Trigger, move_for
from supervisor.tree.model import ROOT_PATH, ChildRuntime, SupervisorNode, child_at, fire
from supervisor.tree.shutdown import stop_child
from supervisor.tree.spec import ChildKind, ChildSpec, Policy, ShutdownPolicy, SupervisorSpec
from supervisor.tree.specdiff import Running, TreeDiff
from supervisor.tree.state import publish_topology
from supervisor.tree.supervision import Supervision


@attrs.frozen
class Reloaded:
    """A freshly read and validated config: the new spec, its ``add_child`` manifest parser,
    and the keys of the file that reload cannot apply (read only when the target starts)."""

    spec: SupervisorSpec
    manifest_parser: Callable[[Any], ChildSpec] | None = None
    not_applied: tuple[str, ...] = ()


#: Reads the config again; raises an exception whose message names the offending key.
ConfigLoader = Callable[[], Reloaded]


def running_of(node: SupervisorNode) -> dict[str, Running]:
    """What runs at ``node`` and below, as :func:`specdiff.diff_tree` reads it."""
    return {
        name: Running(c.spec, running_of(c.subtree) if c.subtree is not None else {})
        for name, c in node.children.items()
    }


def specs_by_path(spec: SupervisorSpec) -> dict[str, ChildSpec]:
    """Every child spec of ``spec`` by its path."""
    found: dict[str, ChildSpec] = {}

    def visit(path: str, children: tuple[ChildSpec, ...]) -> None:
        for child in children:
            found[f"{path}/{child.name}"] = child
            visit(f"{path}/{child.name}", child.children)

    visit(ROOT_PATH, spec.children)
    return found


def _window(child: ChildRuntime, policy: Policy) -> Any:
    return child.intensity.resized(policy.child_restart_limit, policy.child_restart_window_ms / 1000)


class Reconfigure:
    """Carries out one reload on the tree rooted at ``root``."""

    def __init__(self, root: SupervisorNode, supervision: Supervision) -> None:
        self._root = root
        self._supervision = supervision

    async def apply(self, new: SupervisorSpec, diff: TreeDiff, correlation: str,
                    who: dict[str, str]) -> None:
        root = self._root
        specs = specs_by_path(new)
        changed = {c.path: c for c in diff.changed}
        restart = {p for p, c in changed.items() if c.restart}
        removed = set(diff.removed)
        self._live_settings(root, new.strategy, new.policy, new.shutdown, specs, changed,
                            restart | removed, correlation)
        fields = {"correlation": correlation}
        # removed children: stopped in reverse declaration order, staged, then dropped
        for child in reversed([c for c in _walk(root) if c.path in removed]):
            await stop_child(child, Trigger.STOP, staged=True, fields=fields)
            move_for(child.path, child.phase, Trigger.REMOVE)
            child.node.children.pop(child.name, None)
            fire(child, Trigger.REMOVE)
        # changed children that need a restart: stop (reverse order), then the new spec
        to_start: list[ChildRuntime] = []
        for child in reversed([c for c in _walk(root) if c.path in restart]):
            if await self._replace(child, specs[child.path], changed[child.path].keys,
                                   correlation, who):
                to_start.append(child)
        # added children
        for path in diff.added:
            parent_path, _, _ = path.rpartition("/")
            node = root if parent_path == ROOT_PATH else child_at(root, parent_path).subtree
            assert node is not None
            child = self._supervision.adopt(node, specs[path])
            fire(child, Trigger.ADOPT, {"kind": child.spec.kind.value}, correlation=correlation)
            if child.phase not in HELD:
                to_start.append(child)
        _declaration_order(root, new.children)
        if not diff.empty:
            publish_topology(root)
        for child in sorted(to_start, key=_position(root)):
            restarted = child.path in restart
            extra: dict[str, Any] = dict(fields)
            if restarted:
                extra.update(restart_count=child.restart_count + 1,
                             last_policy_decision="restarted by config reload")
            self._supervision.start_when_ready(child, restart=restarted, **extra)

    def _live_settings(
        self,
        node: SupervisorNode,
        strategy: Any,
        policy: Policy,
        shutdown: ShutdownPolicy,
        specs: dict[str, ChildSpec],
        changed: dict[str, Any],
        skip: set[str],
        correlation: str,
    ) -> None:
        """Write the new level settings and live child changes, top down (inherited policies
        follow their level)."""
        node.reconfigure(strategy, policy, shutdown)
        for child in list(node.children.values()):
            if child.path in skip:
                continue
            change = changed.get(child.path)
            spec = specs[child.path] if change is not None else child.spec
            keys = list(change.keys) if change is not None else []
            own_policy = spec.policy or policy
            own_shutdown = spec.shutdown or shutdown
            writes: dict[str, Any] = {}
            if spec is not child.spec:
                writes["spec"] = spec
            if own_policy != child.policy:
                writes["policy"] = own_policy
                writes["intensity"] = _window(child, own_policy)
                if not any(k.startswith("policy") for k in keys):
                    keys.append("policy")  # inherited from its supervisor
            if own_shutdown != child.shutdown:
                writes["shutdown"] = own_shutdown
                if not any(k.startswith("shutdown") for k in keys):
                    keys.append("shutdown")
            if writes:
                fire(child, Trigger.RECONFIGURE, {"keys": keys, "restart": False},
                     correlation=correlation, **writes)
            if child.subtree is not None:
                self._live_settings(child.subtree, spec.strategy, own_policy, own_shutdown,
                                    specs, changed, skip, correlation)

    async def _replace(self, child: ChildRuntime, spec: ChildSpec, keys: tuple[str, ...],
                       correlation: str, who: dict[str, str]) -> bool:
        """Stop ``child`` and give it ``spec``; True when it is to be started again.

        A child held by an operator stays held (the new spec applies when it is resumed)
        unless the change is to its ``hold``; a new ``hold`` stops it into that hold.
        """
        node = child.node
        fields = {"correlation": correlation}
        held = child.phase in HELD
        if held:
            restarts = "hold" in keys and spec.hold is None
        elif spec.hold is not None:
            await stop_child(child, Trigger.PAUSE if spec.hold == "paused" else Trigger.QUARANTINE,
                             fields=fields)
            restarts = False
        else:
            await stop_child(child, Trigger.STOP_FOR_RESTART, fields=fields)
            restarts = True
        policy = spec.policy or node.policy
        shutdown = spec.shutdown or node.shutdown
        subtree = None
        if spec.kind is ChildKind.SUPERVISOR:
            subtree = self._supervision.build(child.path, spec.strategy, policy, shutdown,
                                              spec.children)
            subtree.owner = child
        fire(
            child, Trigger.RECONFIGURE, {"keys": list(keys), "restart": restarts},
            correlation=correlation, spec=spec, policy=policy, shutdown=shutdown,
            intensity=child.intensity.fresh().resized(
                policy.child_restart_limit, policy.child_restart_window_ms / 1000),
            subtree=subtree, backoff_attempt=0, attempt=0,
        )
        if not held and spec.hold is not None:
            fire(child, Trigger.CONFIRM_HOLD, who, message=f"{spec.hold} by configuration",
                 last_policy_decision=f"{spec.hold} by configuration")
        elif held and restarts:
            fire(child, Trigger.RESUME, who, message=None, last_policy_decision="resumed")
        return restarts


def _walk(node: SupervisorNode) -> Iterator[ChildRuntime]:
    for child in list(node.children.values()):
        yield child
        if child.subtree is not None:
            yield from _walk(child.subtree)


def _position(root: SupervisorNode) -> Callable[[ChildRuntime], int]:
    order = {c.path: i for i, c in enumerate(_walk(root))}
    return lambda child: order.get(child.path, len(order))


def _declaration_order(node: SupervisorNode, specs: tuple[ChildSpec, ...]) -> None:
    """The file's order at ``node`` and below; children kept from run time stay last."""
    named = [s.name for s in specs if s.name in node.children]
    order = named + [n for n in node.children if n not in named]
    if list(node.children) != order:
        reordered = {n: node.children[n] for n in order}
        node.children.clear()
        node.children.update(reordered)
    by_name = {s.name: s for s in specs}
    for name, child in node.children.items():
        if child.subtree is not None and name in by_name:
            _declaration_order(child.subtree, by_name[name].children)
