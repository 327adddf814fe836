"""Parameter constraints on grants: which params a grant admits, what a refusal names, and a broken constraint
refused at load naming the file and the key."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest

from sandboxd.api.status import status_for
from sandboxd.base.errors import ConfigError
from sandboxd.base.limits import Limits
from sandboxd.base.refusals import GrantExpired, ParamsNotGranted, RateLimited
from sandboxd.base.toml import TomlTable
from sandboxd.policy.auth import Identity
from sandboxd.policy.config import parse_policy
from sandboxd.policy.constraints import ParamsConstraint
from sandboxd.policy.decisions import Decision, Policy

FILE = "/etc/sandboxd/sandboxd.toml"
TOOL = Limits(wall_time_ms=30_000)

CONFIG = r"""
[auth]
unix_socket_principal = ""

[principals.alice]
roles = ["analyst"]

[roles.analyst]
rate_per_minute = 60
burst = 1
[[roles.analyst.tools]]
name = "file_processor"
params = { properties = { path = { pattern = "^reports/" } }, required = ["path"] }
[[roles.analyst.tools]]
name = "sqlite_query"
params = { properties = { sql = { pattern = "(?i)^\\s*select\\b" } } }

[[roles.nested.tools]]
name = "file_processor"
params.properties.options = { properties = { mode = { enum = ["read"] } } }

[roles.reader]
tools = ["file_processor"]

[roles.archive]
tools = [{ name = "file_processor", params = { properties = { path = { pattern = "^archive/" } } } }]

[roles.old]
tools = [{ name = "file_processor", expires = 2001-01-01T00:00:00Z }]
"""


def parse(text: str) -> Any:
    top = TomlTable(tomllib.loads(text), file=FILE)
    policy = parse_policy(top)
    top.finish()
    return policy


def make() -> Policy:
    return Policy(parse(CONFIG), clock=lambda: 1.9e9, monotonic=lambda: 1000.0)


def who(*roles: str) -> Identity:
    return Identity("alice", roles, "static-token")


def decide(policy: Policy, identity: Identity, tool: str, params: dict[str, Any] | None) -> Decision:
    return policy.decide(identity, tool=tool, requested=None, tool_limits=TOOL, payload_bytes=10, params=params)


def refused(policy: Policy, identity: Identity, tool: str, params: dict[str, Any]) -> ParamsNotGranted:
    with pytest.raises(ParamsNotGranted) as caught:
        decide(policy, identity, tool, params)
    return caught.value


@pytest.mark.parametrize("path", ["reports/q1.csv", "reports/2026/summary.txt"])
def test_a_path_the_constraint_admits_is_allowed(path: str) -> None:
    decision = decide(make(), who("analyst"), "file_processor", {"path": path})
    assert (decision.role, decision.grant) == ("analyst", "roles.analyst.tools[0]")
    assert decision.audit_details() == {"grant": "roles.analyst.tools[0]"}


@pytest.mark.parametrize("params", [{"path": "etc/passwd"}, {"path": "../reports/x"}, {"path": " reports/x"}])
def test_a_path_outside_it_is_refused_naming_the_path_and_the_rule(params: dict[str, Any]) -> None:
    error = refused(make(), who("analyst"), "file_processor", params)
    assert (error.reason, error.json_path, error.rule, error.role) == (
        "PARAMS_NOT_GRANTED", "$.path", "properties.path.pattern", "analyst")
    assert status_for(error).name == "PERMISSION_DENIED"
    assert "$.path:" in error.message and "'^reports/'" in error.message
    assert "roles.analyst.tools[0].params" in error.message
    assert error.audit_details() == {"json_path": "$.path", "rule": "properties.path.pattern"}


def test_a_required_key_left_out_is_refused() -> None:
    error = refused(make(), who("analyst"), "file_processor", {})
    assert (error.json_path, error.rule) == ("$", "required")


@pytest.mark.parametrize("sql", ["select * from sales", "SELECT 1", "  Select name from t where x = 'drop'"])
def test_select_statements_are_allowed(sql: str) -> None:
    assert decide(make(), who("analyst"), "sqlite_query", {"sql": sql}).role == "analyst"


@pytest.mark.parametrize("sql", ["DELETE FROM sales", "drop table sales", "selective nonsense", "with x as (select 1)"])
def test_other_sql_is_refused(sql: str) -> None:
    error = refused(make(), who("analyst"), "sqlite_query", {"sql": sql})
    assert (error.json_path, error.rule) == ("$.sql", "properties.sql.pattern")


def test_nested_properties_name_the_nested_path() -> None:
    policy = make()
    assert decide(policy, who("nested"), "file_processor", {"options": {"mode": "read"}}).role == "nested"
    error = refused(policy, who("nested"), "file_processor", {"options": {"mode": "write"}})
    assert (error.json_path, error.rule) == ("$.options.mode", "properties.options.properties.mode.enum")


def test_grants_add_up_and_the_admitting_grant_decides() -> None:
    policy = make()
    # a constrained role first, then an unconstrained one: the second admits what the first does not
    decision = decide(policy, who("analyst", "reader"), "file_processor", {"path": "etc/passwd"})
    assert (decision.role, decision.grant) == ("reader", "roles.reader.tools[0]")
    assert decide(policy, who("analyst", "reader"), "file_processor", {"path": "reports/a"}).role == "analyst"
    # two constraints: either admits
    assert decide(policy, who("analyst", "archive"), "file_processor", {"path": "archive/a"}).role == "archive"
    refused(policy, who("analyst", "archive"), "file_processor", {"path": "tmp/a"})


def test_the_closest_refusal_wins_over_an_expired_grant() -> None:
    policy = make()
    error = refused(policy, who("old", "analyst"), "file_processor", {"path": "etc/passwd"})
    assert error.role == "analyst"
    with pytest.raises(GrantExpired):
        decide(policy, who("old"), "file_processor", {"path": "etc/passwd"})


def test_a_refused_constraint_costs_no_token_of_the_decision() -> None:
    policy = make()  # burst 1: one token
    for _ in range(3):
        refused(policy, who("analyst"), "sqlite_query", {"sql": "delete from t"})
    assert decide(policy, who("analyst"), "sqlite_query", {"sql": "select 1"}).role == "analyst"
    with pytest.raises(RateLimited):
        decide(policy, who("analyst"), "sqlite_query", {"sql": "select 1"})


def test_without_params_the_grant_alone_is_checked() -> None:
    """A session's creation (each call in it is decided with its params) and check_grant look at no params."""
    policy = make()
    assert decide(policy, who("analyst"), "file_processor", None).role == "analyst"
    policy.check_grant(who("analyst"), "file_processor")


