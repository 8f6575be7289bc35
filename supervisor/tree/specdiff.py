"""What a reloaded config changes: the pure diff between the running tree and a new spec.

The diff is computed level by level (the root, then each nested supervisor) from three
inputs: the spec the tree last loaded (``old``), what runs now (``running``: the same,
unless commands added or removed children since) and the new spec (``new``). Specs are
compared field by field over their attrs fields, so a field added to :class:`ChildSpec`
is compared without a change here; a change is named by its dotted key
(``policy.max_backoff_ms``). A changed child restarts unless every changed key is one that
applies to a running child (:data:`LIVE_KEYS`); a new field therefore restarts by default.

Children that commands added or removed at run time are reported, not undone: one the file
never named keeps running (``added_at_run_time``), one the file still names unchanged stays
removed (``removed_at_run_time``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import attrs

from supervisor.tree.spec import ChildKind, ChildSpec, SupervisorSpec

#: Child settings a running child takes on without a restart: they are read when it next
#: fails, stops, goes stale, starts (dependencies) or is drawn (topology).
LIVE_KEYS = frozenset({
    "policy", "shutdown", "restart_policy", "criticality", "tags", "display_name",
    "stale_is_failure", "dependencies", "strategy",
})

#: Root settings reload cannot apply to a running target (the journals are sized, the
#: resource sampler and the metrics listener set up, at start): a key, or a key under it.
RESTART_ONLY_ROOT_KEYS = frozenset({
    "observability.event_journal_capacity", "observability.log_journal_capacity",
    "observability.resources", "observability.prometheus",
})


def _restart_only(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESTART_ONLY_ROOT_KEYS)

#: Fields that hold a level's children: diffed level by level, never as one value.
_NESTED = ("children",)


class ReloadConflict(ValueError):
    """The new spec cannot be applied to the running tree (the message says why)."""


@attrs.frozen
class Running:
    """One child as it runs now: its spec and, for a supervisor, its own running children."""

    spec: ChildSpec
    children: Mapping[str, "Running"] = attrs.Factory(dict)

    @classmethod
    def from_specs(cls, specs: Iterable[ChildSpec]) -> dict[str, "Running"]:
        """The running level a tree built from ``specs`` has before any command changed it."""
        return {s.name: cls(s, cls.from_specs(s.children)) for s in specs}


@attrs.frozen
class ChildChange:
    """A child present before and after whose settings differ."""

    path: str
    keys: tuple[str, ...]
    restart: bool

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "keys": list(self.keys), "restart": self.restart}


@attrs.frozen
class LevelChange:
    """A supervisor level whose own settings (strategy, policy, shutdown…) differ."""

    path: str
    keys: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "keys": list(self.keys)}


@attrs.frozen
class TreeDiff:
    """Everything a reload would do; ``to_json`` is the wire form (docs/protocol.md)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[ChildChange, ...] = ()
    unchanged: int = 0
    added_at_run_time: tuple[str, ...] = ()
    removed_at_run_time: tuple[str, ...] = ()
    supervisors: tuple[LevelChange, ...] = ()
    not_applied: tuple[str, ...] = ()

    @property
    def restarted(self) -> tuple[str, ...]:
        return tuple(c.path for c in self.changed if c.restart)

    @property
    def empty(self) -> bool:
        """Nothing to apply (what runs already matches the file)."""
        return not (self.added or self.removed or self.changed or self.supervisors)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": [c.to_json() for c in self.changed],
            "unchanged": self.unchanged,
            "added_at_run_time": list(self.added_at_run_time),
            "removed_at_run_time": list(self.removed_at_run_time),
            "supervisors": [s.to_json() for s in self.supervisors],
            "not_applied": list(self.not_applied),
        }

    def summary(self) -> str:
        """One line for logs and ``ctl``: counts of each kind of change."""
        return (
            f"{len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.changed)} changed ({len(self.restarted)} restarted), "
            f"{self.unchanged} unchanged"
        )


