"""The target's YAML file: supervision tree, policies, observability and IPC settings.

Every defect is a :class:`ConfigError` naming the YAML key and the rule it breaks, e.g.
``policy.max_backoff_ms: must be ≥ initial_backoff_ms (100)``. Unknown keys are errors.
Relative paths (``cwd``, ``ipc.path``…) are taken from the config file's folder.
"""

from __future__ import annotations

import glob
import grp
import importlib
import os
import pwd
import re
from typing import TYPE_CHECKING, Any, Callable, Mapping

import attrs
import yaml

from supervisor.config._common import (
    ConfigError,
    Section,
    check_unix_socket_path,
    defaults,
    expand_environment,
    join_key,
    load_yaml_mapping,
    metrics_listen,
    resolve_path,
    safe_load,
)
from supervisor.tree.spec import (
    CHILD_ID,
    OUTPUT_LINE_BYTES_RANGE,
    ChildKind,
    ChildSpec,
    Criticality,
    HistoryConfig,
    LogFileSpec,
    MIN_SEGMENT_BYTES,
    Observability,
    Policy,
    PrometheusConfig,
    ResourcesConfig,
    RestartPolicy,
    ShutdownPolicy,
    Strategy,
    SupervisorSpec,
    find_cycle,
    parse_strategy,
    policy_problems,
)
from supervisor.tree.children import signal_number
from supervisor.wire.ndjson import encodable
from supervisor.wire.bounds import COMMAND_TIMEOUT_SECONDS_RANGE, LEASE_SECONDS_RANGE
from supervisor.wire.registration import MAX_DISPLAY_NAME_CHARS

if TYPE_CHECKING:
    from supervisor.tree.reconfigure import ConfigLoader, Reloaded

TOP_KEYS = ("supervisor", "policy", "shutdown", "observability", "ipc", "include", "children")
#: What an included file may hold.
INCLUDED_KEYS = ("children",)
POLICY_KEYS = tuple(f.name for f in attrs.fields(Policy))
SHUTDOWN_KEYS = tuple(f.name for f in attrs.fields(ShutdownPolicy))
OBSERVABILITY_KEYS = tuple(f.name for f in attrs.fields(Observability))
#: Keys only a process child has, besides command, cwd, environment and stop_signal.
PROCESS_KEYS = (
    "exitcodes", "startsecs", "startretries", "user", "group", "umask", "stop_as_group",
    "kill_as_group", "parent_death_signal", "numprocs", "numprocs_start", "process_name",
)
RESOURCES_KEYS = tuple(f.name for f in attrs.fields(ResourcesConfig))
PROMETHEUS_KEYS = tuple(f.name for f in attrs.fields(PrometheusConfig))
HISTORY_KEYS = tuple(f.name for f in attrs.fields(HistoryConfig))
CHILD_KEYS = (
    "name", "kind", "callable", "command", "cwd", "environment", "stop_signal",
    "restart_policy", "criticality", "tags", "dependencies", "display_name", "wait_ready",
    "stale_is_failure", "hold", "priority", "policy", "shutdown", "strategy", "children", "log_file",
    *PROCESS_KEYS,
)
#: Keys named after supervisord's that are spelled differently here.
RENAMED_KEYS = {
    "autostart": "hold: paused (the child waits, paused, until resume_child starts it)",
}
#: Largest value of any policy or shutdown number (limits and milliseconds: a week of ms):
#: they become timers, and a timer cannot be set past a float's range.
_POLICY_MAXIMUM = 7 * 24 * 3600 * 1000
#: Most instances one ``numprocs`` child may have.
MAX_NUMPROCS = 1000
DEFAULT_PROCESS_NAME = "{name}_{index:02d}"
LOG_FILE_KEYS = ("path", "max_bytes", "backups")
IPC_KEYS = (
    "enabled", "target_id", "path", "permissions", "bind_mode", "allowed_uids",
    "max_request_bytes", "max_backlog_lines", "idle_timeout_seconds", "max_pending_pushes",
    "max_pending_push_bytes", "command_timeout_seconds", "registration", "add_child",
)
ADD_CHILD_KEYS = ("allowed_commands", "allowed_callables")
REGISTRATION_KEYS = (
    "enabled", "relay_registration_path", "display_name", "lease_seconds",
    "registration_heartbeat_interval_seconds", "timeout_seconds", "retry_jitter_ratio",
)
BIND_MODES = ("create_new", "replace_stale")


