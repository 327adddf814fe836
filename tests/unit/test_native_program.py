"""The sandbox's native program: built with the package, started once as the spawner; a missing or
non-executable one stops sandboxd at start with the remedy instead of failing every execution."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.engine.child import program
from sandboxd.engine.child.program import SPAWNER_NAME, check_spawner, spawner_path


def test_the_installed_program_is_an_executable_file() -> None:
    mode = os.stat(spawner_path()).st_mode
    assert stat.S_ISREG(mode) and mode & stat.S_IXUSR


def test_a_missing_program_names_itself_and_the_remedy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(program, "NATIVE_DIR", tmp_path)
    with pytest.raises(ConfigError, match=f"{tmp_path / SPAWNER_NAME} is missing.*pip install.*gcc, libc6-dev"):
        check_spawner()


def test_a_program_that_is_not_executable_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / SPAWNER_NAME).write_bytes(b"")
    (tmp_path / SPAWNER_NAME).chmod(0o644)
    monkeypatch.setattr(program, "NATIVE_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"not an executable file \(mode -rw-r--r--\)"):
        check_spawner()
