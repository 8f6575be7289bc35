"""Translate a supervisord configuration into a target YAML file, key by key.

``python -m supervisor.migrate supervisord.conf > tree.yaml`` reads the file and the files its
``[include]`` names, turns each ``[program:x]`` into a process child (``numprocs`` into a group
of instances), each ``[group:x]`` into a supervisor child holding its programs, and
``[unix_http_server]`` into the ``ipc`` socket. Where supervisord's default differs from ours
(``autorestart``, ``startsecs``, ``stopwaitsecs``, ``stopasgroup``, ``killasgroup``) the
supervisord value is written out, so the translated tree behaves as the old one did.

``%(ENV_X)s`` becomes ``${X}`` (read when the target loads the file), ``%(program_name)s``,
``%(group_name)s``, ``%(here)s`` and ``%(host_node_name)s`` are filled in, and
``%(process_num)02d`` becomes ``{index:02d}`` in the instances of a ``numprocs`` child.
Every key that has no equivalent is listed, on stderr and in the file's opening comment;
with ``--strict`` the exit status is 3 when something was not translated.
"""

from __future__ import annotations

import argparse
import configparser
import glob
import os
import re
import shlex
import signal
import socket
import sys
from typing import Any, Callable, Mapping, TextIO

import attrs
import yaml

