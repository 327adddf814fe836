"""The sandbox's native program: built with the package, opened once by the spawner; a missing or
non-executable one stops sandboxd at start with the remedy instead of failing every execution."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.engine.child import waiter
from sandboxd.engine.child.waiter import WAITER_NAME, check_waiter, open_waiter


def test_the_installed_waiter_opens_as_an_executable_file() -> None:
    fd = open_waiter()
    try:
        mode = os.fstat(fd).st_mode
        assert stat.S_ISREG(mode) and mode & stat.S_IXUSR
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)


def test_a_missing_waiter_names_itself_and_the_remedy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiter, "NATIVE_DIR", tmp_path)
    with pytest.raises(ConfigError, match=f"{tmp_path / WAITER_NAME} is missing.*pip install.*gcc, libc6-dev"):
        check_waiter()


def test_a_waiter_that_is_not_executable_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / WAITER_NAME).write_bytes(b"")
    (tmp_path / WAITER_NAME).chmod(0o644)
    monkeypatch.setattr(waiter, "NATIVE_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"not an executable file \(mode -rw-r--r--\)"):
        check_waiter()
