"""The record line: canonical JSON, its hash (plain and keyed), and clear errors for lines that are not records."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from datetime import UTC, datetime

import pytest

from sandboxd.audit.record import ZERO_HASH, AuditRecord, MalformedRecord, canonical_json, compute_hash, format_time

KEY = b"k" * 32


def make(**overrides: object) -> AuditRecord:
    fields: dict[str, object] = {"seq": 1, "unix_time_s": 1_790_000_000.25, "event": "decision", "prev": ZERO_HASH,
                                 "key": None, "principal": "alice", "details": {"outcome": "allowed"}}
    fields.update(overrides)
    return AuditRecord.create(**fields)  # type: ignore[arg-type]


def test_line_is_compact_sorted_utf8_json_with_newline() -> None:
    record = make(principal="zoë", details={"b": 1, "a": [1.5, None]})
    line = record.to_line()
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.startswith('{"details":{"a":[1.5,null],"b":1},"event":"decision","execution_id":"","hash":"')
    assert '"principal":"zoë"' in line  # not \u escaped
    assert list(json.loads(line)) == sorted(json.loads(line))
    assert record.time == "2026-09-21T14:13:20.250000Z"


def test_hash_is_sha256_of_the_canonical_record_without_hash() -> None:
    record = make()
    without_hash = {key: value for key, value in record.fields().items() if key != "hash"}
    payload = canonical_json(without_hash).encode()
    assert record.hash == hashlib.sha256(payload).hexdigest()
    keyed = make(key=KEY)
    assert keyed.hash == hmac.new(KEY, payload, hashlib.sha256).hexdigest()
    assert compute_hash(record.fields(), None) == record.hash  # ``hash`` itself is left out
    assert record.hash_matches(None) and not record.hash_matches(KEY)
    assert keyed.hash_matches(KEY) and not keyed.hash_matches(None)


@pytest.mark.parametrize("key", [None, KEY])
@pytest.mark.parametrize("texts", [
    {},
    {"principal": 'quo"te\\back\nline\ttab\x00nul\x7f', "tool": "zoë 工具 🙂", "request_id": "\u2028"},
    {"principal": "bad\ud800name", "execution_id": "e\udfff", "details": {"x": "\udcff", "y": ["\ud83d"]}},
    {"details": {"z": {"b": [1, 2.5, None, True], "a": "é"}, "A": -0.0, "n": 10**30, "": {}}},
])
def test_the_line_and_hash_are_the_canonical_json_of_the_fields(key: bytes | None, texts: dict[str, object]) -> None:
    """The line is spelled by hand for speed: it must be what canonical_json spells, and hash as it does."""
    record = make(**{"key": key, "tool": "t", "execution_id": "e-1", "request_id": "r", "seq": 123456, **texts})
    assert record.to_line() == canonical_json(record.fields()) + "\n"
    assert record.hash == compute_hash(record.fields(), key)
    assert record.details_json == canonical_json(record.details)
    assert AuditRecord.from_line(record.to_line()) == record


def test_time_is_spelled_as_datetime_spells_it() -> None:
    rng = random.Random(7)
    moments = [1_790_000_000.0, 1_790_000_000.9999996, 1_790_000_000.9999994, 1_790_000_059.5000005, 0.0]
    moments += [rng.uniform(1.6e9, 2.2e9) for _ in range(2000)]
    for moment in moments:  # the cached second must not leak into the next one
        expected = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert format_time(moment) == expected, moment


def test_round_trip() -> None:
    record = make(tool="fmt", execution_id="e-1", request_id="r-1", details={"n": {"deep": [1, "x"]}})
    assert AuditRecord.from_line(record.to_line()) == record
    assert AuditRecord.from_line(record.to_line().encode()) == record


def test_details_are_a_json_copy() -> None:
    details: dict[str, object] = {"list": [1, 2]}
    record = make(details=details)
    details["list"] = "changed"
    assert record.details == {"list": [1, 2]}
    assert record.hash_matches(None)


def test_lone_surrogates_are_replaced_not_refused() -> None:
    record = make(principal="bad\ud800name", details={"x": "\udcff"})
    assert record.principal == "bad?name"
    assert AuditRecord.from_line(record.to_line()) == record


@pytest.mark.parametrize("details", [{"x": float("nan")}, {"x": object()}])
def test_details_must_be_json(details: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not JSON"):
        make(details=details)


def test_event_must_be_a_non_empty_string() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        make(event="")
    with pytest.raises(TypeError, match="principal must be a string"):
        make(principal=5)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "not json", "not a JSON line"),
        (lambda d: "[1, 2]", "not a JSON object"),
        (lambda d: {k: v for k, v in d.items() if k != "tool"}, r"missing \['tool'\]"),
        (lambda d: {**d, "extra": 1}, r"unexpected \['extra'\]"),
        (lambda d: {**d, "seq": 0}, "seq must be a positive integer"),
        (lambda d: {**d, "seq": True}, "seq must be a positive integer"),
        (lambda d: {**d, "principal": None}, "principal must be a string"),
        (lambda d: {**d, "details": []}, "details must be an object"),
        (lambda d: {**d, "prev": "ABC"}, "prev must be 64 lowercase hex"),
        (lambda d: {**d, "time": "yesterday"}, "time must be like"),
    ],
)
def test_malformed_lines_say_what_is_wrong(mutate: object, message: str) -> None:
    fields = make().fields()
    changed = mutate(fields)  # type: ignore[operator]
    line = changed if isinstance(changed, str) else json.dumps(changed)
    with pytest.raises(MalformedRecord, match=message):
        AuditRecord.from_line(line)


def test_invalid_utf8_is_malformed() -> None:
    with pytest.raises(MalformedRecord, match="not a JSON line"):
        AuditRecord.from_line(b'{"a":"\xff"}\n')
