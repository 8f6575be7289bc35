"""Generic YAML validation helpers: every failure is a ConfigError naming the dotted key."""

from __future__ import annotations

import math
import os
import re
import types
from typing import Any, Iterable, Mapping

import attrs
import yaml

_MISSING = object()


class ConfigError(Exception):
    """A configuration defect, reported with the dotted path of the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


#: libyaml's parser where PyYAML was built with it (a 100-child config: 34 → 5 ms)
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str, name: str | None = None) -> Any:
    """``yaml.safe_load`` through libyaml where available. A document with a tab (libyaml
    accepts some that PyYAML rejects) or one libyaml rejects is parsed by PyYAML's own parser,
    whose error shows the offending line with a caret, named ``name`` (the file)."""
    if "\t" not in text:
        try:
            return yaml.load(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        for mark in (e.context_mark, e.problem_mark):
            if mark is not None and name is not None:
                mark.name = name
        raise


def load_yaml_mapping(path: str) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping."""
    try:
        with open(path, encoding="utf-8") as f:
            data = safe_load(f.read(), path)
    except OSError as e:
        raise ConfigError("", f"cannot read config file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError("", f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"config file {path} must contain a mapping at the top level")
    return data


#: ``${NAME}``, ``${NAME:-default}``, and ``$${`` for a literal ``${``.
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MALFORMED = re.compile(r"(?<!\$)\$\{")


def expand_environment(data: Any, environ: Mapping[str, str], key: str = "") -> Any:
    """``data`` with ``${NAME}`` and ``${NAME:-default}`` in every string value replaced from
    ``environ`` (mapping keys are left alone); an unset name without a default, or a ``${``
    that is not a reference, is a ConfigError naming the key. ``$${`` stands for ``${``."""
    if isinstance(data, str):
        return _expand_string(data, environ, key)
    if isinstance(data, list):
        return [expand_environment(item, environ, join_key(key, i)) for i, item in enumerate(data)]
    if isinstance(data, dict):
        return {k: expand_environment(v, environ, join_key(key, str(k))) for k, v in data.items()}
    return data


def _expand_string(value: str, environ: Mapping[str, str], key: str) -> str:
    if "${" not in value:
        return value
    pieces: list[str] = []
    position = 0
    for match in _REFERENCE.finditer(value):
        between = value[position:match.start()]
        if _MALFORMED.search(between):
            raise ConfigError(key, f"malformed ${{...}} reference in {value!r}")
        pieces.append(between)
        position = match.end()
        if match.group(0) == "$${":
            pieces.append("${")
            continue
        name, default = match.group(1), match.group(2)
        found = environ.get(name)
        if found is None:
            if default is None:
                raise ConfigError(key, f"environment variable {name} is not set "
                                       f"(write ${{{name}:-default}} to give a default)")
            found = default
        pieces.append(found)
    rest = value[position:]
    if _MALFORMED.search(rest):
        raise ConfigError(key, f"malformed ${{...}} reference in {value!r}")
    pieces.append(rest)
    return "".join(pieces)


def defaults(model: type) -> Any:
    """The attrs defaults of ``model`` by field name (``defaults(IpcConfig).max_request_bytes``):
    parsers take every default from the model, so each is written once, beside its field."""
    values = {}
    for field in attrs.fields(model):
        default = field.default
        if isinstance(default, attrs.Factory):
            default = default.factory()
        if default is not attrs.NOTHING:
            values[field.name] = default
    return types.SimpleNamespace(**values)


def join_key(parent: str, key: str | int) -> str:
    """Dotted key path (``registration.listen_path``, ``authorization.operators[0]``)."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


class Section:
    """A mapping being validated: typed getters that name the key on error, unknown keys refused."""

    def __init__(self, key: str, data: Any, allowed: Iterable[str]) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(key, "must be a mapping")
        self.key = key
        self.data = dict(data)
        allowed_set = set(allowed)
        unknown = sorted(str(k) for k in self.data if k not in allowed_set)
        if unknown:
            raise ConfigError(join_key(key, unknown[0]), "unknown key")

    def _get(self, name: str, default: Any) -> Any:
        value = self.data.get(name, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise ConfigError(join_key(self.key, name), "is required")
            return default
        return value

    def section(self, name: str, allowed: Iterable[str]) -> "Section":
        return Section(join_key(self.key, name), self.data.get(name), allowed)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def string(self, name: str, default: Any = _MISSING, *, non_blank: bool = True) -> str:
        value = self._get(name, default)
        if not isinstance(value, str):
            raise ConfigError(join_key(self.key, name), "must be a string")
        if non_blank and not value.strip():
            raise ConfigError(join_key(self.key, name), "must not be blank")
        return value

    def boolean(self, name: str, default: Any = _MISSING) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(join_key(self.key, name), "must be true or false")
        return value

    def integer(
        self, name: str, default: Any = _MISSING, *, minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(join_key(self.key, name), "must be an integer")
        _check_range(join_key(self.key, name), value, minimum, maximum)
        return value

    def number(
        self, name: str, default: Any = _MISSING, *, minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(join_key(self.key, name), "must be a number")
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:  # NaN passes every comparison: refuse it (and infinities) first
            raise ConfigError(join_key(self.key, name), "must be a finite number")
        _check_range(join_key(self.key, name), value, minimum, maximum)
        return float(value)

    def string_list(self, name: str, default: Any = _MISSING) -> list[str]:
        value = self._get(name, default)
        if not isinstance(value, list):
            raise ConfigError(join_key(self.key, name), "must be a list of strings")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(join_key(join_key(self.key, name), index),
                                  "must be a non-blank string")
        return list(value)

    def path(self, name: str, base_dir: str, default: Any = _MISSING) -> str:
        """A filesystem path; relative values are resolved against ``base_dir``."""
        return resolve_path(join_key(self.key, name), self.string(name, default), base_dir)

    def permissions(self, name: str, default: int) -> int:
        """A Unix mode written as an octal string such as ``"0600"``."""
        value = self._get(name, default)
        key = join_key(self.key, name)
        if isinstance(value, bool):
            raise ConfigError(key, "must be an octal string such as \"0600\"")
        if isinstance(value, int):
            # YAML 1.1 reads an unquoted 0600 as the octal integer 384.
            mode = value
        elif isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
            mode = int(value, 8)
        else:
            raise ConfigError(key, "must be an octal string such as \"0600\"")
        if not 0 <= mode <= 0o777:
            raise ConfigError(key, "must be between 0000 and 0777")
        return mode


def _check_range(key: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ConfigError(key, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(key, f"must be <= {maximum}")


def resolve_path(key: str, value: str, base_dir: str) -> str:
    """Absolute, normalised form of ``value``; relative paths are taken from ``base_dir``."""
    if "\x00" in value:
        raise ConfigError(key, "must not contain NUL bytes")
    keep_slash = value.endswith("/")
    path = value if os.path.isabs(value) else os.path.join(base_dir, value)
    path = os.path.normpath(path)
    if not os.path.isabs(path):
        raise ConfigError(key, "must resolve to an absolute path")
    return path + "/" if keep_slash and not path.endswith("/") else path


MAX_UNIX_SOCKET_PATH_BYTES = 107


def check_unix_socket_path(key: str, path: str) -> None:
    """AF_UNIX paths are limited to 107 bytes on Linux."""
    if len(os.fsencode(path)) > MAX_UNIX_SOCKET_PATH_BYTES:
        raise ConfigError(key, f"socket path is longer than {MAX_UNIX_SOCKET_PATH_BYTES} bytes")


_TCP_LISTEN = re.compile(r"tcp:(?P<port>[0-9]{1,5})(?::interface=(?P<interface>[^:\s]+))?")


def metrics_listen(key: str, value: str, base_dir: str) -> str:
    """A metrics endpoint string: ``unix:PATH`` or ``tcp:PORT`` (on 127.0.0.1 unless an
    ``interface=`` is written), normalised to a Twisted server endpoint description."""
    if value.startswith("unix:"):
        path = resolve_path(key, value[len("unix:"):], base_dir)
        check_unix_socket_path(key, path)
        return f"unix:{path.replace(':', chr(92) + ':')}"
    match = _TCP_LISTEN.fullmatch(value)
    if match is None or not 0 <= int(match["port"]) < 65536:
        raise ConfigError(key, f"must be unix:PATH or tcp:PORT[:interface=ADDRESS] (got {value!r})")
    return f"tcp:{int(match['port'])}:interface={match['interface'] or '127.0.0.1'}"
