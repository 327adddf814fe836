"""Params: parsed strictly, validated against the tool's schema, rejected with the JSON path — never rewritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandboxd.base.limits import Limits
from sandboxd.base.refusals import InvalidParams
from sandboxd.server.config import SHIPPED_HANDLERS_DIR, SHIPPED_TOOLS_DIR
from sandboxd.server.registry import encode_params_line, parse_params, validate_params
from sandboxd.server.tools import load_tools


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    state = tmp_path_factory.mktemp("state")
    (state / "files").mkdir()
    (state / "sqlite").mkdir()
    tools = load_tools([SHIPPED_TOOLS_DIR], placeholders={"handlers_dir": str(SHIPPED_HANDLERS_DIR),
                       "state_dir": str(state), "data_dir": str(Path())}, default_limits=Limits())
    return {name: tool.params_schema for name, tool in tools.items()}


def test_empty_params_are_an_empty_object() -> None:
    assert parse_params("") == {}
    assert parse_params("  ") == {}


@pytest.mark.parametrize(
    ("text", "reason"),
    [("[1]", "expected a JSON object"), ('"x"', "expected a JSON object"), ("{", "not valid JSON"),
     ('{"a": 1, "a": 2}', "duplicate key 'a'"), ('{"a": NaN}', "NaN is not JSON"),
     ('{"a": Infinity}', "Infinity is not JSON"), ('{"a": 1e999}', "out of range"),
     ("[" * 100_000 + "]" * 100_000, "nested too deeply")],
)
def test_strict_parsing(text: str, reason: str) -> None:
    with pytest.raises(InvalidParams, match=reason) as caught:
        parse_params(text)
    assert caught.value.reason == "INVALID_PARAMS"


def test_big_integers_survive_exactly() -> None:
    params = parse_params('{"n": 9007199254740993, "f": 0.1}')
    assert encode_params_line(params) == b'{"n":9007199254740993,"f":0.1}\n'


def test_params_line_is_one_line() -> None:
    line = encode_params_line({"code": "print(1)\nprint('ü')"})
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert json.loads(line) == {"code": "print(1)\nprint('ü')"}


@pytest.mark.parametrize(
    ("tool", "params", "path", "words"),
    [
        ("python", {}, "$", "'code' is a required property"),
        ("python", {"code": 42}, "$.code", "is not of type 'string'"),
        ("python", {"code": "x", "extra": 1}, "$", "Additional properties"),
        ("python", {"code": "x", "args": ["a", 2]}, "$.args[1]", "is not of type 'string'"),
        ("file_processor", {"operation": "delete", "path": "x"}, "$.operation", "is not one of"),
        ("file_processor", {"operation": "head", "path": "../etc/shadow"}, "$.path", "does not match"),
        ("file_processor", {"operation": "head", "path": "/etc/shadow"}, "$.path", "does not match"),
        ("file_processor", {"operation": "head", "path": "a/../../x"}, "$.path", "does not match"),
        ("file_processor", {"operation": "grep", "path": "x"}, "$", "'pattern' is a required property"),
        ("file_processor", {"operation": "head", "path": "x", "lines": 0}, "$.lines", "less than the minimum"),
        ("file_processor", {"operation": "count"}, "$", "'path' is a required property"),
        ("sqlite_query", {"sql": ""}, "$.sql", "should be non-empty"),
        ("sqlite_query", {"sql": "select 1", "params": [{"a": 1}]}, "$.params[0]", "is not of type"),
    ],
)
def test_schema_rejections_name_the_json_path(
    schemas: dict[str, Any], tool: str, params: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(InvalidParams) as caught:
        validate_params(params, schemas[tool])
    assert caught.value.json_path == path
    assert f"{path}: " in caught.value.message and words in caught.value.message, caught.value.message


@pytest.mark.parametrize(
    ("tool", "params"),
    [
        ("python", {"code": "print(1)", "args": ["a"]}),
        ("file_processor", {"operation": "list"}),
        ("file_processor", {"operation": "head", "path": "docs/a..b.txt", "lines": 3}),
        ("file_processor", {"operation": "json_query", "path": "x.json", "query": "a.b[0]"}),
        ("sqlite_query", {"sql": "select ?", "params": [1, "x", None, True, 2.5], "max_rows": 5}),
    ],
)
def test_valid_params_pass(schemas: dict[str, Any], tool: str, params: dict[str, Any]) -> None:
    validate_params(params, schemas[tool])


def test_several_errors_are_reported() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    with pytest.raises(InvalidParams) as caught:
        validate_params({"a": 1, "b": "x"}, schema)
    assert "$.a" in caught.value.message and "$.b" in caught.value.message


def test_a_schema_refering_outside_itself_is_not_fetched() -> None:
    """A "$ref" to a URL fails the check instead of making the daemon fetch it (a sandboxed MCP server's
    inputSchema must not steer the daemon's own network)."""
    schema = {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/definitions.json"}}}
    with pytest.raises(InvalidParams, match="not resolved"):
        validate_params({"a": 1}, schema)
