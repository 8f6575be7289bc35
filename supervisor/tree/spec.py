"""Declarative description of a supervision tree: what to run and under which policy."""

from __future__ import annotations

import enum
import re
from typing import Any, Callable, Mapping

import attrs

from supervisor.wire.ndjson import encodable

CHILD_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class Strategy(str, enum.Enum):
    """Which siblings are restarted with a failed child (OTP semantics)."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class RestartPolicy(str, enum.Enum):
    """When a child that ended is started again."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit
    TEMPORARY = "temporary"  # never


class ChildKind(str, enum.Enum):
    TASK = "task"
    PROCESS = "process"
    SERVICE = "service"
    SUPERVISOR = "supervisor"


class Criticality(str, enum.Enum):
    CRITICAL = "critical"
    STANDARD = "standard"
    BEST_EFFORT = "best_effort"


@attrs.frozen
class Policy:
    """Restart intensity, backoff and health timing; every number here is used."""

    child_restart_limit: int = 10
    child_restart_window_ms: int = 60_000
    supervisor_failure_limit: int = 30
    supervisor_failure_window_ms: int = 60_000
    initial_backoff_ms: int = 100
    max_backoff_ms: int = 5_000
    jitter_ratio: float = 0.1
    heartbeat_interval_ms: int = 1_000
    stale_after_ms: int = 3_000
    stable_after_ms: int = 10_000

    def __attrs_post_init__(self) -> None:
        problems = policy_problems(attrs.asdict(self))
        if problems:
            key, rule = problems[0]
            raise ValueError(f"{key}: {rule}")


def policy_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The rules a policy must satisfy, as ``(key, rule)`` pairs that are violated."""
    policy = _Values(values)
    problems: list[tuple[str, str]] = []
    for name in (
        "child_restart_limit",
        "supervisor_failure_limit",
        "initial_backoff_ms",
        "max_backoff_ms",
        "stable_after_ms",
    ):
        if getattr(policy, name) < 0:
            problems.append((name, "must be ≥ 0"))
    for name in (
        "child_restart_window_ms",
        "supervisor_failure_window_ms",
        "heartbeat_interval_ms",
        "stale_after_ms",
    ):
        if getattr(policy, name) <= 0:
            problems.append((name, "must be > 0"))
    if policy.max_backoff_ms < policy.initial_backoff_ms:
        problems.append(
            ("max_backoff_ms", f"must be ≥ initial_backoff_ms ({policy.initial_backoff_ms})")
        )
    if not 0 <= policy.jitter_ratio <= 1:
        problems.append(("jitter_ratio", "must be between 0 and 1"))
    if policy.stale_after_ms < policy.heartbeat_interval_ms:
        problems.append(
            (
                "stale_after_ms",
                f"must be ≥ heartbeat_interval_ms ({policy.heartbeat_interval_ms})",
            )
        )
    return problems


class _Values:
    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)


@attrs.frozen
class ShutdownPolicy:
    """How long a stopping child gets before it is aborted, and after."""

    graceful_timeout_ms: int = 5_000
    abort_wait_ms: int = 1_000

    def __attrs_post_init__(self) -> None:
        for name in ("graceful_timeout_ms", "abort_wait_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be ≥ 0")


#: Bounds of ``Observability.max_output_line_bytes``.
OUTPUT_LINE_BYTES_RANGE = (256, 1024 * 1024)


#: Smallest ``HistoryConfig.segment_bytes`` (a segment holds many records).
MIN_SEGMENT_BYTES = 64 * 1024


@attrs.frozen
class HistoryConfig:
    """The on-disk history of every log record and event: where, how much, how soon.

    Segments of at most ``segment_bytes`` under ``path``; the oldest go once the store
    passes ``max_bytes``; what the writer holds reaches the disk within ``flush_interval_ms``.
    """

    enabled: bool = False
    path: str | None = None
    max_bytes: int = 256 * 1024 * 1024
    segment_bytes: int = 16 * 1024 * 1024
    flush_interval_ms: int = 200

    def __attrs_post_init__(self) -> None:
        if self.enabled and not self.path:
            raise ValueError("path: required when history is enabled")
        if self.segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes: must be ≥ {MIN_SEGMENT_BYTES}")
        if self.max_bytes < 2 * self.segment_bytes:
            raise ValueError(f"max_bytes: must be ≥ 2 × segment_bytes ({2 * self.segment_bytes})")
        if not 1 <= self.flush_interval_ms <= 60_000:
            raise ValueError("flush_interval_ms: must be between 1 and 60000")


@attrs.frozen
class ResourcesConfig:
    """How often process children's CPU, memory, descriptors and threads are sampled."""

    #: milliseconds between samples; 0 turns sampling off
    interval_ms: int = 2000

    def __attrs_post_init__(self) -> None:
        if self.interval_ms != 0 and self.interval_ms < 100:
            raise ValueError("interval_ms: must be 0 (off) or ≥ 100")


