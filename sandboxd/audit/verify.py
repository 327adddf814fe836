"""Checking a chain of audit files offline: every hash, every seq, every link, in order.

:func:`verify_files` raises :class:`ChainBroken` at the first problem, naming the seq, the file, the line and
why; a clean run returns a :class:`VerifyReport`. What each ``why`` means:

=========================  =============================================================================
malformed line             not a record, or not in the canonical form the log writes
hash mismatch              the record was edited, forged, or the key is not the log's
seq gap                    seq jumped forward: records (or a whole file) were dropped, or moved later
seq not increasing         seq went back or repeated: records were reordered, duplicated or inserted
prev mismatch              the record does not follow the one before it: dropped, inserted or reordered
torn last line             a file ends inside a line (a crash the daemon has not repaired yet)
=========================  =============================================================================

The first record checked may start mid-chain (an older file expired, or a suffix was exported): then its
``prev`` cannot be checked, and the report says ``starts_mid_chain``. A plain SHA-256 chain proves only that
the records are consistent; with the HMAC key, also that they were written by the holder of the key.
Records cut off the very end leave no trace in the files themselves.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sandboxd.audit.reader import chain_order
from sandboxd.audit.record import ZERO_HASH, AuditRecord, MalformedRecord
from sandboxd.base.errors import SandboxError

__all__ = ["ChainBroken", "VerifyReport", "Why", "chain_order", "verify_files"]


class Why(enum.StrEnum):
    MALFORMED = "malformed line"
    HASH_MISMATCH = "hash mismatch (record edited or forged, or the wrong key)"
    SEQ_GAP = "seq gap (records dropped or moved)"
    SEQ_NOT_INCREASING = "seq not increasing (records reordered, duplicated or inserted)"
    PREV_MISMATCH = "prev mismatch (records dropped, inserted or reordered)"
    TORN = "torn last line (the file ends inside a record)"


class ChainBroken(SandboxError):
    """The first record that does not verify. ``seq`` is the seq the line holds, or — for a line that is
    not a record — the seq it should have held."""

    reason = "AUDIT_CHAIN_BROKEN"

    def __init__(self, seq: int, file: Path, line_no: int, why: Why, detail: str = "") -> None:
        text = f"{file}, line {line_no}, seq {seq}: {why}" + (f": {detail}" if detail else "")
        super().__init__(text)
        self.seq = seq
        self.file = file
        self.line_no = line_no
        self.why = why
        self.detail = detail


@dataclass(frozen=True)
class VerifyReport:
    records: int
    first_seq: int | None
    last_seq: int | None
    files: tuple[Path, ...]
    starts_mid_chain: bool
    keyed: bool

    def summary(self) -> str:
        if not self.records:
            return f"no records in {len(self.files)} file(s)"
        how = "HMAC-SHA256" if self.keyed else "SHA-256 (no key: consistency only)"
        start = (f"; starts mid-chain at seq {self.first_seq} (earlier records are not in these files)"
                 if self.starts_mid_chain else "")
        return (f"ok: {self.records} records, seq {self.first_seq}..{self.last_seq}, "
                f"{len(self.files)} file(s), {how}{start}")


class _Chain:
    """The running check: what the next record must look like."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.records = 0
        self.first_seq: int | None = None
        self.last_seq = 0
        self.last_hash = ZERO_HASH

    def check(self, line: bytes, file: Path, line_no: int) -> None:
        expected_seq = self.last_seq + 1
        if not line.endswith(b"\n"):
            raise ChainBroken(expected_seq, file, line_no, Why.TORN)
        try:
            record = AuditRecord.from_line(line)
        except MalformedRecord as exc:
            raise ChainBroken(expected_seq, file, line_no, Why.MALFORMED, str(exc)) from None
        if record.to_line().encode() != line:
            raise ChainBroken(record.seq, file, line_no, Why.MALFORMED, "not in canonical form")
        if not record.hash_matches(self.key):
            raise ChainBroken(record.seq, file, line_no, Why.HASH_MISMATCH)
        if self.first_seq is None:
            self.first_seq = record.seq  # a suffix of the chain may start anywhere; seq 1 must start it
            if record.seq == 1 and not hmac.compare_digest(record.prev, ZERO_HASH):
                raise ChainBroken(1, file, line_no, Why.PREV_MISMATCH, "the first record must have the zero prev")
        elif record.seq > expected_seq:
            raise ChainBroken(record.seq, file, line_no, Why.SEQ_GAP, f"expected seq {expected_seq}")
        elif record.seq < expected_seq:
            raise ChainBroken(record.seq, file, line_no, Why.SEQ_NOT_INCREASING, f"after seq {self.last_seq}")
        elif not hmac.compare_digest(record.prev, self.last_hash):
            raise ChainBroken(record.seq, file, line_no, Why.PREV_MISMATCH)
        self.records += 1
        self.last_seq = record.seq
        self.last_hash = record.hash


def verify_files(paths: Sequence[Path], *, hmac_key: bytes | None) -> VerifyReport:
    """Check ``paths``, given in chain order (see :func:`chain_order`), as one chain.

    Raises :class:`ChainBroken` at the first problem, OSError for a file that cannot be read.
    """
    chain = _Chain(hmac_key)
    for path in paths:
        with open(path, "rb") as file:
            for line_no, line in enumerate(file, start=1):
                chain.check(line, path, line_no)
    return VerifyReport(
        records=chain.records, first_seq=chain.first_seq, last_seq=chain.last_seq if chain.records else None,
        files=tuple(paths), starts_mid_chain=chain.first_seq is not None and chain.first_seq > 1,
        keyed=hmac_key is not None,
    )