#: ``%(name)s``-style references and the printf conversion after them.
_REFERENCE = re.compile(r"%%|%\((\w+)\)([-#0 +]*\d*(?:\.\d+)?[sdiouxXeEfFgGcr])")
_AUTORESTART = {"true": "permanent", "false": "temporary", "unexpected": "transient"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
#: Program keys that need nothing here: our target records both streams in its log
#: journal, tagged ``stdout`` / ``stderr``, whatever supervisord did with them.
_NOT_NEEDED = {
    "redirect_stderr": "both streams are recorded in the target's log journal, each tagged with "
                       "its stream, and both go to the log_file when there is one",
}
#: ``[supervisord]`` keys that are twistd command-line options here.
_TWISTD_OPTIONS = {
    "logfile": "--logfile {}", "pidfile": "--pidfile {}", "nodaemon": "-n (when true)",
    "directory": "--rundir {}", "umask": "--umask {}", "user": "--uid {}",
}
#: Sections whose role is played by something that needs no configuration.
_NOT_NEEDED_SECTIONS = {
    "supervisorctl": "python -m supervisor.ctl --config tree.yaml reaches the ipc socket",
    "rpcinterface": "the target speaks its IPC protocol on the ipc socket",
}
#: supervisord's defaults where they differ from ours, written out explicitly.
_SUPERVISORD_DEFAULTS = {
    "autorestart": "unexpected", "startsecs": "1", "stopwaitsecs": "10",
    "stopasgroup": "false", "killasgroup": "false",
}


class MigrateError(Exception):
    """The supervisord file cannot be read or holds a value we cannot parse."""


@attrs.define
class Translation:
    """The target YAML as data, with what could not be translated and the files read."""

    config: dict[str, Any] = attrs.Factory(dict)
    untranslated: list[str] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    files: list[str] = attrs.Factory(list)


def _bool(where: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise MigrateError(f"{where}: {value!r} is not a boolean")


def _int(where: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise MigrateError(f"{where}: {value!r} is not an integer") from None


_SIZE_UNITS = {"KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}


def _size(where: str, value: str) -> int:
    """supervisord's byte sizes: ``50MB``, ``1KB``, ``1024``."""
    text = value.strip().upper()
    factor = next((f for unit, f in _SIZE_UNITS.items() if text.endswith(unit)), 1)
    digits = text[:-2] if factor != 1 else text
    try:
        return int(digits) * factor
    except ValueError:
        raise MigrateError(f"{where}: {value!r} is not a size (1024, 50KB, 50MB, 1GB)") from None


def _number(where: str, value: str) -> float | int:
    try:
        number = float(value.strip())
    except ValueError:
        raise MigrateError(f"{where}: {value!r} is not a number") from None
    return int(number) if number.is_integer() else number


class _Expander:
    """supervisord's ``%(name)s`` expansions, into our spellings."""

    def __init__(self, here: str, untranslated: list[str]) -> None:
        self.here = here
        self.untranslated = untranslated

    def expand(self, where: str, value: str, names: Mapping[str, str], templated: bool) -> str:
        """``value`` with references replaced; ``templated``: the value goes through our
        instance template (``{index}``), so literal braces are doubled. A literal ``${``
        (a shell's) becomes ``$${``, which our loader reads back as ``${``."""
        text = value.replace("${", "$${")
        text = text.replace("{", "{{").replace("}", "}}") if templated else text

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "%%":
                return "%"
            name, conversion = match.group(1), match.group(2)
            if name.startswith("ENV_"):
                env = name[4:]
                return "$${" if not env else "${" + env + "}"
            if name == "process_num":
                if not templated:
                    return str(names.get("process_num", "0"))
                spec = conversion[:-1]
                return "{index:" + spec + "d}" if spec else "{index}"
            if name == "here":
                return self.here
            if name == "host_node_name":
                return socket.gethostname()
            if name in names:
                return names[name]
            self.untranslated.append(f"{where}: %({name}){conversion} has no equivalent (kept as it is)")
            return match.group(0)

        return _REFERENCE.sub(replace, text)


def _environment(where: str, raw: str) -> dict[str, str]:
    """supervisord's ``KEY="value",KEY2=value2`` (its own shlex-based reading)."""
    lexer = shlex.shlex(raw)
    lexer.wordchars += "/.+-():%${}@*!?~[]#&;<>|\\"
    tokens = list(lexer)
    env: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        triple = tokens[i:i + 3]
        if len(triple) != 3 or triple[1] != "=":
            raise MigrateError(f"{where}: cannot read {raw!r} as KEY=value pairs")
        env[triple[0]] = triple[2].strip("'\"")
        i += 4
    return env


def _signal_name(where: str, value: str) -> str:
    name = value.strip().upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if not hasattr(signal, name):
        raise MigrateError(f"{where}: unknown signal {value!r}")
    return name


def read_supervisord(path: str) -> tuple[configparser.RawConfigParser, list[str]]:
    """The main file merged with the files its ``[include] files`` globs name (as supervisord
    reads them: later sections replace earlier ones of the same name); the files read."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    parser.optionxform = str  # keys are case-sensitive, as supervisord's
    files: list[str] = []

    def read(file: str) -> None:
        try:
            with open(file, encoding="utf-8") as f:
                parser.read_file(f, file)
        except OSError as e:
            raise MigrateError(f"cannot read {file}: {e.strerror or e}") from None
        except configparser.Error as e:
            raise MigrateError(f"{file} is not a supervisord config: {e}") from None
        files.append(os.path.abspath(file))
        if parser.has_option("include", "files"):
            patterns = parser.get("include", "files").split()
            parser.remove_section("include")
            here = os.path.dirname(os.path.abspath(file))
            for pattern in patterns:
                pattern = pattern.replace("%(here)s", here)
                full = pattern if os.path.isabs(pattern) else os.path.join(here, pattern)
                for found in sorted(glob.glob(full)):
                    if os.path.abspath(found) not in files:
                        read(found)

    read(path)
    return parser, files


def translate(path: str) -> Translation:
    """Translate the supervisord file at ``path``."""
    parser, files = read_supervisord(path)
    result = Translation(files=files)
    here = os.path.dirname(os.path.abspath(path))
    expander = _Expander(here, result.untranslated)
    global_env: dict[str, str] = {}
    programs: dict[str, dict[str, Any]] = {}
    groups: dict[str, tuple[list[str], int | None]] = {}
    for section in parser.sections():
        kind, _, name = section.partition(":")
        items = dict(parser.items(section))
        if kind == "program" and name:
            continue
        if kind == "group" and name:
            members = [m.strip() for m in items.pop("programs", "").split(",") if m.strip()]
            priority = _int(f"[{section}] priority", items.pop("priority")) if "priority" in items else None
            groups[name] = (members, priority)
            for key in items:
                result.untranslated.append(f"[{section}] {key}: no equivalent")
        elif kind == "supervisord":
            if "environment" in items:
                raw = expander.expand(f"[{section}] environment", items.pop("environment"), {}, False)
                global_env = _environment(f"[{section}] environment", raw)
                result.notes.append("[supervisord] environment: added to every child's environment")
            for key, value in items.items():
                if key in _TWISTD_OPTIONS:
                    option = _TWISTD_OPTIONS[key].format(value)
                    result.notes.append(f"[{section}] {key}: run twistd with {option}")
                else:
                    result.untranslated.append(f"[{section}] {key}: no equivalent")
        elif kind == "unix_http_server":
            result.config["ipc"] = _ipc(section, items, parser, expander, result)
        elif kind in _NOT_NEEDED_SECTIONS:
            result.notes.append(f"[{section}]: not needed ({_NOT_NEEDED_SECTIONS[kind]})")
        else:
            result.untranslated.append(f"[{section}]: no equivalent section")
    grouped = {member: group for group, (members, _) in groups.items() for member in members}
    for section in parser.sections():
        kind, _, name = section.partition(":")
        if kind == "program" and name:
            group = grouped.get(name, name)
            programs[name] = _program(section, name, group, dict(parser.items(section)),
                                      global_env, expander, result)
    group_nodes: dict[str, dict[str, Any]] = {}
    for group, (members, priority) in groups.items():
        for member in members:
            if member not in programs:
                result.untranslated.append(f"[group:{group}] programs: no [program:{member}]")
        node: dict[str, Any] = {"name": group, "kind": "supervisor",
                                "children": [programs[m] for m in members if m in programs]}
        if priority is not None:
            node["priority"] = priority
        group_nodes[group] = node
    # programs in file order; a group where its first program was
    children: list[dict[str, Any]] = []
    for name, spec in programs.items():
        group = grouped.get(name)
        if group is None:
            children.append(spec)
        elif group in group_nodes:
            children.append(group_nodes.pop(group))
    children.extend(group_nodes.values())  # groups of programs that do not exist
    result.config["children"] = children
    return result


class _Placeholders(Mapping[str, str]):
    """An environment where every name is set: for checking a translation's shape."""

    def __getitem__(self, name: str) -> str:
        return os.environ.get(name, "placeholder")

    def __iter__(self) -> Any:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def check(translation: Translation, base_dir: str) -> str | None:
    """Why the translated file would not load here (a user missing on this machine, …), or None."""
    from supervisor.config._common import ConfigError
    from supervisor.config.target import parse_target_config

    try:
        parse_target_config(translation.config, base_dir, _Placeholders())
    except ConfigError as e:
        return str(e)
    return None


def _ipc(section: str, items: dict[str, str], parser: configparser.RawConfigParser,
         expander: _Expander, result: Translation) -> dict[str, Any]:
    ipc: dict[str, Any] = {"enabled": True}
    identifier = parser.get("supervisord", "identifier", fallback="supervisor")
    ipc["target_id"] = re.sub(r"[^A-Za-z0-9_.-]", "-", identifier) or "supervisor"
    if "file" in items:
        ipc["path"] = expander.expand(f"[{section}] file", items.pop("file"), {}, False)
    if "chmod" in items:
        ipc["permissions"] = "0" + items.pop("chmod").strip().lstrip("0").rjust(3, "0")
    for key in items:
        result.untranslated.append(f"[{section}] {key}: no equivalent (access is by socket "
                                   "permissions and ipc.allowed_uids)")
    return ipc


def _program(section: str, name: str, group: str, items: dict[str, str],
             global_env: dict[str, str], expander: _Expander, result: Translation) -> dict[str, Any]:
    """One ``[program:x]`` as a process child (a group of instances with ``numprocs``)."""
    where = f"[{section}]"
    values = {**_SUPERVISORD_DEFAULTS, **items}
    numprocs = _int(f"{where} numprocs", values.pop("numprocs", "1"))
    numprocs_start = _int(f"{where} numprocs_start", values.pop("numprocs_start", "0"))
    process_name = values.pop("process_name", "%(program_name)s")
    templated = numprocs > 1 or "process_num" in process_name
    names = {"program_name": name, "group_name": group}
    if not templated:
        names["process_num"] = str(numprocs_start)

    def expand(key: str, value: str) -> str:
        return expander.expand(f"{where} {key}", value, names, templated)

    child: dict[str, Any] = {"name": name, "kind": "process"}
    if templated:
        child["numprocs"] = numprocs
        if numprocs_start:
            child["numprocs_start"] = numprocs_start
        child["process_name"] = _process_name(where, process_name, name, group, expander)
    elif expander.expand(f"{where} process_name", process_name, names, False) != name:
        result.untranslated.append(
            f"{where} process_name: a single process is named after its program here ({name})")
    if "command" not in values:
        raise MigrateError(f"{where}: command is required")
    try:
        child["command"] = shlex.split(expand("command", values.pop("command")))
    except ValueError as e:
        raise MigrateError(f"{where} command: {e}") from None
    if "directory" in values:
        child["cwd"] = expand("directory", values.pop("directory"))
    env = dict(global_env)
    if "environment" in values:
        raw = values.pop("environment")
        env.update({k: expand("environment", v) for k, v in _environment(f"{where} environment", raw).items()})
    if env:
        child["environment"] = env
    restart = values.pop("autorestart").strip().lower()
    if restart not in _AUTORESTART:
        raise MigrateError(f"{where} autorestart: {restart!r} is not true, false or unexpected")
    child["restart_policy"] = _AUTORESTART[restart]
    if not _bool(f"{where} autostart", values.pop("autostart", "true")):
        child["hold"] = "paused"  # waits, paused, until resume_child starts it
    if "priority" in values:
        child["priority"] = _int(f"{where} priority", values.pop("priority"))
    child["startsecs"] = _number(f"{where} startsecs", values.pop("startsecs"))
    if "startretries" in values:
        child["startretries"] = _int(f"{where} startretries", values.pop("startretries"))
    if "exitcodes" in values:
        child["exitcodes"] = [_int(f"{where} exitcodes", c) for c in values.pop("exitcodes").split(",") if c.strip()]
    if "stopsignal" in values:
        child["stop_signal"] = _signal_name(f"{where} stopsignal", values.pop("stopsignal"))
    stop_as_group = _bool(f"{where} stopasgroup", values.pop("stopasgroup"))
    kill_as_group = _bool(f"{where} killasgroup", values.pop("killasgroup"))
    kill_as_group = kill_as_group or stop_as_group  # supervisord: stopasgroup implies killasgroup
    child["stop_as_group"] = stop_as_group
    child["kill_as_group"] = kill_as_group
    wait = _number(f"{where} stopwaitsecs", values.pop("stopwaitsecs"))
    child["shutdown"] = {"graceful_timeout_ms": int(round(wait * 1000))}
    if "user" in values:
        child["user"] = expand("user", values.pop("user"))
    if "umask" in values:
        child["umask"] = values.pop("umask").strip().rjust(3, "0")[-3:]
    _log_file(where, values, child, result, expand)
    for key, why in _NOT_NEEDED.items():
        if key in values:
            values.pop(key)
            result.notes.append(f"{where} {key}: {why}")
    for key in sorted(values):
        if key.startswith(("stdout_", "stderr_")):
            why = ("no equivalent: output lines are kept in the target's log journal and "
                   "history (ctl logs, the dashboard)")
        else:
            why = "no equivalent"
        result.untranslated.append(f"{where} {key}: {why}")
    return child


def _log_file(where: str, values: dict[str, str], child: dict[str, Any], result: Translation,
              expand: Callable[[str, str], str]) -> None:
    """``stdout_logfile`` (and its size keys) as ``log_file``, which holds both streams."""
    path = values.pop("stdout_logfile", "").strip()
    if not path or path.upper() == "NONE":
        return
    if path.upper() == "AUTO":
        result.untranslated.append(f"{where} stdout_logfile: AUTO has no equivalent (name the "
                                   "file; output is in the log journal and history anyway)")
        return
    log_file: dict[str, Any] = {"path": expand("stdout_logfile", path)}
    if "stdout_logfile_maxbytes" in values:
        log_file["max_bytes"] = _size(f"{where} stdout_logfile_maxbytes",
                                      values.pop("stdout_logfile_maxbytes"))
    if "stdout_logfile_backups" in values:
        log_file["backups"] = _int(f"{where} stdout_logfile_backups",
                                   values.pop("stdout_logfile_backups"))
    child["log_file"] = log_file
    if child.get("numprocs", 1) > 1 and "{" not in log_file["path"]:
        result.notes.append(f"{where} stdout_logfile: every instance appends to the one file, "
                            "as under supervisord")
    redirected = _bool(f"{where} redirect_stderr", values.get("redirect_stderr", "false"))
    stderr = values.get("stderr_logfile", "").strip()
    if not redirected and stderr.upper() not in ("", "NONE", "AUTO"):
        values.pop("stderr_logfile")
        result.notes.append(f"{where} stderr_logfile: stderr lines go to the log_file with "
                            "stdout's, each tagged in the log journal")


def _process_name(where: str, template: str, name: str, group: str, expander: _Expander) -> str:
    """supervisord's ``process_name`` as our instance template (``{name}``, ``{index}``)."""
    text = template.replace("${", "$${").replace("{", "{{").replace("}", "}}")

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        key, conversion = match.group(1), match.group(2)
        if key == "program_name":
            return "{name}"
        if key == "process_num":
            spec = conversion[:-1]
            return "{index:" + spec + "d}" if spec else "{index}"
        if key == "group_name":
            return group
        if key == "host_node_name":
            return socket.gethostname()
        expander.untranslated.append(f"{where} process_name: %({key}){conversion} has no equivalent")
        return match.group(0)

    return _REFERENCE.sub(replace, text)


def render(translation: Translation, source: str) -> str:
    """The YAML text, opening with comments that say what was and was not translated."""
    lines = [f"# Translated from {source} by python -m supervisor.migrate."]
    for file in translation.files[1:]:
        lines.append(f"# Included: {file}")
    for note in translation.notes:
        lines.append(f"# Note: {note}")
    if translation.untranslated:
        lines.append("# Not translated:")
        lines.extend(f"#   {item}" for item in translation.untranslated)
    body = yaml.safe_dump(translation.config, sort_keys=False, default_flow_style=False,
                          allow_unicode=True, width=100)
    return "\n".join(lines) + "\n" + body


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.migrate",
        description="Translate a supervisord config into a target YAML file (written to stdout).")
    parser.add_argument("config", help="supervisord.conf")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 3 when some key was not translated")
    args = parser.parse_args(argv)
    try:
        translation = translate(args.config)
    except MigrateError as e:
        print(f"error: {e}", file=err)
        return 1
    out.write(render(translation, args.config))
    for item in translation.untranslated:
        print(f"not translated: {item}", file=err)
    problem = check(translation, os.path.dirname(os.path.abspath(args.config)))
    if problem is not None:
        print(f"warning: the translation does not load on this machine: {problem}", file=err)
    return 3 if args.strict and translation.untranslated else 0


if __name__ == "__main__":
    sys.exit(main())
