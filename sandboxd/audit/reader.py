"""Reading audit files: which files hold the chain and in what order, records forwards and backwards.

The active file is ``audit.log``; a rotated file is ``audit.log.<seq of its first record, 12 digits>``, so
lexical order is chain order. A line without its ``"\\n"`` at the end of a file is a write in progress or a
crash's torn write: readers skip it (:mod:`sandboxd.audit.verify` reports it), the writer repairs it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandboxd.audit.record import AuditRecord, MalformedRecord

SEQ_DIGITS = 12
_CHUNK_BYTES = 64 * 1024
_NUMBERED = re.compile(r"(?P<stem>.*)\.(?P<seq>\d+)")


def rotated_path(active: Path, first_seq: int) -> Path:
    return active.with_name(f"{active.name}.{first_seq:0{SEQ_DIGITS}d}")


def _chain_key(path: Path) -> tuple[str, str, int, int]:
    match = _NUMBERED.fullmatch(path.name)
    if match is None:
        return (str(path.parent), path.name, 1, 0)  # an active file comes after its rotated files
    return (str(path.parent), match["stem"], 0, int(match["seq"]))


def chain_order(paths: Iterable[Path]) -> list[Path]:
    """``audit.log.*`` by the number after the last dot, then ``audit.log`` itself."""
    return sorted(paths, key=_chain_key)


def rotated_files(active: Path) -> list[Path]:
    """The rotated files of ``active`` in chain order (not the active file)."""
    pattern = re.compile(re.escape(active.name) + rf"\.\d{{{SEQ_DIGITS}}}")
    try:
        names = [name for name in os.listdir(active.parent) if pattern.fullmatch(name)]
    except FileNotFoundError:
        return []
    return [active.parent / name for name in sorted(names)]


def open_for_reading(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)


def _nofollow(name: str, flags: int) -> int:
    return os.open(name, flags | os.O_NOFOLLOW)


def reverse_lines(fd: int, end: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` from the line ending at ``end`` back to the first; ``line`` keeps its ``"\\n"``."""
    later: list[bytes] = []  # the part of the current line read so far, last piece first
    position = end
    while position > 0:
        size = min(_CHUNK_BYTES, position)
        chunk = os.pread(fd, size, position - size)
        # chunk[:stop] is still to split. A "\n" ends the line it is in, so the first chunk's own last byte
        # (the end of the last line) is no boundary; any other "\n" starts a line right after it.
        stop = len(chunk)
        cut = chunk.rfind(b"\n", 0, stop - 1 if position == end else stop)
        position -= size
        while cut >= 0:
            yield position + cut + 1, chunk[cut + 1:stop] + b"".join(reversed(later))
            later = []
            stop = cut + 1
            cut = chunk.rfind(b"\n", 0, cut)
        later.append(chunk[:stop])
    if later:
        yield 0, b"".join(reversed(later))


def parse_verified(line: bytes, key: bytes | None) -> AuditRecord | None:
    """The record of ``line`` if the line is complete, well-formed and its hash verifies under ``key``."""
    if not line.endswith(b"\n"):
        return None
    try:
        record = AuditRecord.from_line(line)
    except MalformedRecord:
        return None
    return record if record.hash_matches(key) else None


@dataclass(frozen=True)
class GoodTail:
    """Where a file's records stop verifying: ``end`` is the byte after ``last``, the last good record."""

    end: int
    last: AuditRecord | None


def good_tail(fd: int, key: bytes | None) -> GoodTail:
    """The end of the good records, passing over what a crash can leave after them.

    A crash damages at most the end of the last write: bytes after the last ``"\\n"`` (a write cut short),
    and a last complete line that does not verify (blocks the file system had not written). A second bad
    line before that is no crash but damage, tampering or another key: :class:`MalformedRecord`.
    """
    end = os.fstat(fd).st_size
    lines = reverse_lines(fd, end)
    entry = next(lines, None)
    if entry is not None and not entry[1].endswith(b"\n"):
        end, entry = entry[0], next(lines, None)
    if entry is None:
        return GoodTail(end, None)
    last = parse_verified(entry[1], key)
    if last is not None:
        return GoodTail(end, last)
    before = next(lines, None)
    if before is None:
        return GoodTail(entry[0], None)
    last = parse_verified(before[1], key)
    if last is None:
        raise MalformedRecord(f"the last two records (from byte {before[0]}) do not verify"
                              f"{' with this key' if key is not None else ''}")
    return GoodTail(entry[0], last)


