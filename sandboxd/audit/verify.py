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
cut off the end            the chain's anchor names a later seq: records were cut off the end
anchored record differs    the record at the anchored seq has another hash: the chain was rewritten
=========================  =============================================================================

The first record checked may start mid-chain (an older file expired, or a suffix was exported): then its
``prev`` cannot be checked, and the report says ``starts_mid_chain``. A plain SHA-256 chain proves only that
the records are consistent; with the HMAC key, also that they were written by the holder of the key.
Records cut off the very end leave no trace in the files themselves: that is what an *anchor* is for — the
last seq and hash the daemon shipped outside itself (:mod:`sandboxd.audit.anchor`). Given the anchors, a
chain is checked against its instance's last one (the instance is the one its ``daemon.started`` records
name): the anchored seq must be there, with the anchored hash.

Several chains (a fleet's daemons, each with its own) are checked one by one: :func:`chains_of` tells them
apart — each directory given holds the chains of its logs, and the files given form one chain.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandboxd.audit.anchor import Anchor
from sandboxd.audit.reader import chain_order
from sandboxd.audit.record import ZERO_HASH, AuditRecord, MalformedRecord
from sandboxd.base.errors import SandboxError

__all__ = ["ChainBroken", "VerifyReport", "Why", "chain_order", "chains_of", "verify_files"]

_ROTATED = re.compile(r"(?P<stem>.+)\.\d{12}")


class Why(enum.StrEnum):
    MALFORMED = "malformed line"
    HASH_MISMATCH = "hash mismatch (record edited or forged, or the wrong key)"
    SEQ_GAP = "seq gap (records dropped or moved)"
    SEQ_NOT_INCREASING = "seq not increasing (records reordered, duplicated or inserted)"
    PREV_MISMATCH = "prev mismatch (records dropped, inserted or reordered)"
    TORN = "torn last line (the file ends inside a record)"
    CUT_OFF = "cut off the end (the anchor names a later seq: records were removed)"
    ANCHOR_MISMATCH = "anchored record differs (the chain was rewritten)"


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
        self.instance: str | None = None  # the daemon whose chain it is, when the records before said


@dataclass(frozen=True)
class VerifyReport:
    records: int
    first_seq: int | None
    last_seq: int | None
    files: tuple[Path, ...]
    starts_mid_chain: bool
    keyed: bool
    instance: str | None = None  # the daemon that wrote it, as its daemon.started records say
    anchor: Anchor | None = None  # the anchor it was checked against

    def summary(self) -> str:
        if not self.records:
            return f"no records in {len(self.files)} file(s)"
        how = "HMAC-SHA256" if self.keyed else "SHA-256 (no key: consistency only)"
        start = (f"; starts mid-chain at seq {self.first_seq} (earlier records are not in these files)"
                 if self.starts_mid_chain else "")
        anchored = "" if self.anchor is None else (
            f"; anchored at seq {self.anchor.seq} ({self.anchor.time_text})"
            if self.first_seq is not None and self.anchor.seq >= self.first_seq
            else f"; its anchor (seq {self.anchor.seq}) is before these files")
        return (f"ok: {self.records} records, seq {self.first_seq}..{self.last_seq}, "
                f"{len(self.files)} file(s), {how}{start}{anchored}")


class _Chain:
    """The running check: what the next record must look like."""

    def __init__(self, key: bytes | None, anchored_seqs: frozenset[int] = frozenset()) -> None:
        self.key = key
        self.records = 0
        self.first_seq: int | None = None
        self.last_seq = 0
        self.last_hash = ZERO_HASH
        self.instance: str | None = None
        self.anchored_seqs = anchored_seqs
        self.seen_at: dict[int, tuple[str, Path, int]] = {}  # anchored seq → the hash, file and line found

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
        if record.event == "daemon.started" and isinstance(record.details.get("instance"), str):
            self.instance = record.details["instance"]
        if record.seq in self.anchored_seqs:
            self.seen_at[record.seq] = (record.hash, file, line_no)

    def check_anchor(self, anchor: Anchor, last_file: Path, lines_in_last_file: int) -> None:
        """The anchored seq must be in the chain with the anchored hash (unless it is before the first)."""
        if self.first_seq is not None and anchor.seq < self.first_seq:
            return  # expired by retention, or a suffix: nothing here to hold it to
        found = self.seen_at.get(anchor.seq)
        if found is None:
            raise ChainBroken(anchor.seq, last_file, lines_in_last_file + 1, Why.CUT_OFF,
                              f"the anchor of {anchor.time_text} names seq {anchor.seq}, the files end at seq "
                              f"{self.last_seq if self.records else 'none'}")
        hash_, file, line_no = found
        if not hmac.compare_digest(hash_, anchor.hash):
            raise ChainBroken(anchor.seq, file, line_no, Why.ANCHOR_MISMATCH,
                              f"the anchor of {anchor.time_text} has hash {anchor.hash[:16]}…")


def verify_files(paths: Sequence[Path], *, hmac_key: bytes | None,
                 anchors: Mapping[str, Anchor] | None = None) -> VerifyReport:
    """Check ``paths``, given in chain order (see :func:`chain_order`), as one chain; with ``anchors`` (the
    last of each instance), also against the anchor of the chain's instance.

    Raises :class:`ChainBroken` at the first problem, OSError for a file that cannot be read.
    """
    chain = _Chain(hmac_key, frozenset(anchor.seq for anchor in (anchors or {}).values()))
    line_no = 0
    try:
        for path in paths:
            line_no = 0
            with open(path, "rb") as file:
                for line_no, line in enumerate(file, start=1):
                    chain.check(line, path, line_no)
        anchor = (anchors or {}).get(chain.instance or "")
        if anchor is not None and paths:
            chain.check_anchor(anchor, paths[-1], line_no)
    except ChainBroken as broken:
        broken.instance = chain.instance
        raise
    return VerifyReport(
        records=chain.records, first_seq=chain.first_seq, last_seq=chain.last_seq if chain.records else None,
        files=tuple(paths), starts_mid_chain=chain.first_seq is not None and chain.first_seq > 1,
        keyed=hmac_key is not None, instance=chain.instance, anchor=anchor,
    )


def chains_of(paths: Sequence[Path]) -> list[tuple[str, list[Path]]]:
    """The chains ``paths`` hold, each with a label (its directory or file) and its files in chain order:
    a directory holds one chain per log in it (``NAME`` and its rotated ``NAME.<12 digits>``); the files
    given, together, one more."""
    chains: list[tuple[str, list[Path]]] = []
    loose: list[Path] = []
    for path in paths:
        if not path.is_dir():
            loose.append(path)
            continue
        by_log: dict[str, list[Path]] = {}
        for entry in sorted(path.iterdir()):
            if entry.is_file() and not entry.name.startswith("."):
                match = _ROTATED.fullmatch(entry.name)
                by_log.setdefault(match["stem"] if match else entry.name, []).append(entry)
        for name, files in sorted(by_log.items()):
            chains.append((str(path) if len(by_log) == 1 else str(path / name), chain_order(files)))
    if loose:
        chains.append((str(loose[0]) if len(loose) == 1 else f"{loose[0]} …", chain_order(loose)))
    return chains
