"""The record line: canonical JSON, its hash (plain and keyed), and clear errors for lines that are not records."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from sandboxd.audit.record import ZERO_HASH, AuditRecord, MalformedRecord, canonical_json, compute_hash

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