def changed_keys(old: Any, new: Any, skip: Sequence[str] = (), prefix: str = "") -> list[str]:
    """Dotted names of the attrs fields that differ; nested attrs values are compared
    field by field, anything else by equality."""
    if type(old) is not type(new) or not attrs.has(type(old)):
        return [prefix.rstrip(".")] if old != new else []
    keys: list[str] = []
    for field in attrs.fields(type(old)):
        if field.name in skip:
            continue
        a, b = getattr(old, field.name), getattr(new, field.name)
        if a == b:
            continue
        if type(a) is type(b) and attrs.has(type(a)):
            keys.extend(changed_keys(a, b, prefix=f"{prefix}{field.name}."))
        else:
            keys.append(prefix + field.name)
    return keys


def _top(key: str) -> str:
    return key.split(".", 1)[0]


def diff_tree(
    old: SupervisorSpec,
    running: Mapping[str, Running],
    new: SupervisorSpec,
    root_path: str = "/root",
) -> TreeDiff:
    """The diff of a reload from ``old`` (last loaded) and ``running`` to ``new``.

    Raises :class:`ReloadConflict` when a child kept from run time depends on one the new
    spec removes.
    """
    out = _Collect()
    root_keys = changed_keys(old, new, skip=_NESTED)
    applied = [k for k in root_keys if not _restart_only(k)]
    if applied:
        out.supervisors.append(LevelChange(root_path, tuple(applied)))
    out.not_applied.extend(k for k in root_keys if _restart_only(k))
    _level(root_path, old.children, running, new.children, out)
    return TreeDiff(
        added=tuple(out.added),
        removed=tuple(out.removed),
        changed=tuple(out.changed),
        unchanged=out.unchanged,
        added_at_run_time=tuple(out.added_at_run_time),
        removed_at_run_time=tuple(out.removed_at_run_time),
        supervisors=tuple(out.supervisors),
        not_applied=tuple(out.not_applied),
    )


@attrs.define
class _Collect:
    added: list[str] = attrs.Factory(list)
    removed: list[str] = attrs.Factory(list)
    changed: list[ChildChange] = attrs.Factory(list)
    unchanged: int = 0
    added_at_run_time: list[str] = attrs.Factory(list)
    removed_at_run_time: list[str] = attrs.Factory(list)
    supervisors: list[LevelChange] = attrs.Factory(list)
    not_applied: list[str] = attrs.Factory(list)


def _level(
    path: str,
    old: Sequence[ChildSpec],
    running: Mapping[str, Running],
    new: Sequence[ChildSpec],
    out: _Collect,
) -> None:
    old_by_name = {s.name: s for s in old}
    new_by_name = {s.name: s for s in new}
    kept: list[Running] = []
    for spec in new:
        child_path = f"{path}/{spec.name}"
        now = running.get(spec.name)
        if now is None:
            if old_by_name.get(spec.name) == spec:
                out.removed_at_run_time.append(child_path)
            else:
                out.added.append(child_path)
            continue
        keys = changed_keys(now.spec, spec, skip=_NESTED)
        restart = any(_top(k) not in LIVE_KEYS for k in keys)
        nested = now.spec.kind is ChildKind.SUPERVISOR and spec.kind is ChildKind.SUPERVISOR
        if keys:
            out.changed.append(ChildChange(child_path, tuple(keys), restart))
        else:
            out.unchanged += 1  # a supervisor whose children change keeps its own record
        if nested and not restart:
            before = old_by_name[spec.name].children if spec.name in old_by_name else now.spec.children
            _level(child_path, before, now.children, spec.children, out)
    for name, now in running.items():
        if name in new_by_name:
            continue
        if name in old_by_name:
            out.removed.append(f"{path}/{name}")
        else:
            out.added_at_run_time.append(f"{path}/{name}")
            kept.append(now)
    remaining = set(new_by_name) | {k.spec.name for k in kept}
    for now in kept:
        for dep in now.spec.dependencies:
            if dep not in remaining:
                raise ReloadConflict(
                    f"children: {path}/{now.spec.name} (added at run time) depends on {dep}, "
                    f"which the new config removes"
                )