@attrs.frozen
class RegistrationConfig:
    """Heartbeat registration with a relay (CONTRACTS.md §2)."""

    enabled: bool = False
    relay_registration_path: str | None = None
    #: shown on the wire: lone surrogates become U+FFFD (docs/protocol.md)
    display_name: str = attrs.field(default="", converter=encodable)
    lease_seconds: int = 30
    registration_heartbeat_interval_seconds: int = 15
    timeout_seconds: float = 5.0
    retry_jitter_ratio: float = 0.2


@attrs.frozen
class AddChildPolicy:
    """What an ``add_child`` manifest may start (``ipc.add_child``); empty refuses all.

    A manifest is code: a ``process`` child runs its ``command`` as the target's user and a
    ``task``/``service`` child imports its ``callable``'s module (running its import-time
    code). Each is checked here, while the manifest is read, before anything is imported or
    spawned. ``allowed_commands`` are absolute paths compared with ``command[0]`` as exact
    strings (no ``PATH`` search, no symlink resolution); ``allowed_callables`` are module
    names, each allowing itself and the modules under it (``myapp.jobs`` allows
    ``myapp.jobs:run`` and ``myapp.jobs.nightly:run``, not ``myapp.jobs_old``).
    """

    allowed_commands: tuple[str, ...] = ()
    allowed_callables: tuple[str, ...] = ()

    def check_command(self, key: str, argv0: str) -> None:
        """``ConfigError`` unless ``argv0`` is one of :attr:`allowed_commands`."""
        if argv0 not in self.allowed_commands:
            raise ConfigError(key, f"{argv0!r} is not in ipc.add_child.allowed_commands "
                                   f"({_listed(self.allowed_commands)})")

    def check_callable(self, key: str, ref: str) -> None:
        """``ConfigError`` unless the module of ``ref`` is under :attr:`allowed_callables`."""
        module = ref.partition(":")[0]
        if not any(module == prefix or module.startswith(prefix + ".")
                   for prefix in self.allowed_callables):
            raise ConfigError(key, f"module {module!r} is not under ipc.add_child."
                                   f"allowed_callables ({_listed(self.allowed_callables)})")


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(values) if values else "empty: add_child starts nothing until it is set"


@attrs.frozen
class IpcConfig:
    """The local ``dashboard-ipc.v1`` socket (CONTRACTS.md §1)."""

    enabled: bool = False
    #: in every record: lone surrogates become U+FFFD (docs/protocol.md)
    target_id: str = attrs.field(default="local", converter=encodable)
    path: str | None = None
    permissions: int = 0o600
    bind_mode: str = "create_new"
    allowed_uids: tuple[int, ...] = ()
    max_request_bytes: int = 65536
    max_backlog_lines: int = 64
    idle_timeout_seconds: float = 60.0
    max_pending_pushes: int = 4096
    #: bytes of lines a connection's outbound queue may hold (docs/configuration.md)
    max_pending_push_bytes: int = 8 * 1024 * 1024
    command_timeout_seconds: int = 30
    registration: RegistrationConfig = RegistrationConfig()
    #: what ``add_child`` manifests may start, whatever sends them
    add_child: AddChildPolicy = AddChildPolicy()


@attrs.frozen
class TargetConfig:
    spec: SupervisorSpec
    ipc: IpcConfig
    base_dir: str
    #: the file it was read from, read again by ``reload_config`` (None: not from a file)
    source: str | None = None

    def config_loader(self) -> ConfigLoader | None:
        """Reads :attr:`source` again for ``reload_config``; the ``ipc`` section is only
        read at start, so its changes are reported as not applied."""
        source = self.source
        if source is None:
            return None

        def load() -> Reloaded:
            # imported when a reload runs: start-up does not pay for them
            from supervisor.tree.reconfigure import Reloaded
            from supervisor.tree.specdiff import changed_keys

            try:
                fresh = load_target_config(source)
            except ConfigError as e:
                raise ConfigError(e.key, f"{e.message} (in {source})") from None
            ipc_keys = changed_keys(self.ipc, fresh.ipc)
            # the ipc section is not applied by a reload: manifests keep this allow-list
            parser = attrs.evolve(fresh, ipc=self.ipc).manifest_parser()
            return Reloaded(fresh.spec, parser, tuple(f"ipc.{k}" for k in ipc_keys))

        return load

    def manifest_parser(self) -> Callable[[Any], ChildSpec]:
        """Parser for ``add_child`` manifests, with this file's policies as defaults and
        ``ipc.add_child`` deciding what they may start."""
        return lambda manifest: parse_manifest(
            manifest, self.spec.policy, self.spec.shutdown, self.base_dir, self.ipc.add_child
        )


