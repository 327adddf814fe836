"""Rotation by size keeps one chain across files; retention by age deletes old rotated files, audited."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from sandboxd.audit.reader import chain_order, rotated_files
from sandboxd.audit.record import AuditRecord
from sandboxd.audit.verify import ChainBroken, Why, verify_files
from sandboxd.audit.writer import AuditLog, AuditUnavailable

DAY_S = 86_400


def open_log(path: Path, **options: Any) -> AuditLog:
    settings: dict[str, Any] = {"hmac_key": None, "rotate_bytes": 1 << 30, "retention_days": None}
    settings.update(options)
    return AuditLog.open(path, **settings)


def records(path: Path) -> list[AuditRecord]:
    return [AuditRecord.from_line(line) for line in path.read_bytes().splitlines(keepends=True)]


def rotate_into_files(path: Path, batches: int, per_batch: int = 3, **options: Any) -> None:
    """``batches`` commits of ``per_batch`` records with a rotation after each (rotate_bytes=1)."""
    log = open_log(path, rotate_bytes=1, **options)
    for batch in range(batches):
        for i in range(per_batch):
            log.append("test.rotate", details={"batch": batch, "i": i})
        log.flush(5)
    log.close()


def test_rotated_files_are_named_by_first_seq_and_chain_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    rotate_into_files(path, 4)
    rotated = rotated_files(path)
    assert [p.name for p in rotated] == [f"audit.log.{seq:012d}" for seq in (1, 4, 7, 10)]
    assert path.read_bytes() == b""  # the active file is fresh after the last rotation
    previous: AuditRecord | None = None
    for file in rotated:
        stored = records(file)
        assert len(stored) == 3 and stored[0].seq == int(file.name.rsplit(".", 1)[1])
        if previous is not None:
            assert stored[0].prev == previous.hash
        previous = stored[-1]
    report = verify_files([*rotated, path], hmac_key=None)
    assert (report.records, report.last_seq, len(report.files)) == (12, 12, 5)


def test_reopen_with_an_empty_active_file_continues_from_the_newest_rotated(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    rotate_into_files(path, 2)
    path.unlink()  # as if the daemon died between the rename and creating the new file
    log = open_log(path)
    record = log.append("test.after")
    log.close()
    assert record.seq == 7 and record.prev == records(rotated_files(path)[-1])[-1].hash
    assert verify_files(chain_order(tmp_path.iterdir()), hmac_key=None).records == 7


def test_a_record_is_never_split_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = open_log(path, rotate_bytes=700)
    for i in range(60):
        log.append("test.size", details={"padding": "x" * (i * 7)})
        if i % 4 == 0:
            log.flush(5)
    log.close()
    files = log.files()
    assert len(files) > 5
    for file in files:
        assert file.read_bytes().endswith(b"\n") or file.stat().st_size == 0
    assert verify_files(files, hmac_key=None).records == 60


def test_deleting_a_middle_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    rotate_into_files(path, 4)
    rotated = rotated_files(path)
    rotated[1].unlink()
    with pytest.raises(ChainBroken) as broken:
        verify_files(chain_order([*rotated_files(path), path]), hmac_key=None)
    assert (broken.value.seq, broken.value.why, broken.value.file) == (7, Why.SEQ_GAP, rotated[2])


def test_rotation_never_overwrites_a_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = open_log(path, rotate_bytes=1)
    squatter = tmp_path / "audit.log.000000000001"
    squatter.write_bytes(b"precious\n")  # e.g. restored from a backup while the daemon runs
    log.append("test.one")
    with pytest.raises(AuditUnavailable, match="exists already"):
        log.flush(5)
    log.close()
    assert squatter.read_bytes() == b"precious\n"


def age(path: Path, days: float) -> None:
    when = time.time() - days * DAY_S
    os.utime(path, (when, when))


def test_retention_at_open_deletes_only_old_rotated_files_from_the_oldest_end(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    rotate_into_files(path, 4)
    log = open_log(path)
    log.append("test.active")
    log.close()
    rotated = rotated_files(path)
    for file in (rotated[0], rotated[1], rotated[3], path):
        age(file, 40)  # rotated[2] is recent, so rotated[3] is kept although old: no hole in the chain
    expired_mtime = rotated[1].stat().st_mtime

    log = open_log(path, retention_days=30)
    log.close()
    assert rotated_files(path) == rotated[2:]
    expired = [r for r in records(path) if r.event == "audit.expired"]
    assert [r.details for r in expired] == [
        {"file": str(rotated[0]), "first_seq": 1, "last_seq": 3, "mtime": expired[0].details["mtime"]},
        {"file": str(rotated[1]), "first_seq": 4, "last_seq": 6, "mtime": expired[1].details["mtime"]},
    ]
    assert expired[1].details["mtime"].startswith(time.strftime("%Y-%m-%d", time.gmtime(expired_mtime)))
    report = verify_files(log.files(), hmac_key=None)
    assert report.starts_mid_chain and report.first_seq == 7 and report.last_seq == 15


def test_expire_old_files_on_demand_and_keep_forever(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    rotate_into_files(path, 3)
    rotated = rotated_files(path)
    for file in rotated:
        age(file, 10_000)
    forever = open_log(path, retention_days=None)
    assert forever.expire_old_files() == []
    forever.close()

    now = [time.time() - 20_000 * DAY_S]  # the log's clock: before the files were "written"
    log = open_log(path, retention_days=7, clock=lambda: now[0])
    assert rotated_files(path) == rotated
    now[0] = time.time()
    assert log.expire_old_files() == rotated
    log.close()
    assert rotated_files(path) == []
    assert [r.event for r in records(path)] == ["audit.expired"] * 3
    assert verify_files([path], hmac_key=None).starts_mid_chain


def test_hmac_chain_across_rotated_files_and_reopen(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "audit.log"
    rotate_into_files(path, 3, hmac_key=key)
    log = open_log(path, hmac_key=key)  # the active file is empty: the chain continues from the newest rotated
    log.append("test.after")
    log.close()
    files = log.files()
    assert verify_files(files, hmac_key=key).records == 10
    with pytest.raises(ChainBroken):
        verify_files(files, hmac_key=None)
    path.unlink()  # only rotated files left: the chain must continue from the newest, under the same key
    with pytest.raises(AuditUnavailable, match="does not verify"):
        open_log(path, hmac_key=os.urandom(32))
