"""Opening a log a crash left behind: a torn tail is cut, the cut is audited, and the chain still verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandboxd.audit.record import AuditRecord
from sandboxd.audit.verify import verify_files
from sandboxd.audit.writer import AuditLog, AuditUnavailable


def open_log(path: Path, **options: Any) -> AuditLog:
    settings: dict[str, Any] = {"hmac_key": None, "rotate_bytes": 1 << 30, "retention_days": None}
    settings.update(options)
    return AuditLog.open(path, **settings)


def write_records(path: Path, count: int, key: bytes | None = None) -> None:
    log = open_log(path, hmac_key=key)
    for i in range(count):
        log.append("test.before_crash", details={"i": i})
    log.close()


def records(path: Path) -> list[AuditRecord]:
    return [AuditRecord.from_line(line) for line in path.read_bytes().splitlines(keepends=True)]


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        (b'{"details":{"i":5},"event":"test.bef', "a write cut short"),
        (b"\0" * 300, "blocks the file system never wrote"),
        (b'{"not":"a record"}\n', "a complete line that is no record"),
        (b'{"details":{}}\n{"half', "a bad line and a cut one"),
    ],
)
def test_torn_tail_is_cut_and_audited(tmp_path: Path, tail: bytes, why: str) -> None:
    path = tmp_path / "audit.log"
    write_records(path, 5)
    good_size = path.stat().st_size
    with open(path, "ab") as file:
        file.write(tail)
    log = open_log(path)
    repaired = log.append("test.after_crash")
    log.close()
    stored = records(path)
    assert [r.event for r in stored][-2:] == ["audit.repaired", "test.after_crash"], why
    details = stored[5].details
    assert details["file"] == str(path)
    assert details["bytes_removed"] == len(tail)
    assert details["removed_text_prefix"] == tail[:200].decode("utf-8", "backslashreplace")
    assert stored[5].seq == 6 and stored[5].prev == stored[4].hash and repaired.seq == 7
    assert path.read_bytes()[:good_size] == b"".join(r.to_line().encode() for r in stored[:5])
    assert verify_files([path], hmac_key=None).records == 7


def test_last_record_with_a_wrong_hash_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_records(path, 3)
    data = path.read_bytes().splitlines(keepends=True)
    data[-1] = data[-1].replace(b'"i":2', b'"i":9')
    path.write_bytes(b"".join(data))
    log = open_log(path)
    log.close()
    stored = records(path)
    assert [r.seq for r in stored] == [1, 2, 3] and stored[2].event == "audit.repaired"
    assert stored[2].details["bytes_removed"] == len(data[-1])
    assert verify_files([path], hmac_key=None).records == 3


def test_two_bad_records_are_damage_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_records(path, 4)
    before = path.read_bytes()
    path.write_bytes(before.replace(b'"i":2', b'"i":7').replace(b'"i":3', b'"i":8'))
    with pytest.raises(AuditUnavailable, match=r"last two records .* do not verify.*sandboxctl audit verify"):
        open_log(path)
    assert len(path.read_bytes()) == len(before)  # evidence kept


def test_a_changed_key_is_refused_not_repaired(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_records(path, 3)  # plain SHA-256
    with pytest.raises(AuditUnavailable, match="with this key"):
        open_log(path, hmac_key=b"k" * 32)


def test_only_a_torn_line_in_an_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b'{"det')
    log = open_log(path)
    log.close()
    stored = records(path)
    assert [(r.seq, r.event) for r in stored] == [(1, "audit.repaired")]
    assert log.repaired == stored[0].details
    assert verify_files([path], hmac_key=None).records == 1