def load_target_config(path: str, environ: Mapping[str, str] | None = None) -> TargetConfig:
    """Read and validate a target YAML file (and the files its ``include`` names)."""
    data = load_yaml_mapping(path)
    config = parse_target_config(data, os.path.dirname(os.path.abspath(path)), environ,
                                 source=os.path.abspath(path))
    return attrs.evolve(config, source=os.path.abspath(path))


def load_ipc_config(path: str, environ: Mapping[str, str] | None = None) -> IpcConfig:
    """Only the ``ipc`` section of a target YAML file: what a client needs to reach the
    target, read without importing the callables its children name."""
    data = load_yaml_mapping(path)
    ipc = expand_environment(data.get("ipc"), os.environ if environ is None else environ, "ipc")
    return _ipc(ipc, os.path.dirname(os.path.abspath(path)))


def parse_target_config(
    data: Any, base_dir: str, environ: Mapping[str, str] | None = None, *,
    source: str = "the config file",
) -> TargetConfig:
    """Validate a parsed target file; ``${NAME}`` references are taken from ``environ``
    (the process environment by default), relative paths and globs from ``base_dir``."""
    environ = os.environ if environ is None else environ
    data = expand_environment(data, environ)
    top = Section("", data, TOP_KEYS)
    sup = top.section("supervisor", ("strategy", "name"))
    strategy = _strategy(sup, "strategy")
    policy = _policy(top.data.get("policy"), "policy", Policy())
    shutdown = _shutdown(top.data.get("shutdown"), "shutdown", ShutdownPolicy())
    obs = top.section("observability", OBSERVABILITY_KEYS)
    o = defaults(Observability)
    observability = Observability(
        event_journal_capacity=obs.integer("event_journal_capacity", o.event_journal_capacity,
                                           minimum=1, maximum=1_000_000),
        log_journal_capacity=obs.integer("log_journal_capacity", o.log_journal_capacity,
                                         minimum=1, maximum=1_000_000),
        metrics_enabled=obs.boolean("metrics_enabled", o.metrics_enabled),
        audit_enabled=obs.boolean("audit_enabled", o.audit_enabled),
        max_output_line_bytes=obs.integer("max_output_line_bytes", o.max_output_line_bytes,
                                          minimum=OUTPUT_LINE_BYTES_RANGE[0],
                                          maximum=OUTPUT_LINE_BYTES_RANGE[1]),
        resources=_resources(obs),
        prometheus=_prometheus(obs, base_dir),
        history=_history(obs.section("history", HISTORY_KEYS), base_dir),
    )
    sources = [_Source(source, "children", top.data.get("children"), base_dir)]
    sources += _included(top, base_dir, environ)
    children = _children(sources, policy, shutdown)
    spec = SupervisorSpec(
        children=children,
        strategy=strategy,
        policy=policy,
        shutdown=shutdown,
        observability=observability,
        name=sup.string("name", defaults(SupervisorSpec).name),
    )
    ipc = _ipc(top.data.get("ipc"), base_dir)
    return TargetConfig(spec=spec, ipc=ipc, base_dir=base_dir)


def _resources(obs: Section) -> ResourcesConfig:
    section = obs.section("resources", RESOURCES_KEYS)
    interval = section.integer("interval_ms", defaults(ResourcesConfig).interval_ms, minimum=0,
                               maximum=3_600_000)
    if 0 < interval < 100:
        raise ConfigError("observability.resources.interval_ms", "must be 0 (off) or >= 100")
    return ResourcesConfig(interval_ms=interval)


