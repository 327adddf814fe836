"""The [audit] table and the HMAC key file: defaults, units, and errors naming the file and the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sandboxd.audit.config import AuditConfig, load_hmac_key, parse_audit_config
from sandboxd.base.errors import ConfigError
from sandboxd.base.toml import TomlTable


def parse(**values: Any) -> AuditConfig:
    return parse_audit_config(TomlTable(values, file="/etc/sandboxd/sandboxd.toml", prefix="audit"))


def test_defaults() -> None:
    config = parse()
    assert config == AuditConfig()
    assert config.path == Path("/var/log/sandboxd/audit.log")
    assert config.key_file is None
    assert config.rotate_bytes == 64 * 1024 * 1024
    assert config.retention_days == 90
    assert config.subscriber_queue == 1024


def test_every_key() -> None:
    config = parse(path="/srv/audit/a.log", key_file="/etc/sandboxd/audit.key", rotate_size="1G",
                   retention_days=7, subscriber_queue=64)
    assert config == AuditConfig(path=Path("/srv/audit/a.log"), key_file=Path("/etc/sandboxd/audit.key"),
                                 rotate_bytes=1024**3, retention_days=7, subscriber_queue=64)


def test_retention_zero_keeps_forever() -> None:
    assert parse(retention_days=0).retention_days is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"path": "audit.log"}, "audit.path: must be an absolute path"),
        ({"key_file": 5}, "audit.key_file: expected a path"),
        ({"rotate_size": "1K"}, "audit.rotate_size: must be at least 64K"),
        ({"rotate_size": "lots"}, "audit.rotate_size: 'lots' is not a number"),
        ({"retention_days": -1}, "audit.retention_days: must be at least 0"),
        ({"retention_days": "90d"}, "audit.retention_days: expected an integer"),
        ({"subscriber_queue": 0}, "audit.subscriber_queue: must be between 1 and"),
        ({"rotate": "64M"}, "audit.rotate: unknown key"),
    ],
)
def test_errors_name_file_and_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^/etc/sandboxd/sandboxd.toml: {message}"):
        parse(**values)


def key_file(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "audit.key"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_load_hmac_key(tmp_path: Path) -> None:
    key = os.urandom(32) + b"\n"
    assert load_hmac_key(key_file(tmp_path, key, 0o640)) == key  # exact bytes, newline included


@pytest.mark.parametrize(
    ("data", "mode", "message"),
    [
        (b"short", 0o600, "has 5 bytes, it needs at least 32"),
        (b"k" * 32, 0o604, r"readable or writable by everyone \(mode 0604\): chmod o-rw"),
        (b"k" * 32, 0o602, "readable or writable by everyone"),
        (b"k" * 70_000, 0o600, "larger than"),
    ],
)
def test_bad_key_files(tmp_path: Path, data: bytes, mode: int, message: str) -> None:
    path = key_file(tmp_path, data, mode)
    with pytest.raises(ConfigError, match=f"^{path}: .*{message}"):
        load_hmac_key(path)


def test_key_file_missing_or_a_symlink_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the audit key file: No such file"):
        load_hmac_key(tmp_path / "nope")
    link = tmp_path / "link"
    link.symlink_to(key_file(tmp_path, b"k" * 32))
    with pytest.raises(ConfigError, match=f"^{link}: cannot read"):
        load_hmac_key(link)
    with pytest.raises(ConfigError, match="must be a regular file"):
        load_hmac_key(tmp_path)