def test_what_the_caller_is_held_to() -> None:
    policy = make()
    assert policy.params_constraint(who("analyst"), "file_processor") == {
        "properties": {"path": {"pattern": "^reports/"}}, "required": ["path"]}
    assert policy.params_constraint(who("analyst", "reader"), "file_processor") is None
    either = policy.params_constraint(who("analyst", "archive"), "file_processor")
    assert either is not None and len(either["anyOf"]) == 2
    assert policy.params_constraint(who("old"), "file_processor") is None  # nothing usable: nothing shown
    assert policy.visible_tools(who("analyst"), ["file_processor", "python", "sqlite_query"]) == [
        "file_processor", "sqlite_query"]


def test_the_parsed_grant_keeps_the_schema() -> None:
    [grant, _] = parse(CONFIG).roles["analyst"].tools
    assert grant.params == ParamsConstraint.compile(
        {"properties": {"path": {"pattern": "^reports/"}}, "required": ["path"]})
    assert json.loads(grant.params.to_json())["required"] == ["path"]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ('{ properties = { path = { pattern = "(" } } }', "not a valid JSON Schema at properties.path.pattern"),
        ('{ properties = 3 }', "not a valid JSON Schema at properties"),
        ('{ type = "objekt" }', "not a valid JSON Schema at type"),
        ('{ properties = { path = { "$ref" = "https://example.com/s.json" } } }', "points outside the constraint"),
        ('{ properties = { when = { const = 2027-01-01T00:00:00Z } } }', "holds a value JSON has not"),
        ('"^reports/"', "expected a table holding a JSON Schema"),
    ],
)
def test_a_broken_constraint_is_refused_naming_file_and_key(params: str, says: str) -> None:
    text = '[auth]\nunix_socket_principal = ""\n[roles.r]\n'
    text += f'tools = ["python", {{ name = "sqlite_query", params = {params} }}]\n'
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert caught.value.message.startswith(f"{FILE}: roles.r.tools[1].params: "), caught.value.message
    assert says in caught.value.message, caught.value.message


def test_nothing_is_fetched_for_a_ref() -> None:
    constraint = ParamsConstraint.compile(
        {"$defs": {"report": {"pattern": "^reports/"}}, "properties": {"path": {"$ref": "#/$defs/report"}}})
    assert constraint.violation({"path": "reports/a"}) is None
    violation = constraint.violation({"path": "etc/a"})
    assert violation is not None and violation.json_path == "$.path"