def _prometheus(obs: Section, base_dir: str) -> PrometheusConfig:
    section = obs.section("prometheus", PROMETHEUS_KEYS)
    if not section.has("listen"):
        return PrometheusConfig()
    return PrometheusConfig(listen=metrics_listen("observability.prometheus.listen",
                                                  section.string("listen"), base_dir))


def _history(section: Section, base_dir: str) -> HistoryConfig:
    d = defaults(HistoryConfig)
    if not section.boolean("enabled", d.enabled):
        return HistoryConfig()
    segment_bytes = section.integer("segment_bytes", d.segment_bytes, minimum=MIN_SEGMENT_BYTES,
                                    maximum=1024 * 1024 * 1024)
    return HistoryConfig(
        enabled=True,
        path=section.path("path", base_dir),
        max_bytes=section.integer("max_bytes", d.max_bytes, minimum=2 * segment_bytes),
        segment_bytes=segment_bytes,
        flush_interval_ms=section.integer("flush_interval_ms", d.flush_interval_ms, minimum=1,
                                          maximum=60_000),
    )


def parse_manifest(
    manifest: Any, policy: Policy, shutdown: ShutdownPolicy, base_dir: str,
    allow: AddChildPolicy | None = None,
) -> ChildSpec:
    """One child from a YAML string or a mapping, as ``add_child`` receives it; every command
    and callable in it (nested children too) is checked against ``allow`` (default: the
    empty policy, which refuses them all) before any is imported."""
    allow = allow if allow is not None else AddChildPolicy()
    if isinstance(manifest, str):
        try:
            manifest = safe_load(manifest)
        except yaml.YAMLError as e:
            raise ConfigError("child_manifest", f"is not valid YAML: {e}") from None
    if not isinstance(manifest, dict):
        raise ConfigError("child_manifest", "must be a mapping describing one child")
    manifest = expand_environment(manifest, os.environ, "child_manifest")
    return _child(manifest, "child_manifest", policy, shutdown, base_dir, allow)


def _strategy(section: Section, name: str) -> Strategy:
    raw = section.string(name, defaults(SupervisorSpec).strategy.value)
    try:
        return parse_strategy(raw)
    except ValueError:
        raise ConfigError(
            join_key(section.key, name),
            f"must be one of one_for_one, one_for_all, rest_for_one (got {raw!r})",
        ) from None


def _policy(data: Any, key: str, base: Policy) -> Policy:
    section = Section(key, data, POLICY_KEYS)
    values: dict[str, Any] = {}
    for field in attrs.fields(Policy):
        if not section.has(field.name):
            continue
        if field.name == "jitter_ratio":
            values[field.name] = section.number(field.name)
        else:
            values[field.name] = section.integer(field.name, maximum=_POLICY_MAXIMUM)
    merged = {**attrs.asdict(base), **values}
    problems = policy_problems(merged)
    if problems:
        name, rule = problems[0]
        raise ConfigError(join_key(key, name), rule)
    return Policy(**merged)


def _shutdown(data: Any, key: str, base: ShutdownPolicy) -> ShutdownPolicy:
    section = Section(key, data, SHUTDOWN_KEYS)
    return ShutdownPolicy(
        graceful_timeout_ms=section.integer("graceful_timeout_ms", base.graceful_timeout_ms,
                                            minimum=0, maximum=_POLICY_MAXIMUM),
        abort_wait_ms=section.integer("abort_wait_ms", base.abort_wait_ms, minimum=0,
                                      maximum=_POLICY_MAXIMUM),
    )


@attrs.frozen
class _Source:
    """One file's list of children: where it came from, its key, its folder."""

    file: str
    key: str
    data: Any
    base_dir: str


def _included(top: Section, base_dir: str, environ: Mapping[str, str]) -> list[_Source]:
    """The ``include`` globs' files, in sorted order per glob, each holding only ``children``."""
    if not top.has("include"):
        return []
    sources = []
    seen: set[str] = set()
    for index, pattern in enumerate(top.string_list("include")):
        key = join_key("include", index)
        full = resolve_path(key, pattern, base_dir)
        for path in sorted(glob.glob(full)):
            if path in seen or not os.path.isfile(path):
                continue
            seen.add(path)
            try:
                data = load_yaml_mapping(path)
            except ConfigError as e:
                raise ConfigError(key, e.message) from None
            data = expand_environment(data, environ, path)
            section = Section(path, data, INCLUDED_KEYS)
            sources.append(_Source(path, join_key(path, "children"), section.data.get("children"),
                                   os.path.dirname(path)))
    return sources


