"""Sizes and durations written for people ("64M", "250ms") parsed once into integers with units in names.

Sizes are binary: ``K`` = 1024 bytes (``KiB`` is accepted too). A bare integer is a byte count. Durations
need a unit (``us``, ``ms``, ``s``, ``m``, ``h``): a bare number is ambiguous and refused. ``"unlimited"``
is a separate word handled by the callers that allow it. Errors are :class:`ValueError` with a message
meant to follow the name of the key in a configuration or command-line error.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_SIZE_FACTORS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}

# Microseconds per unit, so "1.5ms" stays exact until the final rounding to milliseconds.
_DURATION_USEC = {"us": 1, "ms": 1000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def _split(text: str) -> tuple[Decimal, str]:
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a number with an optional unit")
    try:
        return Decimal(match.group(1)), match.group(2).lower()
    except InvalidOperation as exc:  # pragma: no cover - the regex only lets decimals through
        raise ValueError(f"{text!r} is not a number") from exc


def parse_size_bytes(value: str | int) -> int:
    """``"64M"`` → 67108864; ``"1.5K"`` → 1536; ``4096`` → 4096. Fractions of a byte are refused."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size {value} is negative")
        return value
    number, unit = _split(value)
    if unit not in _SIZE_FACTORS:
        raise ValueError(f"{value!r} has an unknown size unit {unit!r} (use B, K, M, G or T)")
    size = number * _SIZE_FACTORS[unit]
    if size != size.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(size)


def parse_duration_ms(value: str) -> int:
    """``"5s"`` → 5000; ``"250ms"`` → 250; ``"1.5m"`` → 90000. Rounds up to a whole millisecond."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration: write it with a unit, e.g. \"5s\" or \"250ms\"")
    number, unit = _split(value)
    if unit not in _DURATION_USEC:
        hint = "add a unit" if unit == "" else f"unknown unit {unit!r}"
        raise ValueError(f"{value!r} is not a duration ({hint}: us, ms, s, m or h)")
    usec = number * _DURATION_USEC[unit]
    return math.ceil(usec / 1000)  # up: "1us" must not become "no time at all"


def parse_positive_duration_ms(value: object) -> int:
    """:func:`parse_duration_ms`, refusing zero: a timeout of nothing is a mistake, not a setting."""
    duration_ms = parse_duration_ms(value)  # type: ignore[arg-type]
    if duration_ms <= 0:
        raise ValueError("must be positive")
    return duration_ms


def parse_percent(value: str | int) -> int:
    """``"25%"`` or ``25`` → 25."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a percentage")
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.endswith("%"):
        text = text[:-1]
    if not text.strip().isdigit():
        raise ValueError(f"{value!r} is not a whole percentage such as \"25%\"")
    return int(text)


def format_size(size_bytes: int) -> str:
    """The shortest exact spelling, for messages and tables: 67108864 → ``"64M"``, 1536 → ``"1536"``."""
    for suffix, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size_bytes >= factor and size_bytes % factor == 0:
            return f"{size_bytes // factor}{suffix}"
    return str(size_bytes)


def format_duration(duration_ms: int) -> str:
    """5000 → ``"5s"``, 250 → ``"250ms"``, 90000 → ``"90s"``."""
    if duration_ms >= 1000 and duration_ms % 1000 == 0:
        return f"{duration_ms // 1000}s"
    return f"{duration_ms}ms"
