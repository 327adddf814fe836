"""Fixtures the unit tests share."""

from __future__ import annotations

import os

import pytest

from sandboxd.engine.cgroups import fsutil


@pytest.fixture
def cgroup_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (path, value) the cgroup backends write through fsutil.write_text from the test's start, in order
    (still written: the fake kernel's files change as before)."""
    writes: list[tuple[str, str]] = []
    real_write = fsutil.write_text

    def recording_write(path: fsutil.StrPath, value: str) -> None:
        writes.append((os.fsdecode(os.fspath(path)), value))
        real_write(path, value)

    monkeypatch.setattr(fsutil, "write_text", recording_write)
    return writes