def _children(
    sources: list[_Source], policy: Policy, shutdown: ShutdownPolicy,
    allow: AddChildPolicy | None = None,
) -> tuple[ChildSpec, ...]:
    """Children from one or more files, concatenated; names are unique across all of them.
    ``allow``: the ``add_child`` policy when they come from a manifest (None: the file's)."""
    parsed: list[tuple[str, str, ChildSpec]] = []
    for source in sources:
        if source.data is None:
            continue
        if not isinstance(source.data, list):
            raise ConfigError(source.key, "must be a list of children")
        for index, item in enumerate(source.data):
            key = join_key(source.key, index)
            parsed.append((key, source.file,
                           _child(item, key, policy, shutdown, source.base_dir, allow)))
    names: dict[str, str] = {}
    for key, file, child in parsed:
        if child.name in names:
            where = "" if len(sources) == 1 else f" (in {names[child.name]} and in {file})"
            raise ConfigError(join_key(key, "name"), f"duplicate child name {child.name!r}{where}")
        names[child.name] = file
    for key, _, child in parsed:
        for dep in child.dependencies:
            if dep not in names:
                raise ConfigError(
                    join_key(key, "dependencies"), f"{dep!r} is not a sibling of {child.name!r}",
                )
    cycle = find_cycle({c.name: c.dependencies for _, _, c in parsed})
    if cycle:
        key = sources[0].key
        raise ConfigError(f"{key}.dependencies" if key else "dependencies", "cycle " + " -> ".join(cycle))
    return tuple(c for _, _, c in parsed)


def _enum(section: Section, name: str, enum_type: Any, default: str) -> Any:
    raw = section.string(name, default)
    try:
        return enum_type(raw)
    except ValueError:
        choices = ", ".join(e.value for e in enum_type)
        raise ConfigError(join_key(section.key, name), f"must be one of {choices} (got {raw!r})") from None


def _child(
    data: Any, key: str, policy: Policy, shutdown: ShutdownPolicy, base_dir: str,
    allow: AddChildPolicy | None = None,
) -> ChildSpec:
    if isinstance(data, Mapping):
        for old, new in RENAMED_KEYS.items():
            if old in data:
                raise ConfigError(join_key(key, old), f"is not a key here; write {new}")
    section = Section(key, data, CHILD_KEYS)
    name = section.string("name")
    if not CHILD_ID.match(name):
        raise ConfigError(join_key(key, "name"), f"must match {CHILD_ID.pattern} (got {name!r})")
    kind = _enum(section, "kind", ChildKind, "task")
    own_policy = _policy(section.data.get("policy"), join_key(key, "policy"), policy) if section.has("policy") else None
    own_shutdown = (
        _shutdown(section.data.get("shutdown"), join_key(key, "shutdown"), shutdown)
        if section.has("shutdown")
        else None
    )
    d = defaults(ChildSpec)
    fields: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "restart_policy": _enum(section, "restart_policy", RestartPolicy, d.restart_policy.value),
        "criticality": _enum(section, "criticality", Criticality, d.criticality.value),
        "tags": section.string_list("tags", list(d.tags)),
        "dependencies": section.string_list("dependencies", list(d.dependencies)),
        "display_name": section.string("display_name", None) if section.has("display_name") else None,
        "wait_ready": section.boolean("wait_ready", d.wait_ready),
        "stale_is_failure": section.boolean("stale_is_failure", d.stale_is_failure),
        "hold": section.string("hold", None) if section.has("hold") else None,
        "priority": section.integer("priority", d.priority, minimum=-1_000_000, maximum=1_000_000),
        "policy": own_policy,
        "shutdown": own_shutdown,
    }
    process_only = {"command", "cwd", "environment", "stop_signal", "log_file", *PROCESS_KEYS}
    allowed = {
        ChildKind.TASK: {"callable"},
        ChildKind.SERVICE: {"callable"},
        ChildKind.PROCESS: process_only,
        ChildKind.SUPERVISOR: {"strategy", "children"},
    }[kind]
    for extra in ("callable", "strategy", "children", *sorted(process_only)):
        if section.has(extra) and extra not in allowed:
            raise ConfigError(join_key(key, extra), f"is not used by a {kind.value} child")
    if kind in (ChildKind.TASK, ChildKind.SERVICE):
        ref = section.string("callable")
        if allow is not None:
            allow.check_callable(join_key(key, "callable"), ref)
        fields["factory"] = _import(join_key(key, "callable"), ref)
        fields["callable_ref"] = ref
    elif kind is ChildKind.PROCESS:
        _process_fields(section, key, base_dir, fields)
        if allow is not None:
            allow.check_command(join_key(key, "command"), fields["command"][0])
        if section.has("log_file"):
            fields["log_file"] = _log_file(section.section("log_file", LOG_FILE_KEYS), base_dir)
        if section.has("numprocs"):
            return _process_group(section, key, fields, allow)
        for name in ("process_name", "numprocs_start"):
            if section.has(name):
                raise ConfigError(join_key(key, name), "is used only with numprocs")
    else:
        fields["strategy"] = _strategy(section, "strategy")
        fields["children"] = _children(
            [_Source("", join_key(key, "children"), section.data.get("children"), base_dir)],
            own_policy or policy, own_shutdown or shutdown, allow,
        )
    try:
        return ChildSpec(**fields)
    except ValueError as e:
        raise ConfigError(key, str(e)) from None