@attrs.frozen
class PrometheusConfig:
    """Where the target serves Prometheus metrics: a Twisted endpoint string, or off."""

    #: ``unix:PATH`` or ``tcp:PORT:interface=ADDRESS``; ``None`` serves nothing
    listen: str | None = None


@attrs.frozen
class Observability:
    """Journal sizes, what is recorded, the longest output line kept whole, resources, metrics,
    history."""

    event_journal_capacity: int = 256
    log_journal_capacity: int = 1024
    metrics_enabled: bool = True
    audit_enabled: bool = True
    max_output_line_bytes: int = 8192
    resources: ResourcesConfig = ResourcesConfig()
    prometheus: PrometheusConfig = PrometheusConfig()
    history: HistoryConfig = HistoryConfig()

    def __attrs_post_init__(self) -> None:
        for name in ("event_journal_capacity", "log_journal_capacity"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be ≥ 1")
        low, high = OUTPUT_LINE_BYTES_RANGE
        if not low <= self.max_output_line_bytes <= high:
            raise ValueError(f"max_output_line_bytes: must be between {low} and {high}")


@attrs.frozen
class LogFileSpec:
    """``children[].log_file``: a process child's output as a plain text file, rotated."""

    path: str
    max_bytes: int = 50 * 1024 * 1024
    backups: int = 3

    def __attrs_post_init__(self) -> None:
        if self.max_bytes < 1024:
            raise ValueError("max_bytes: must be ≥ 1024")
        if not 0 <= self.backups <= 1000:
            raise ValueError("backups: must be between 0 and 1000")


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


def _text_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(encodable(list(value)))


def _text(value: Any) -> Any:
    return encodable(value)


def _as_strategy(value: Any) -> Strategy:
    return value if isinstance(value, Strategy) else parse_strategy(value)


@attrs.frozen
class ChildSpec:
    """One child of a supervisor.

    ``factory`` is the callable for ``task`` (``factory(ctx)`` → Deferred or coroutine) and
    ``service`` (``factory(ctx)`` → IService) kinds; ``callable_ref`` is its
    ``"pkg.mod:name"`` spelling when it came from YAML (kept for the state model).
    ``policy`` and ``shutdown`` left as ``None`` inherit the parent supervisor's.
    """

    name: str
    kind: ChildKind = attrs.field(converter=ChildKind)
    factory: Callable[..., Any] | None = None
    callable_ref: str | None = None
    command: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    cwd: str | None = None
    environment: Mapping[str, str] | None = None
    stop_signal: str = "SIGTERM"
    restart_policy: RestartPolicy = attrs.field(default=RestartPolicy.PERMANENT, converter=RestartPolicy)
    criticality: Criticality = attrs.field(default=Criticality.STANDARD, converter=Criticality)
    # shown on the wire: made encodable here, whatever built the spec (see encodable)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_text_tuple)
    dependencies: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    display_name: str | None = attrs.field(default=None, converter=_text)
    wait_ready: bool = False
    stale_is_failure: bool = False
    hold: str | None = None  # "paused" or "quarantined": start held instead of running
    #: start order among siblings (lower first; stop in reverse), dependencies aside
    priority: int = 999
    # process children only
    #: exit codes that are a normal exit (``transient`` restarts after any other)
    exitcodes: tuple[int, ...] = attrs.field(default=(0,), converter=_tuple)
    #: a process that exits sooner after its start failed to start; 0: no such window
    startsecs: float = 0.0
    #: failed starts in a row after which the child is given up (stays failed)
    startretries: int = 3
    user: str | None = None
    group: str | None = None
    umask: int | None = None
    #: the polite stop signal goes to the whole process group, not only the leader
    stop_as_group: bool = True
    #: aborts (SIGKILL), and the sweep after the leader exits, reach the whole group
    kill_as_group: bool = True
    #: signal the child gets when the target dies (``PR_SET_PDEATHSIG``); costs an exec
    parent_death_signal: str | None = None
    log_file: LogFileSpec | None = None  # process children: output also as a plain text file
    policy: Policy | None = None
    shutdown: ShutdownPolicy | None = None
    # nested supervisors only
    strategy: Strategy = attrs.field(default=Strategy.ONE_FOR_ONE, converter=_as_strategy)
    children: tuple["ChildSpec", ...] = attrs.field(default=(), converter=_tuple)

    def __attrs_post_init__(self) -> None:
        if not CHILD_ID.match(self.name):
            raise ValueError(f"name: {self.name!r} must match {CHILD_ID.pattern}")
        if self.kind in (ChildKind.TASK, ChildKind.SERVICE) and self.factory is None:
            raise ValueError(f"callable: required for a {self.kind.value} child")
        if self.kind is ChildKind.PROCESS and not self.command:
            raise ValueError("command: required for a process child")
        if self.kind is ChildKind.SUPERVISOR:
            check_children(self.children)
        if self.startsecs < 0:
            raise ValueError("startsecs: must be >= 0")
        if self.startretries < 0:
            raise ValueError("startretries: must be >= 0")
        if self.umask is not None and not 0 <= self.umask <= 0o777:
            raise ValueError("umask: must be between 000 and 777")
        if self.hold not in (None, "paused", "quarantined"):
            raise ValueError(f"hold: must be paused or quarantined (got {self.hold!r})")

    @property
    def label(self) -> str:
        return self.display_name or self.name


@attrs.frozen
class SupervisorSpec:
    """The root of a tree: its strategy, policies and children in declaration order."""

    children: tuple[ChildSpec, ...] = attrs.field(default=(), converter=_tuple)
    strategy: Strategy = attrs.field(default=Strategy.ONE_FOR_ONE, converter=_as_strategy)
    policy: Policy = Policy()
    shutdown: ShutdownPolicy = ShutdownPolicy()
    observability: Observability = Observability()
    name: str = attrs.field(default="root supervisor", converter=_text)

    def __attrs_post_init__(self) -> None:
        check_children(self.children)


def check_children(children: tuple[ChildSpec, ...]) -> None:
    """Sibling names are unique, dependencies name siblings, and there is no cycle."""
    names = [c.name for c in children]
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise ValueError(f"children[{index}].name: duplicate child name {name!r}")
        seen.add(name)
    for index, child in enumerate(children):
        for dep in child.dependencies:
            if dep not in seen:
                raise ValueError(
                    f"children[{index}].dependencies: {dep!r} is not a sibling of {child.name!r}"
                )
            if dep == child.name:
                raise ValueError(f"children[{index}].dependencies: {child.name!r} depends on itself")
    cycle = find_cycle({c.name: c.dependencies for c in children})
    if cycle:
        raise ValueError("dependencies: cycle " + " -> ".join(cycle))


def find_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A dependency cycle as a list of names (first repeated at the end), or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in done:
            return None
        if node in visiting:
            return visiting[visiting.index(node) :] + [node]
        visiting.append(node)
        for dep in graph.get(node, ()):
            found = visit(dep)
            if found:
                return found
        visiting.pop()
        done.add(node)
        return None

    for name in graph:
        found = visit(name)
        if found:
            return found
    return None


def parse_strategy(value: str) -> Strategy:
    """Accept ``one_for_all`` and ``OneForAll`` spellings."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", value).lower() if value[:1].isupper() else value
    return Strategy(snake)
