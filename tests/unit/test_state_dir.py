"""The state directory: one daemon per directory, and the sample data of the shipped tools."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.server.state_dir import prepare_state_dir


def test_lock_is_exclusive(tmp_path: Path) -> None:
    first = prepare_state_dir(tmp_path / "state")
    with pytest.raises(ConfigError, match="in use by another sandboxd"):
        prepare_state_dir(tmp_path / "state")
    first.release()
    prepare_state_dir(tmp_path / "state").release()


def test_sample_data(tmp_path: Path) -> None:
    state = prepare_state_dir(tmp_path / "state")
    try:
        assert sorted(p.name for p in state.files_dir.iterdir()) == ["hello.txt", "inventory.json"]
        db = state.sqlite_dir / "sample.db"
        assert db.stat().st_mode & 0o777 == 0o644
        with sqlite3.connect(db) as connection:
            assert connection.execute("select count(*) from measurements").fetchone() == (5,)
    finally:
        state.release()


def test_files_are_seeded_once_and_the_db_rebuilt(tmp_path: Path) -> None:
    prepare_state_dir(tmp_path).release()
    (tmp_path / "files" / "hello.txt").unlink()
    with sqlite3.connect(tmp_path / "sqlite" / "sample.db") as connection:
        connection.execute("delete from measurements")
    prepare_state_dir(tmp_path).release()
    assert not (tmp_path / "files" / "hello.txt").exists()  # the operator's directory is theirs
    with sqlite3.connect(tmp_path / "sqlite" / "sample.db") as connection:
        assert connection.execute("select count(*) from measurements").fetchone() == (5,)