def _log_file(section: Section, base_dir: str) -> LogFileSpec:
    d = defaults(LogFileSpec)
    return LogFileSpec(
        path=section.path("path", base_dir),
        max_bytes=section.integer("max_bytes", d.max_bytes, minimum=1024),
        backups=section.integer("backups", d.backups, minimum=0, maximum=1000),
    )


def _euid() -> int:
    """The target's effective uid (a seam for tests of the non-root rule)."""
    return os.geteuid()


def _process_fields(section: Section, key: str, base_dir: str, fields: dict[str, Any]) -> None:
    """The keys only a process child has, validated into ``fields``."""
    d = defaults(ChildSpec)
    command = section.string_list("command")
    if not command:
        raise ConfigError(join_key(key, "command"), "must not be empty")
    fields["command"] = command
    if section.has("cwd"):
        fields["cwd"] = section.path("cwd", base_dir)
    fields["environment"] = _environment(section, join_key(key, "environment"))
    stop_signal = section.string("stop_signal", d.stop_signal)
    try:
        signal_number(stop_signal)
    except ValueError as e:
        raise ConfigError(join_key(key, "stop_signal"), str(e)) from None
    fields["stop_signal"] = stop_signal
    if section.data.get("parent_death_signal") is not None:
        death = section.string("parent_death_signal")
        try:
            signal_number(death)
        except ValueError as e:
            raise ConfigError(join_key(key, "parent_death_signal"), str(e)) from None
        fields["parent_death_signal"] = death
    codes = section.data.get("exitcodes", list(d.exitcodes))
    if (not isinstance(codes, list) or not codes
            or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 255 for c in codes)):
        raise ConfigError(join_key(key, "exitcodes"), "must be a non-empty list of exit codes (0 … 255)")
    fields["exitcodes"] = codes
    fields["startsecs"] = section.number("startsecs", d.startsecs, minimum=0, maximum=3600)
    fields["startretries"] = section.integer("startretries", d.startretries, minimum=0,
                                             maximum=1_000_000)
    fields["stop_as_group"] = section.boolean("stop_as_group", d.stop_as_group)
    fields["kill_as_group"] = section.boolean("kill_as_group", d.kill_as_group)
    if section.has("umask"):
        fields["umask"] = section.permissions("umask", 0)
    for name in ("user", "group"):
        if not section.has(name):
            continue
        value = section.string(name)
        if _euid() != 0:
            raise ConfigError(join_key(key, name),
                              f"needs the target to run as root (it runs as uid {_euid()})")
        try:
            if name == "user":
                pwd.getpwnam(value) if not value.isdigit() else pwd.getpwuid(int(value))
            else:
                grp.getgrnam(value) if not value.isdigit() else grp.getgrgid(int(value))
        except KeyError:
            raise ConfigError(join_key(key, name), f"no such {name} {value!r}") from None
        fields[name] = value


