"""Reading the files back: chain order, records since a time, the last N, filters, torn lines passed over."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from sandboxd.audit.reader import (
    RecordFilter,
    chain_order,
    iter_records,
    last_records,
    reverse_lines,
    rotated_files,
)
from sandboxd.audit.record import AuditRecord, MalformedRecord
from sandboxd.audit.writer import AuditLog

T0 = 1_790_000_000.0


def build(path: Path, count: int, *, rotate_bytes: int = 1 << 30) -> AuditLog:
    """``count`` records one second apart; flushed one by one, so tiny ``rotate_bytes`` rotate each time."""
    now = [T0]
    log = AuditLog.open(path, hmac_key=None, rotate_bytes=rotate_bytes, retention_days=None, clock=lambda: now[0])
    events = ("execution.started", "execution.finished", "decision")
    for i in range(count):
        log.append(events[i % 3], principal=f"p{i % 2}", tool=f"t{i % 4}", details={"i": i})
        log.flush(5)
        now[0] += 1
    log.close()
    return log


def test_chain_order() -> None:
    paths = [Path("/l/audit.log"), Path("/l/audit.log.000000000031"), Path("/l/audit.log.000000000002"),
             Path("/l/audit.log.000000000100")]
    assert chain_order(paths) == [Path("/l/audit.log.000000000002"), Path("/l/audit.log.000000000031"),
                                  Path("/l/audit.log.000000000100"), Path("/l/audit.log")]


def test_rotated_files_ignores_other_names(tmp_path: Path) -> None:
    for name in ("audit.log", "audit.log.000000000001", "audit.log.1", "audit.log.000000000009.bak", "x.log"):
        (tmp_path / name).write_bytes(b"")
    assert rotated_files(tmp_path / "audit.log") == [tmp_path / "audit.log.000000000001"]
    assert rotated_files(tmp_path / "missing" / "audit.log") == []


@pytest.mark.parametrize("data", [b"", b"a\n", b"a\nbb\n", b"a\nbb", b"\n\nx\n", b"x" * 200_000 + b"\ny\n"])
def test_reverse_lines(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        got = list(reverse_lines(fd, len(data)))
    finally:
        os.close(fd)
    expected_lines = data.splitlines(keepends=True)
    offsets = [sum(len(line) for line in expected_lines[:i]) for i in range(len(expected_lines))]
    assert got == list(zip(offsets, expected_lines, strict=True))[::-1]


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5])
def test_reverse_lines_at_every_chunk_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               chunk_bytes: int) -> None:
    monkeypatch.setattr("sandboxd.audit.reader._CHUNK_BYTES", chunk_bytes)
    rng = random.Random(chunk_bytes)
    for _ in range(200):
        data = bytes(rng.choice(b"ab\n") for _ in range(rng.randrange(0, 12)))
        (tmp_path / "f").write_bytes(data)
        fd = os.open(tmp_path / "f", os.O_RDONLY)
        try:
            got = [line for _, line in reverse_lines(fd, len(data))]
        finally:
            os.close(fd)
        assert got == data.splitlines(keepends=True)[::-1], data


def test_iter_records_across_files_and_since(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = build(path, 20, rotate_bytes=800)
    files = log.files()
    assert len(files) > 3
    assert [r.seq for r in iter_records(files)] == list(range(1, 21))
    assert [r.seq for r in iter_records(files, since=T0 + 14)] == list(range(15, 21))
    assert list(iter_records(files, since=T0 + 100)) == []


def test_a_torn_last_line_is_passed_over_and_a_vanished_file_too(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    build(path, 3)
    with open(path, "ab") as file:
        file.write(b'{"details":')
    assert [r.seq for r in iter_records([tmp_path / "gone.log", path])] == [1, 2, 3]
    assert [r.seq for r in last_records([path, tmp_path / "gone.log"], 2)] == [2, 3]


def test_a_bad_line_in_the_middle_raises(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    build(path, 3)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"nonsense\n" + lines[1])
    with pytest.raises(MalformedRecord, match="line 2"):
        list(iter_records([path]))


def test_last_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = build(path, 30, rotate_bytes=800)
    files = log.files()
    assert [r.seq for r in last_records(files, 5)] == [26, 27, 28, 29, 30]
    assert [r.seq for r in last_records(files, 100)] == list(range(1, 31))
    assert last_records(files, 0) == []
    finished = last_records(files, 4, record_filter=RecordFilter(events=("execution.finished",)))
    assert [r.seq for r in finished] == [20, 23, 26, 29]


def record(event: str, principal: str = "alice", tool: str = "fmt") -> AuditRecord:
    return AuditRecord.create(seq=1, unix_time_s=T0, event=event, prev="0" * 64, key=None, principal=principal,
                              tool=tool)


def test_record_filter() -> None:
    assert RecordFilter().matches(record("anything"))
    assert RecordFilter(principals=("alice", "bob")).matches(record("x", principal="bob"))
    assert not RecordFilter(principals=("alice",)).matches(record("x", principal="bob"))
    assert not RecordFilter(tools=("grep",)).matches(record("x"))
    for wanted in ("execution.", "execution", "execution.finished"):
        assert RecordFilter(events=(wanted,)).matches(record("execution.finished"))
    assert not RecordFilter(events=("execution.",)).matches(record("executions.x"))
    assert not RecordFilter(events=("exec",)).matches(record("execution.finished"))
    assert not RecordFilter(events=("execution.started",)).matches(record("execution.finished"))
    both = RecordFilter(principals=("alice",), events=("decision",))
    assert both.matches(record("decision")) and not both.matches(record("decision", principal="eve"))
