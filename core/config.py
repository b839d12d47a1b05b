"""Typed configuration from a TOML file, command-line flags and the environment.

Each component declares its settings as a dataclass; `load()` builds one from a
TOML table, lets flags override it, and refuses unknown keys and bad values at
start with the key's name and the reason. Values are parsed by the field's
type, or by a parser named in the field's metadata (sizes, durations,
addresses), so `"512MiB"` and `"30s"` work in files and flags alike.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the key and the reason."""


def parse_size(value: object) -> int:
    """Bytes from an int or a string such as ``512MiB``, ``10MB`` or ``4096``."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _QUANTITY.match(str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size (use a number of bytes or e.g. 512MiB, 2GB)")
    return int(float(match.group(1)) * SIZE_UNITS[unit])


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``30s``, ``250ms``, ``5m``, ``1h``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _QUANTITY.match(str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in DURATION_UNITS:
        raise ValueError(f"{value!r} is not a duration (use seconds or e.g. 250ms, 30s, 5m, 1h)")
    return float(match.group(1)) * DURATION_UNITS[unit]


def parse_hostport(value: object) -> tuple[str, int]:
    """``(host, port)`` from ``HOST:PORT`` (``[::1]:8080`` for IPv6)."""
    text = str(value).strip()
    match = re.match(r"^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):(\d{1,5})$", text)
    if not match:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = match.group(1) or match.group(2) or "0.0.0.0"
    port = int(match.group(3))
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


def parse_url(value: object) -> str:
    """An absolute http(s) URL, without a trailing slash."""
    text = str(value).strip()
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", text):
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    return text.rstrip("/")


def size_field(default: int | str, doc: str = "") -> Any:
    return dataclasses.field(
        default=parse_size(default),
        metadata={"parse": parse_size, "doc": doc, "shown": str(default)},
    )


def duration_field(default: float | str, doc: str = "") -> Any:
    return dataclasses.field(
        default=parse_duration(default),
        metadata={"parse": parse_duration, "doc": doc, "shown": str(default)},
    )


def hostport_field(default: str, doc: str = "") -> Any:
    return dataclasses.field(default=default, metadata={"check": parse_hostport, "doc": doc})


def url_field(doc: str = "") -> Any:
    return dataclasses.field(default=None, metadata={"parse": parse_url, "doc": doc})


def setting(default: Any = dataclasses.MISSING, doc: str = "", **kwargs: Any) -> Any:
    """A plain setting with a description for the reference in the README."""
    metadata = {"doc": doc, **kwargs.pop("metadata", {})}
    if isinstance(default, list | dict):
        factory = (lambda value: lambda: type(value)(value))(default)
        return dataclasses.field(default_factory=factory, metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML file as a dict; a missing or malformed file is a ConfigError."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def build(schema: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """An instance of the dataclass `schema` from `data`, every key checked."""
    fields = {f.name: f for f in dataclasses.fields(schema)}  # type: ignore[arg-type]  # T is a dataclass
    hints = typing.get_type_hints(schema)
    values: dict[str, Any] = {}
    for raw_key, raw_value in data.items():
        key = raw_key.replace("-", "_")
        name = f"{where}{raw_key}"
        if key not in fields or not fields[key].init:
            known = ", ".join(sorted(f for f in fields if fields[f].init))
            raise ConfigError(f"{name}: unknown key (known keys: {known})")
        values[key] = _convert(name, raw_value, hints[key], fields[key])
    for key, spec in fields.items():
        no_default = spec.default is dataclasses.MISSING
        no_factory = spec.default_factory is dataclasses.MISSING
        if spec.init and key not in values and no_default and no_factory:
            raise ConfigError(f"{where}{key}: required")
    try:
        return schema(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where.rstrip('.') or schema.__name__}: {exc}") from None


def load(
    schema: type[T],
    path: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
    section: str | None = None,
) -> T:
    """Settings from the TOML file at `path` (its `section` table if given), with
    `overrides` (flags that were given, None meaning not given) applied on top."""
    data: dict[str, Any] = {}
    if path is not None:
        document = read_toml(path)
        if section is not None:
            table = document.get(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"[{section}] must be a table")
            data = dict(table)
        else:
            data = document
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    where = f"{section}." if section else ""
    return build(schema, data, where)


def _convert(name: str, value: Any, hint: Any, spec: dataclasses.Field[Any]) -> Any:
    parser: Callable[[Any], Any] | None = spec.metadata.get("parse")
    check: Callable[[Any], Any] | None = spec.metadata.get("check")
    try:
        if value is None and _allows_none(hint):
            return None
        if parser is not None:
            return parser(value)
        converted = _by_type(name, value, hint)
        if check is not None:
            check(converted)
        return converted
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _allows_none(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _by_type(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        errors = []
        for member in members:
            try:
                return _by_type(name, value, member)
            except (TypeError, ValueError, ConfigError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ValueError(f"{value!r} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        return [_by_type(f"{name}[{i}]", item, args[0]) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {type(value).__name__}")
        return {str(k): _by_type(f"{name}.{k}", v, args[1]) for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {type(value).__name__}")
        return build(hint, value, f"{name}.")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ValueError("expected a whole number, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise ValueError(f"expected a whole number, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        return value
    return value


def describe(schema: type[Any], prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, description) rows for the configuration reference."""
    rows = []
    for spec in dataclasses.fields(schema):
        if not spec.init:
            continue
        if "shown" in spec.metadata:
            default = repr(spec.metadata["shown"])
        elif spec.default is not dataclasses.MISSING:
            default = repr(spec.default)
        elif spec.default_factory is not dataclasses.MISSING:
            default = repr(spec.default_factory())
        else:
            default = "required"
        rows.append((prefix + spec.name, default, spec.metadata.get("doc", "")))
    return rows