def _process_group(section: Section, key: str, fields: dict[str, Any],
                   allow: AddChildPolicy | None = None) -> ChildSpec:
    """``numprocs`` instances of one process child, under a supervisor node of its name."""
    count = section.integer("numprocs", 1, minimum=1, maximum=MAX_NUMPROCS)
    first = section.integer("numprocs_start", 0, minimum=0, maximum=1_000_000)
    template = section.string("process_name", DEFAULT_PROCESS_NAME)
    name = fields["name"]
    instances = []
    seen: dict[str, int] = {}
    for index in range(first, first + count):
        values = {"name": name, "index": index}
        instance_name = _render(join_key(key, "process_name"), template, values)
        if not CHILD_ID.match(instance_name):
            raise ConfigError(join_key(key, "process_name"),
                              f"gives {instance_name!r}, which must match {CHILD_ID.pattern}")
        if instance_name in seen:
            raise ConfigError(join_key(key, "process_name"),
                              f"gives {instance_name!r} for instances {seen[instance_name]} and "
                              f"{index}; use {{index}} in it")
        seen[instance_name] = index
        values["process_name"] = instance_name
        instance = {
            **fields,
            "name": instance_name,
            "command": [_render(join_key(join_key(key, "command"), i), arg, values)
                        for i, arg in enumerate(fields["command"])],
            "dependencies": (),
            "display_name": None,
            "hold": None,
            "priority": defaults(ChildSpec).priority,
            "policy": None,
            "shutdown": None,
        }
        if allow is not None:  # the template may make another program of command[0]
            allow.check_command(join_key(key, "command"), instance["command"][0])
        if fields.get("cwd"):
            instance["cwd"] = _render(join_key(key, "cwd"), fields["cwd"], values)
        if fields.get("log_file") is not None:
            log_file = fields["log_file"]
            instance["log_file"] = attrs.evolve(log_file, path=_render(
                join_key(join_key(key, "log_file"), "path"), log_file.path, values))
        if fields.get("environment"):
            instance["environment"] = {
                k: _render(join_key(join_key(key, "environment"), k), v, values)
                for k, v in fields["environment"].items()
            }
        try:
            instances.append(ChildSpec(**instance))
        except ValueError as e:
            raise ConfigError(key, str(e)) from None
    group = {k: fields[k] for k in ("name", "criticality", "tags", "dependencies", "display_name",
                                    "hold", "priority", "policy", "shutdown")}
    try:
        return ChildSpec(kind=ChildKind.SUPERVISOR, children=instances, **group)
    except ValueError as e:
        raise ConfigError(key, str(e)) from None


def _render(key: str, template: str, values: Mapping[str, Any]) -> str:
    """``template`` with ``{name}``, ``{index}`` (and ``{process_name}``) filled in."""
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(key, f"bad template {template!r}: {e} (the fields are {{name}}, "
                               "{index} and {process_name}; write {{ and }} for braces)") from None


def _environment(section: Section, key: str) -> dict[str, str] | None:
    value = section.data.get("environment")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a mapping of names to strings")
    env = {}
    for name, item in value.items():
        if not isinstance(name, str) or not isinstance(item, (str, int, float)) or isinstance(item, bool):
            raise ConfigError(join_key(key, str(name)), "must be a string")
        env[name] = str(item)
    return env


def _import(key: str, ref: str) -> Callable[..., Any]:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(key, f"must look like 'package.module:name' (got {ref!r})")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ConfigError(key, f"cannot import {module_name}: {e}") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(key, f"{module_name} has no attribute {attr}")
    if not callable(target):
        raise ConfigError(key, f"{ref} is not callable")
    return target


