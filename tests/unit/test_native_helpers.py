"""The sandbox's native helpers: built with the package, opened once by the spawner; a missing or
non-executable one stops sandboxd at start with the remedy instead of failing every execution."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.engine.child import helpers
from sandboxd.engine.child.helpers import EXEC_NAME, INIT_NAME, WATCH_NAME, check_helpers, open_helpers


def test_the_installed_helpers_open_as_executable_files() -> None:
    opened = open_helpers()
    try:
        for fd in opened.fds():
            mode = os.fstat(fd).st_mode
            assert stat.S_ISREG(mode) and mode & stat.S_IXOTH
            assert os.get_inheritable(fd) is False
    finally:
        for fd in opened.fds():
            os.close(fd)


def test_a_missing_helper_names_itself_and_the_remedy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "NATIVE_DIR", tmp_path)
    with pytest.raises(ConfigError, match=f"{tmp_path / INIT_NAME} is missing.*pip install.*gcc, libc6-dev"):
        check_helpers()


def test_a_helper_the_sandboxes_cannot_execute_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (INIT_NAME, EXEC_NAME, WATCH_NAME):
        (tmp_path / name).write_bytes(b"")
        (tmp_path / name).chmod(0o700)  # root's alone: a sandbox's uid could not run it
    monkeypatch.setattr(helpers, "NATIVE_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"not an executable file \(mode -rwx------\)"):
        check_helpers()
