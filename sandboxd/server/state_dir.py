"""The daemon's state directory: an exclusive lock, and the sample data the shipped tools use.

Layout (``state_dir`` is ``/run/sandboxd`` by default; each daemon on a host has its own)::

    sandboxd.lock       flock held for the daemon's life: a second daemon on the same state dir refuses
    files/              what the shipped ``file_processor`` tool may read (bound read-only at /data/files)
    sqlite/sample.db    the database of the shipped ``sqlite_query`` tool (bound read-only at /data/sqlite)
    root/               the executor's empty mount point for sandbox roots (see EngineConfig)

The sample database is rebuilt at every start (written aside, then renamed into place), so it is always
the documented one; ``files/`` is only seeded when it is created. Nothing here forks.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sandboxd.base.errors import ConfigError

LOCK_NAME = "sandboxd.lock"
FILES_DIR_NAME = "files"
SQLITE_DIR_NAME = "sqlite"
SAMPLE_DB_NAME = "sample.db"

_SAMPLE_FILES = {
    "hello.txt": "hello from sandboxd\nthis file is readable by the file_processor tool\nhello again\n",
    "inventory.json": '{"warehouse": {"name": "north", "items": [{"sku": "A-1", "count": 3}, '
    '{"sku": "B-2", "count": 0}]}}\n',
}

_SAMPLE_SQL = """
CREATE TABLE tools (name TEXT PRIMARY KEY, description TEXT NOT NULL);
INSERT INTO tools VALUES
    ('python', 'run a Python snippet'),
    ('file_processor', 'count, grep, head and query files'),
    ('sqlite_query', 'read-only SQL against a database');
CREATE TABLE measurements (id INTEGER PRIMARY KEY, city TEXT NOT NULL, celsius REAL NOT NULL);
INSERT INTO measurements (city, celsius) VALUES
    ('Oslo', -3.5), ('Lisbon', 14.0), ('Nairobi', 22.5), ('Oslo', 1.0), ('Lisbon', 16.5);
"""


@dataclass
class StateDir:
    path: Path
    lock_fd: int

    @property
    def files_dir(self) -> Path:
        return self.path / FILES_DIR_NAME

    @property
    def sqlite_dir(self) -> Path:
        return self.path / SQLITE_DIR_NAME

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def prepare_state_dir(path: Path) -> StateDir:
    """Create and lock ``path``, seed the sample data. Raises ConfigError if another daemon holds it."""
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"daemon.state_dir: cannot use {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise ConfigError(f"daemon.state_dir: {path} is in use by another sandboxd (give each daemon its own "
                          "state_dir, socket and instance)") from exc
    state = StateDir(path, fd)
    try:
        _seed_files(state.files_dir)
        _write_sample_db(state.sqlite_dir)
    except (OSError, sqlite3.Error) as exc:
        state.release()
        raise ConfigError(f"daemon.state_dir: cannot prepare sample data in {path}: {exc}") from exc
    return state


def _seed_files(files_dir: Path) -> None:
    if files_dir.exists():
        return
    files_dir.mkdir(mode=0o755)
    for name, text in _SAMPLE_FILES.items():
        (files_dir / name).write_text(text)
        (files_dir / name).chmod(0o644)


def _write_sample_db(sqlite_dir: Path) -> None:
    sqlite_dir.mkdir(mode=0o755, exist_ok=True)
    sqlite_dir.chmod(0o755)
    final = sqlite_dir / SAMPLE_DB_NAME
    partial = sqlite_dir / f".{SAMPLE_DB_NAME}.partial"
    partial.unlink(missing_ok=True)
    connection = sqlite3.connect(partial)
    try:
        connection.executescript(_SAMPLE_SQL)
        connection.commit()
    finally:
        connection.close()
    partial.chmod(0o644)
    os.replace(partial, final)
