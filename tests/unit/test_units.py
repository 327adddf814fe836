"""Sizes and durations with units, parsed once into integers."""

from __future__ import annotations

import pytest

from sandboxd.base.units import format_duration, format_size, parse_duration_ms, parse_percent, parse_size_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64M", 64 * 1024**2), ("1K", 1024), ("1.5K", 1536), ("2g", 2 * 1024**3), ("512MiB", 512 * 1024**2),
     ("100", 100), ("7B", 7), (" 3 M ", 3 * 1024**2), (4096, 4096), ("1T", 1024**4)],
)
def test_sizes(text: str | int, expected: int) -> None:
    assert parse_size_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "M", "-1M", "1.5", "0.3K", "12 parsecs", "1e6", True, -5])
def test_bad_sizes(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_size_bytes(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5s", 5000), ("250ms", 250), ("1.5m", 90_000), ("2h", 7_200_000), ("1us", 1), ("1500us", 2), ("0s", 0)],
)
def test_durations(text: str, expected: int) -> None:
    assert parse_duration_ms(text) == expected


@pytest.mark.parametrize("text", ["5", "5 fortnights", "s", "-1s", 5])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(text)


def test_bare_number_duration_asks_for_a_unit() -> None:
    with pytest.raises(ValueError, match="add a unit"):
        parse_duration_ms("30")


def test_percent() -> None:
    assert parse_percent("25%") == 25
    assert parse_percent(50) == 50
    with pytest.raises(ValueError):
        parse_percent("half")


def test_formatting_round_trips() -> None:
    assert format_size(64 * 1024**2) == "64M"
    assert format_size(1536) == "1536"
    assert format_duration(5000) == "5s"
    assert format_duration(250) == "250ms"
    for text in ("64M", "1G", "3K"):
        assert format_size(parse_size_bytes(text)) == text
