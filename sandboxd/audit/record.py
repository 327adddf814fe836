"""One audit record: its line format and its hash.

A record is one line of compact JSON with sorted keys, UTF-8, ending in ``"\\n"``::

    {"details":{…},"event":"decision","execution_id":"…","hash":"…","prev":"…","principal":"…",
     "request_id":"…","seq":42,"time":"2026-11-21T08:00:00.123456Z","tool":"…"}

``hash`` is SHA-256 (or HMAC-SHA256 under the configured key) of the canonical JSON of every other field,
and ``prev`` is the ``hash`` of the record before (64 zeros before the first record ever), so editing,
dropping, inserting or reordering a record breaks the chain at that point. With a key, a forger who can
write the file still cannot compute a hash that verifies.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

ZERO_HASH = "0" * 64
HASH_FIELD = "hash"
FIELDS = ("details", "event", "execution_id", "hash", "prev", "principal", "request_id", "seq", "time", "tool")
TEXT_FIELDS = ("event", "principal", "tool", "execution_id", "request_id")

_HEX_HASH = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class MalformedRecord(ValueError):
    """A line that is not an audit record: not JSON, a missing or extra key, a value of the wrong type."""


# One encoder, built once: json.dumps with options builds a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    """The one spelling that is hashed and stored: sorted keys, no spaces, non-ASCII kept, no NaN."""
    return _CANONICAL.encode(value)


def compute_hash(fields: Mapping[str, Any], key: bytes | None) -> str:
    """Hex SHA-256 (HMAC-SHA256 with ``key``) of the canonical JSON of ``fields`` without ``hash``."""
    return _hash_payload(canonical_json({name: value for name, value in fields.items() if name != HASH_FIELD}).encode(),
                         key)


def _hash_payload(payload: bytes, key: bytes | None) -> str:
    if key is None:
        return hashlib.sha256(payload).hexdigest()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


_second_spelled: tuple[int, str] = (-1, "")  # the last whole second formatted: records come many a second


def format_time(unix_time_s: float) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-11-21T08:00:00.123456Z``."""
    global _second_spelled
    fraction, whole = math.modf(unix_time_s)  # rounded as datetime.fromtimestamp rounds
    second, micro = int(whole), round(fraction * 1_000_000)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    cached_second, spelled = _second_spelled
    if second != cached_second:
        spelled = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_spelled = (second, spelled)  # one tuple: a thread sees an old pair or a new one, never half
    return f"{spelled}.{micro:06d}Z"


def _json_copy(value: Any, what: str) -> tuple[Any, str]:
    """``value`` as it reads back from the log — a JSON copy, lone surrogates replaced by ``?`` — and its
    canonical JSON, which a UTF-8 file can hold.

    Storing the copy means the record a caller gets back, a subscriber receives and a reader parses are
    equal, and a later change to the caller's dict cannot change a record already hashed.
    """
    try:
        text = canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit {what} is not JSON (str keys, finite numbers): {exc}") from exc
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: read back as "?", so spelled again from what reads back
        copy = json.loads(text.encode("utf-8", "replace"))
        return copy, canonical_json(copy)
    return json.loads(text), text


def _utf8_safe(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot carry) replaced by ``?``."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True)
class AuditRecord:
    """One record as stored. ``details`` is a plain dict for JSON's sake: treat it as read-only."""

    seq: int
    time: str
    event: str
    principal: str
    tool: str
    execution_id: str
    request_id: str
    details: dict[str, Any] = field(hash=False)
    prev: str
    hash: str

    @classmethod
    def create(
        cls,
        *,
        seq: int,
        unix_time_s: float,
        event: str,
        prev: str,
        key: bytes | None,
        principal: str = "",
        tool: str = "",
        execution_id: str = "",
        request_id: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """A new record, chained to ``prev`` and hashed."""
        texts = {"event": event, "principal": principal, "tool": tool, "execution_id": execution_id,
                 "request_id": request_id}
        for name, text in texts.items():
            if not isinstance(text, str):
                raise TypeError(f"audit {name} must be a string, got {type(text).__name__}")
        fields: dict[str, Any] = {name: _utf8_safe(text) for name, text in texts.items()}
        if not event:
            raise ValueError("audit event must not be empty")
        details_copy, details_json = _json_copy(dict(details or {}), "details")
        fields.update(seq=seq, time=format_time(unix_time_s), prev=prev, details=details_copy)
        # The canonical JSON of the fields, spelled once by hand in sorted key order (the details already
        # spelled): the hash covers it without "hash", the line holds it with. Both equal canonical_json's,
        # which the tests check.
        string = encode_basestring  # a str's canonical JSON (what _CANONICAL.encode calls for one), no detour
        head = (f'{{"details":{details_json},"event":{string(fields["event"])},'
                f'"execution_id":{string(fields["execution_id"])},')
        tail = (f'"prev":{string(prev)},"principal":{string(fields["principal"])},'
                f'"request_id":{string(fields["request_id"])},"seq":{int(seq)},"time":"{fields["time"]}",'
                f'"tool":{string(fields["tool"])}}}')
        hashed = _hash_payload((head + tail).encode(), key)
        record = cls(**fields, hash=hashed)
        record.__dict__["_line"] = f'{head}"hash":"{hashed}",{tail}\n'
        record.__dict__["details_json"] = details_json
        return record

    @classmethod
    def from_line(cls, line: str | bytes) -> AuditRecord:
        """Parse one stored line (its ``"\\n"`` optional); :class:`MalformedRecord` says what is wrong."""
        try:
            text = line.decode("utf-8") if isinstance(line, bytes) else line
            data = json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedRecord(f"not a JSON line: {exc}") from None
        if not isinstance(data, dict):
            raise MalformedRecord(f"not a JSON object but {type(data).__name__}")
        keys = set(data)
        if keys != set(FIELDS):
            missing, extra = sorted(set(FIELDS) - keys), sorted(keys - set(FIELDS))
            raise MalformedRecord(f"wrong keys: missing {missing}, unexpected {extra}")
        seq = data["seq"]
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise MalformedRecord(f"seq must be a positive integer, got {seq!r}")
        for name in TEXT_FIELDS:
            if not isinstance(data[name], str):
                raise MalformedRecord(f"{name} must be a string, got {data[name]!r}")
        if not isinstance(data["details"], dict):
            raise MalformedRecord(f"details must be an object, got {data['details']!r}")
        for name in ("prev", "hash"):
            if not isinstance(data[name], str) or not _HEX_HASH.fullmatch(data[name]):
                raise MalformedRecord(f"{name} must be 64 lowercase hex digits, got {data[name]!r}")
        if not isinstance(data["time"], str) or not _TIME.fullmatch(data["time"]):
            raise MalformedRecord(f"time must be like 2026-11-21T08:00:00.000000Z, got {data['time']!r}")
        return cls(**data)

    def fields(self) -> dict[str, Any]:
        """Every field, ``hash`` included, as the JSON object stored."""
        return {name: getattr(self, name) for name in FIELDS}

    def to_line(self) -> str:
        return self._line

    @functools.cached_property
    def _line(self) -> str:  # a record is written, streamed and published: spelled once (by create, if new)
        return canonical_json(self.fields()) + "\n"

    @functools.cached_property
    def details_json(self) -> str:
        """``details`` as canonical JSON."""
        return canonical_json(self.details)

    def hash_matches(self, key: bytes | None) -> bool:
        return hmac.compare_digest(self.hash, compute_hash(self.fields(), key))

    @property
    def unix_time_s(self) -> float:
        return datetime.fromisoformat(self.time).timestamp()
