"""Every kind of tampering is caught at the right record, with the right reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sandboxd.audit.record import ZERO_HASH, AuditRecord, compute_hash
from sandboxd.audit.verify import ChainBroken, Why, verify_files
from sandboxd.audit.writer import AuditLog

KEY = os.urandom(32)


def build(path: Path, count: int = 10, key: bytes | None = None) -> list[bytes]:
    log = AuditLog.open(path, hmac_key=key, rotate_bytes=1 << 30, retention_days=None)
    for i in range(count):
        log.append("test.event", principal="alice", details={"i": i})
    log.close()
    return path.read_bytes().splitlines(keepends=True)


def broken(path: Path, key: bytes | None = None) -> ChainBroken:
    with pytest.raises(ChainBroken) as raised:
        verify_files([path], hmac_key=key)
    return raised.value


def forge(fields: dict[str, object], key: bytes | None) -> bytes:
    record = AuditRecord(**{**fields, "hash": compute_hash(fields, key)})  # type: ignore[arg-type]
    return record.to_line().encode()


def test_an_untouched_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    build(path)
    report = verify_files([path], hmac_key=None)
    assert (report.records, report.first_seq, report.last_seq, report.starts_mid_chain) == (10, 1, 10, False)
    assert report.summary().startswith("ok: 10 records, seq 1..10, 1 file(s), SHA-256")


def test_edited_field(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path)
    lines[4] = lines[4].replace(b'"principal":"alice"', b'"principal":"mallory"')
    path.write_bytes(b"".join(lines))
    error = broken(path)
    assert (error.seq, error.line_no, error.why, error.file) == (5, 5, Why.HASH_MISMATCH, path)
    assert "hash mismatch" in str(error)


def test_dropped_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path)
    del lines[4]
    path.write_bytes(b"".join(lines))
    error = broken(path)
    assert (error.seq, error.line_no, error.why) == (6, 5, Why.SEQ_GAP)


def test_inserted_forged_record_in_a_plain_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path)
    fifth = json.loads(lines[4])
    fake = {**{k: v for k, v in fifth.items() if k != "hash"}, "seq": 6, "prev": fifth["hash"],
            "details": {"forged": True}}
    lines.insert(5, forge(fake, None))  # a perfect SHA-256 record: only the chain after it gives it away
    path.write_bytes(b"".join(lines))
    error = broken(path)
    assert (error.seq, error.line_no, error.why) == (6, 7, Why.SEQ_NOT_INCREASING)


def test_forged_record_with_plain_sha_in_an_hmac_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path, key=KEY)
    assert verify_files([path], hmac_key=KEY).keyed
    fifth = json.loads(lines[4])
    sixth = json.loads(lines[5])
    fake = {**{k: v for k, v in sixth.items() if k != "hash"}, "details": {"forged": True}}
    assert fake["prev"] == fifth["hash"]
    lines[5] = forge(fake, None)
    path.write_bytes(b"".join(lines))
    error = broken(path, KEY)
    assert (error.seq, error.line_no, error.why) == (6, 6, Why.HASH_MISMATCH)


def test_wrong_key_or_no_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    build(path, key=KEY)
    for key in (os.urandom(32), None):
        error = broken(path, key)
        assert (error.seq, error.line_no, error.why) == (1, 1, Why.HASH_MISMATCH)
    plain = tmp_path / "plain.log"
    build(plain)
    assert broken(plain, KEY).why is Why.HASH_MISMATCH


def test_swapped_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path)
    lines[3], lines[4] = lines[4], lines[3]
    path.write_bytes(b"".join(lines))
    error = broken(path)
    assert (error.seq, error.line_no, error.why) == (5, 4, Why.SEQ_GAP)


def test_duplicated_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path)
    lines.insert(5, lines[4])
    path.write_bytes(b"".join(lines))
    error = broken(path)
    assert (error.seq, error.line_no, error.why) == (5, 6, Why.SEQ_NOT_INCREASING)


def test_rechained_record_with_a_wrong_prev(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path)
    fake = {k: v for k, v in json.loads(lines[4]).items() if k != "hash"}
    fake["prev"] = "ab" * 32
    lines[4] = forge(fake, None)
    path.write_bytes(b"".join(lines))
    error = broken(path)
    assert (error.seq, error.line_no, error.why) == (5, 5, Why.PREV_MISMATCH)


def test_middle_of_a_file_cut_out_at_line_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path)
    path.write_bytes(b"".join(lines[:3] + lines[7:]))
    error = broken(path)
    assert (error.seq, error.line_no, error.why) == (8, 4, Why.SEQ_GAP)


def test_middle_of_a_file_cut_out_mid_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    data = b"".join(build(path))
    third = len(data) // 3
    path.write_bytes(data[:third] + data[2 * third:])
    error = broken(path)
    assert error.why in (Why.MALFORMED, Why.HASH_MISMATCH)
    assert error.line_no == data[:third].count(b"\n") + 1


def test_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path)
    path.write_bytes(b"".join(lines) + lines[0][:40])
    error = broken(path)
    assert (error.seq, error.line_no, error.why) == (11, 11, Why.TORN)


def test_malformed_and_non_canonical_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path)
    path.write_bytes(b"".join([*lines[:2], b"garbage\n", *lines[2:]]))
    error = broken(path)
    assert (error.seq, error.line_no, error.why) == (3, 3, Why.MALFORMED)
    spaced = json.dumps(json.loads(lines[2]), sort_keys=True).encode() + b"\n"  # same content, ", " and ": "
    path.write_bytes(b"".join([*lines[:2], spaced, *lines[3:]]))
    error = broken(path)
    assert (error.seq, error.why, error.detail) == (3, Why.MALFORMED, "not in canonical form")


def test_a_suffix_of_the_chain_verifies_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path)
    suffix = tmp_path / "suffix.log"
    suffix.write_bytes(b"".join(lines[3:]))
    report = verify_files([suffix], hmac_key=None)
    assert (report.records, report.first_seq, report.starts_mid_chain) == (7, 4, True)
    assert "starts mid-chain at seq 4" in report.summary()


def test_seq_one_must_have_the_zero_prev(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = build(path, count=1)
    fake = {k: v for k, v in json.loads(lines[0]).items() if k != "hash"}
    assert fake["prev"] == ZERO_HASH
    fake["prev"] = "cd" * 32
    path.write_bytes(forge(fake, None))
    assert broken(path).why is Why.PREV_MISMATCH


def test_no_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    report = verify_files([path], hmac_key=None)
    assert (report.records, report.first_seq, report.last_seq) == (0, None, None)
    assert report.summary() == "no records in 1 file(s)"