def first_line(path: Path) -> bytes:
    """The first line of ``path`` (with its ``"\\n"`` when it has one), ``b""`` for an empty file."""
    with open(path, "rb", opener=_nofollow) as file:
        return file.readline()


def last_record(path: Path) -> AuditRecord | None:
    """The last complete record of ``path``, ``None`` when it has none; a torn last line is passed over."""
    fd = open_for_reading(path)
    try:
        for _, line in reverse_lines(fd, os.fstat(fd).st_size):
            if line.endswith(b"\n"):
                return AuditRecord.from_line(line)
        return None
    finally:
        os.close(fd)


def seq_range(path: Path) -> tuple[int | None, int | None]:
    """The first and the last seq of ``path``; ``None`` for one that cannot be read."""
    try:
        first: int | None = AuditRecord.from_line(first_line(path)).seq
    except MalformedRecord:
        first = None
    try:
        last = last_record(path)
    except MalformedRecord:
        last = None
    return first, last.seq if last is not None else None


def file_records(path: Path) -> Iterator[AuditRecord]:
    """The records of one file in order; a torn last line is skipped, any other bad line raises."""
    with open(path, "rb", opener=_nofollow) as file:
        for line_no, line in enumerate(file, start=1):
            if not line.endswith(b"\n"):
                return
            try:
                yield AuditRecord.from_line(line)
            except MalformedRecord as exc:
                raise MalformedRecord(f"{path}, line {line_no}: {exc}") from None


def iter_records(paths: Sequence[Path], *, since: float | None = None) -> Iterator[AuditRecord]:
    """The records of ``paths`` (in the order given), those written at or after UNIX time ``since``.

    A file whose last record is older than ``since`` is passed over without reading the rest of it. A file
    gone since it was listed (expired, or the active file mid-rotation) is passed over too.
    """
    for path in paths:
        try:
            if since is not None:
                last = last_record(path)
                if last is None or last.unix_time_s < since:
                    continue
            for record in file_records(path):
                if since is None or record.unix_time_s >= since:
                    yield record
        except FileNotFoundError:
            continue


@dataclass(frozen=True)
class RecordFilter:
    """Which records a reader wants; an empty tuple lets every value through.

    An entry of ``events`` is an event name or a prefix: ``"execution."`` and ``"execution"`` both select
    ``execution.started``, ``execution.finished`` ….
    """

    principals: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    events: tuple[str, ...] = ()

    def matches(self, record: AuditRecord) -> bool:
        if self.principals and record.principal not in self.principals:
            return False
        if self.tools and record.tool not in self.tools:
            return False
        return not self.events or any(_event_matches(record.event, wanted) for wanted in self.events)


def _event_matches(event: str, wanted: str) -> bool:
    if event == wanted:
        return True
    prefix = wanted if wanted.endswith(".") else wanted + "."
    return event.startswith(prefix)


def last_records(paths: Sequence[Path], count: int, *, record_filter: RecordFilter | None = None) -> list[AuditRecord]:
    """The last ``count`` records of ``paths`` that match, oldest first, read backwards from the end."""
    found: list[AuditRecord] = []
    for path in reversed(paths):
        if len(found) >= count:
            break
        try:
            fd = open_for_reading(path)
        except FileNotFoundError:
            continue
        try:
            for offset, line in reverse_lines(fd, os.fstat(fd).st_size):
                if len(found) >= count:
                    break
                if not line.endswith(b"\n"):
                    continue
                try:
                    record = AuditRecord.from_line(line)
                except MalformedRecord as exc:
                    raise MalformedRecord(f"{path}, byte {offset}: {exc}") from None
                if record_filter is None or record_filter.matches(record):
                    found.append(record)
        finally:
            os.close(fd)
    found.reverse()
    return found
