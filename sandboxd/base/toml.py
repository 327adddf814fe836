"""Reading one TOML table into typed values, with errors that name the file, the key and the reason.

Each ``take_*`` removes the key it reads; :meth:`TomlTable.finish` then refuses whatever is left, so a
misspelt key is an error instead of a silently ignored setting.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sandboxd.base.errors import ConfigError, InvalidSpec
from sandboxd.base.limits import Limits
from sandboxd.base.units import parse_duration_ms, parse_percent, parse_size_bytes

T = TypeVar("T")

UNLIMITED = "unlimited"


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


class TomlTable:
    """The keys of one table, consumed as they are read. ``prefix`` is the dotted path of the table."""

    def __init__(self, data: dict[str, Any], *, file: Path | str, prefix: str = "") -> None:
        self._data = dict(data)
        self.file = file
        self.prefix = prefix

    def key_path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key_path(key)}: {reason}")

    def has(self, key: str) -> bool:
        return key in self._data

    def _take(self, key: str, kind: type | tuple[type, ...], kind_name: str) -> Any:
        value = self._data.pop(key)
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(key, f"expected {kind_name}, got {value!r}")
        if not isinstance(value, kind):
            raise self.error(key, f"expected {kind_name}, got {type(value).__name__} {value!r}")
        return value

    def take_str(self, key: str, default: str) -> str:
        return self._take(key, str, "a string") if key in self._data else default

    def take_bool(self, key: str, default: bool) -> bool:
        return self._take(key, bool, "true or false") if key in self._data else default

    def take_int(self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        if key not in self._data:
            return default
        value: int = self._take(key, int, "an integer")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise self.error(key, f"must be {bound}, got {value}")
        return value

    def take_str_list(self, key: str) -> tuple[str, ...]:
        if key not in self._data:
            return ()
        value = self._take(key, list, "a list of strings")
        if not all(isinstance(item, str) for item in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        return tuple(value)

    def take_table(self, key: str) -> TomlTable:
        value = self._take(key, dict, "a table") if key in self._data else {}
        return TomlTable(value, file=self.file, prefix=self.key_path(key))

    def take_raw(self, key: str) -> Any:
        return self._data.pop(key, None)

    def take_parsed(self, key: str, default: T, parse: Callable[[Any], T]) -> T:
        """A value converted by ``parse``; its ValueError becomes a ConfigError naming the key."""
        if key not in self._data:
            return default
        raw = self._data.pop(key)
        try:
            return parse(raw)
        except (ValueError, TypeError) as exc:
            raise self.error(key, str(exc)) from exc

    def remaining_keys(self) -> list[str]:
        return sorted(self._data)

    def finish(self) -> None:
        """Refuse keys nobody read."""
        if self._data:
            key = sorted(self._data)[0]
            raise self.error(key, "unknown key")


def optional_absolute_path(value: Any) -> Path | None:
    """A ``take_parsed`` parser: ``""`` = not set, else an absolute path."""
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an absolute path, got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path, got {value!r}")
    return path


def _limit(parse: Callable[[Any], int]) -> Callable[[Any], int | None]:
    def parse_limit(value: Any) -> int | None:
        if value == UNLIMITED:
            return None
        number = parse(value)
        if number <= 0:
            raise ValueError(f"must be positive (or \"{UNLIMITED}\"), got {value!r}")
        return number

    return parse_limit


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}")
    return value


_parse_size_limit = _limit(parse_size_bytes)
_parse_duration_limit = _limit(parse_duration_ms)
_parse_percent_limit = _limit(parse_percent)
_parse_count_limit = _limit(_count)

# TOML key -> (Limits field, parser). Keys are what people write; the fields carry the units.
LIMIT_KEYS: dict[str, tuple[str, Callable[[Any], int | None]]] = {
    "memory": ("memory_max_bytes", _parse_size_limit),
    "cpu_time": ("cpu_time_ms", _parse_duration_limit),
    "cpu_share": ("cpu_share_percent", _parse_percent_limit),
    "wall_time": ("wall_time_ms", _parse_duration_limit),
    "output": ("output_max_bytes", _parse_size_limit),
    "pids": ("pids_max", _parse_count_limit),
    "file_size": ("file_size_max_bytes", _parse_size_limit),
    "open_files": ("open_files_max", _parse_count_limit),
    "tmpfs_size": ("tmpfs_size_bytes", _parse_size_limit),
    "network_bytes": ("network_max_bytes", _parse_size_limit),
}


def take_limits(table: TomlTable, base: Limits) -> Limits:
    """A ``[limits]`` table over ``base``: keys not written keep ``base``'s value."""
    values: dict[str, int | None] = {}
    for key, (field_name, parse) in LIMIT_KEYS.items():
        if table.has(key):
            values[field_name] = table.take_parsed(key, None, parse)
    table.finish()
    if values.get("tmpfs_size_bytes", 0) is None:
        raise table.error("tmpfs_size", "cannot be unlimited")
    current = {name: getattr(base, name) for name, _ in LIMIT_KEYS.values()}
    current.update(values)
    try:
        return Limits(**current)
    except InvalidSpec as exc:
        raise ConfigError(f"{table.file}: {table.prefix}: {exc.message}") from exc
