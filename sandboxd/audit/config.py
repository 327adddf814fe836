"""The ``[audit]`` table of sandboxd.toml, and the HMAC key file it may name.

::

    [audit]
    path = "/var/log/sandboxd/audit.log"     # the active file; rotated ones sit beside it
    key_file = "/etc/sandboxd/audit.key"     # optional: HMAC-SHA256 instead of plain SHA-256
    rotate_size = "64M"                      # rotate once the active file reaches this size
    retention_days = 90                      # delete rotated files older than this; 0 keeps them forever
    subscriber_queue = 1024                  # records a live subscriber may fall behind before it is dropped
    anchor = ""                              # "" = none; a file path or an http(s):// URL that receives the
                                             # last seq and hash every anchor_interval (sandboxd.audit.anchor)
    anchor_interval = "10s"

With a key, whoever can write the log but not read the key cannot forge a record that verifies. The key is
the file's exact bytes (a trailing newline included), at least 32 of them; ``head -c 32 /dev/urandom`` makes
one. Changing the key starts a new chain: move the old files aside (and keep the old key to verify them).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandboxd.audit.anchor import AnchorTarget, parse_anchor_target
from sandboxd.base.errors import ConfigError
from sandboxd.base.toml import TomlTable
from sandboxd.base.units import parse_positive_duration_ms, parse_size_bytes

DEFAULT_PATH = Path("/var/log/sandboxd/audit.log")
DEFAULT_ROTATE_BYTES = 64 * 1024**2
DEFAULT_RETENTION_DAYS = 90
DEFAULT_SUBSCRIBER_QUEUE = 1024
DEFAULT_ANCHOR_INTERVAL_MS = 10_000
MIN_ROTATE_BYTES = 64 * 1024  # smaller makes a file every few requests
MIN_KEY_BYTES = 32  # SHA-256's block of security: a shorter key is the weak link
MAX_KEY_BYTES = 64 * 1024


@dataclass(frozen=True)
class AuditConfig:
    path: Path = DEFAULT_PATH
    key_file: Path | None = None
    rotate_bytes: int = DEFAULT_ROTATE_BYTES
    retention_days: int | None = DEFAULT_RETENTION_DAYS  # None: keep rotated files forever
    subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE
    anchor: AnchorTarget | None = None  # where the chain's tip is shipped; None: nowhere
    anchor_interval_ms: int = DEFAULT_ANCHOR_INTERVAL_MS


def _absolute_path(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a path, got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path, got {value!r}")
    return path


def _rotate_bytes(value: Any) -> int:
    size = parse_size_bytes(value)
    if size < MIN_ROTATE_BYTES:
        raise ValueError(f"must be at least 64K, got {value!r}")
    return size


def parse_audit_config(table: TomlTable) -> AuditConfig:
    """The ``[audit]`` table; keys not written keep their defaults. The key file is read by the daemon."""
    path = table.take_parsed("path", DEFAULT_PATH, _absolute_path)
    key_file = table.take_parsed("key_file", None, _absolute_path)
    rotate_bytes = table.take_parsed("rotate_size", DEFAULT_ROTATE_BYTES, _rotate_bytes)
    retention_days = table.take_int("retention_days", DEFAULT_RETENTION_DAYS, minimum=0)
    subscriber_queue = table.take_int("subscriber_queue", DEFAULT_SUBSCRIBER_QUEUE, minimum=1, maximum=1_000_000)
    anchor = table.take_parsed("anchor", None, lambda value: None if value == "" else parse_anchor_target(value))
    anchor_interval_ms = table.take_parsed("anchor_interval", DEFAULT_ANCHOR_INTERVAL_MS, parse_positive_duration_ms)
    table.finish()
    return AuditConfig(path=path, key_file=key_file, rotate_bytes=rotate_bytes,
                       retention_days=retention_days or None, subscriber_queue=subscriber_queue, anchor=anchor,
                       anchor_interval_ms=anchor_interval_ms)


def load_hmac_key(path: Path) -> bytes:
    """The key's bytes. The file must be a regular file (not a symlink), not world-readable, ≥ 32 bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the audit key file: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: the audit key file must be a regular file")
        if info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            raise ConfigError(f"{path}: the audit key file is readable or writable by everyone "
                              f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod o-rw {path}")
        key = os.read(fd, MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the audit key file: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{path}: the audit key has {len(key)} bytes, it needs at least {MIN_KEY_BYTES} "
                          "(head -c 32 /dev/urandom > FILE)")
    if len(key) > MAX_KEY_BYTES:
        raise ConfigError(f"{path}: the audit key file is larger than {MAX_KEY_BYTES} bytes: not a key?")
    return key