def _ipc(data: Any, base_dir: str) -> IpcConfig:
    section = Section("ipc", data, IPC_KEYS)
    d = defaults(IpcConfig)
    add_child = _add_child(section.section("add_child", ADD_CHILD_KEYS))
    if not section.boolean("enabled", d.enabled):
        return IpcConfig(add_child=add_child)  # in-process add_child reads manifests too
    target_id = section.string("target_id")
    raw_path = section.string("path")
    if not os.path.isabs(raw_path):
        raise ConfigError("ipc.path", f"must be an absolute path (got {raw_path!r})")
    path = resolve_path("ipc.path", raw_path, base_dir)
    check_unix_socket_path("ipc.path", path)
    bind_mode = section.string("bind_mode", d.bind_mode)
    if bind_mode not in BIND_MODES:
        raise ConfigError("ipc.bind_mode", f"must be one of {', '.join(BIND_MODES)} (got {bind_mode!r})")
    uids = section.data.get("allowed_uids") or []
    if not isinstance(uids, list) or any(isinstance(u, bool) or not isinstance(u, int) or u < 0 for u in uids):
        raise ConfigError("ipc.allowed_uids", "must be a list of non-negative integers")
    reg = section.section("registration", REGISTRATION_KEYS)
    registration = RegistrationConfig()
    r = defaults(RegistrationConfig)
    if reg.boolean("enabled", r.enabled):
        relay_path = reg.string("relay_registration_path")
        if not os.path.isabs(relay_path):
            raise ConfigError(
                "ipc.registration.relay_registration_path",
                f"must be an absolute path (got {relay_path!r})",
            )
        check_unix_socket_path("ipc.registration.relay_registration_path", relay_path)
        lease = reg.integer("lease_seconds", r.lease_seconds, minimum=1,
                            maximum=LEASE_SECONDS_RANGE[1])
        interval = reg.integer("registration_heartbeat_interval_seconds",
                               r.registration_heartbeat_interval_seconds, minimum=1)
        if interval >= lease:
            raise ConfigError(
                "ipc.registration.registration_heartbeat_interval_seconds",
                f"must be < lease_seconds ({lease})",
            )
        display_name = reg.string("display_name", target_id)
        if len(display_name) > MAX_DISPLAY_NAME_CHARS:
            raise ConfigError("ipc.registration.display_name",
                              f"must be at most {MAX_DISPLAY_NAME_CHARS} characters "
                              "(a relay refuses longer names)")
        registration = RegistrationConfig(
            enabled=True,
            relay_registration_path=os.path.normpath(relay_path),
            display_name=display_name,
            lease_seconds=lease,
            registration_heartbeat_interval_seconds=interval,
            timeout_seconds=reg.number("timeout_seconds", r.timeout_seconds, minimum=0.1,
                                       maximum=60),
            retry_jitter_ratio=reg.number("retry_jitter_ratio", r.retry_jitter_ratio,
                                          minimum=0, maximum=1),
        )
    return IpcConfig(
        enabled=True,
        target_id=target_id,
        path=path,
        permissions=section.permissions("permissions", d.permissions),
        bind_mode=bind_mode,
        allowed_uids=tuple(uids),
        max_request_bytes=section.integer("max_request_bytes", d.max_request_bytes,
                                          minimum=1024, maximum=16 * 1024 * 1024),
        max_backlog_lines=section.integer("max_backlog_lines", d.max_backlog_lines, minimum=1),
        idle_timeout_seconds=section.number("idle_timeout_seconds", d.idle_timeout_seconds,
                                            minimum=0.1),
        max_pending_pushes=section.integer("max_pending_pushes", d.max_pending_pushes, minimum=1),
        max_pending_push_bytes=section.integer("max_pending_push_bytes",
                                               d.max_pending_push_bytes, minimum=65536,
                                               maximum=1024 * 1024 * 1024),
        command_timeout_seconds=section.integer("command_timeout_seconds",
                                                d.command_timeout_seconds,
                                                minimum=COMMAND_TIMEOUT_SECONDS_RANGE[0],
                                                maximum=COMMAND_TIMEOUT_SECONDS_RANGE[1]),
        registration=registration,
        add_child=add_child,
    )


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _add_child(section: Section) -> AddChildPolicy:
    """``ipc.add_child``: absolute program paths and dotted module names."""
    commands = section.string_list("allowed_commands", [])
    for index, command in enumerate(commands):
        if not os.path.isabs(command) or "\x00" in command:
            raise ConfigError(join_key(join_key(section.key, "allowed_commands"), index),
                              f"must be an absolute path (got {command!r})")
    modules = section.string_list("allowed_callables", [])
    for index, module in enumerate(modules):
        if not _MODULE_NAME.match(module):
            raise ConfigError(join_key(join_key(section.key, "allowed_callables"), index),
                              f"must be a module name such as myapp.jobs (got {module!r})")
    return AddChildPolicy(allowed_commands=tuple(commands), allowed_callables=tuple(modules))
