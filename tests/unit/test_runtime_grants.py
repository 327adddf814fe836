"""Runtime grants without a daemon: what a grant request must hold, the file that keeps them (written whole,
read back, a broken one refused naming it), and the policy deciding with them under the principal's role."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.base.limits import Limits
from sandboxd.base.refusals import GrantExpired, ParamsNotGranted, ToolNotGranted
from sandboxd.base.toml import TomlTable
from sandboxd.policy.auth import Identity
from sandboxd.policy.config import PolicyConfig, parse_policy
from sandboxd.policy.decisions import Policy
from sandboxd.policy.runtime_grants import FILE_NAME, RuntimeGrant, RuntimeGrants, new_grant

NOW = 1_900_000_000.0
TOOLS = ("reader", "sqlite_query", "python")

CONFIG = """
[auth]
unix_socket_principal = ""
[policy.grants]
max_ttl = "2h"
max_per_principal = 2
[principals.alice]
roles = ["analyst"]
[principals.ghost]
roles = []
[roles.analyst]
tools = ["reader"]
[roles.analyst.ceilings]
memory = "64M"
"""


def config() -> PolicyConfig:
    top = TomlTable(tomllib.loads(CONFIG), file="/etc/sandboxd/sandboxd.toml")
    policy = parse_policy(top)
    top.finish()
    return policy


def make(**asked: Any) -> RuntimeGrant:
    fields: dict[str, Any] = {"principal": "alice", "tool": "sqlite_query", "params_json": "", "expires_at": None,
                              "ttl_ms": 3_600_000, "reason": "incident 42", **asked}
    return new_grant(**fields, created_by="local-admin", now=NOW, policy=config(), tool_names=TOOLS,
                     tool_prefixes=["docs__"])


def test_a_grant_as_asked() -> None:
    grant = make(params_json='{"properties": {"sql": {"pattern": "^select"}}}')
    assert (grant.principal, grant.tool, grant.expires_at, grant.created_by, grant.reason) == (
        "alice", "sqlite_query", NOW + 3600, "local-admin", "incident 42")
    assert grant.grant_id.startswith("g-") and grant.params is not None
    assert make(ttl_ms=0, expires_at=NOW + 60).expires_at == NOW + 60
    assert make(principal="jwt:bob@example.com", tool="sql*").principal == "jwt:bob@example.com"
    assert make(tool="docs__search").tool == "docs__search"  # a sandboxed MCP server's tool, learnt at run time


@pytest.mark.parametrize(("asked", "says"), [
    ({"ttl_ms": 0}, "exactly one of expires_at and ttl_ms: a runtime grant must expire"),
    ({"expires_at": NOW + 60}, "exactly one of expires_at and ttl_ms"),
    ({"ttl_ms": 0, "expires_at": NOW - 1}, "not in the future"),
    ({"ttl_ms": 3 * 3_600_000}, "more than [policy.grants] max_ttl (7200 s)"),
    ({"principal": "alcie"}, "no principal named 'alcie' (configured: alice, ghost"),
    ({"principal": "jwt:"}, "a JWT's subject is jwt:SUB"),
    ({"tool": "nope"}, "'nope' matches no tool (tools: python, reader, sqlite_query)"),
    ({"tool": "Bad Tool"}, "is not a tool name or glob"),
    ({"params_json": "{"}, "params_constraint_json:"),
    ({"params_json": '{"properties": {"sql": {"pattern": "("}}}'}, "not a valid JSON Schema at properties.sql"),
    ({"reason": "x" * 501}, "reason: at most 500 characters"),
])
def test_what_a_grant_must_hold(asked: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError) as caught:
        make(**asked)
    assert says in str(caught.value), caught.value


def test_the_file_keeps_them(tmp_path: Path) -> None:
    store = RuntimeGrants.load(tmp_path)
    assert store.all() == [] and not (tmp_path / FILE_NAME).exists()
    one, two = make(), make(tool="python", params_json='{"required": ["code"]}')
    grants = store.replaced(add=one)
    store.persist(grants)
    store.install(grants)
    grants = store.replaced(add=two)
    store.persist(grants)
    store.install(grants)
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o777 == 0o600
    again = RuntimeGrants.load(tmp_path)
    by_id = sorted([one, two], key=lambda grant: grant.grant_id)  # made in the same second: ordered by id
    assert again.all() == by_id and list(again.for_principal("alice")) == by_id
    assert again.next_expiry() == NOW + 3600
    with pytest.raises(ValueError, match="already holds 2 runtime grants"):
        again.check_room("alice", config().runtime_grants)
    grants = again.replaced(remove=[one.grant_id])
    again.persist(grants)
    again.install(grants)
    assert RuntimeGrants.load(tmp_path).all() == [two]
    assert again.expired(NOW + 3600) == [two] and again.expired(NOW) == []
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("text", ["{", '{"version": 9}', '{"version": 1, "grants": [{"grant_id": "x"}]}'])
def test_a_broken_file_stops_the_start_naming_it(tmp_path: Path, text: str) -> None:
    (tmp_path / FILE_NAME).write_text(text)
    with pytest.raises(ConfigError) as caught:
        RuntimeGrants.load(tmp_path)
    assert caught.value.message.startswith(f"{tmp_path / FILE_NAME}: ")
    assert "move it away to start without" in caught.value.message


def policy_with(*grants: RuntimeGrant, clock: float = NOW) -> Policy:
    store = RuntimeGrants(Path("/nonexistent") / FILE_NAME, grants)
    return Policy(config(), clock=lambda: clock, runtime_grants=store)


def decide(policy: Policy, principal: str, roles: tuple[str, ...], tool: str,
           params: dict[str, Any] | None = None) -> Any:
    return policy.decide(Identity(principal, roles, "static-token"), tool=tool, requested=None,
                         tool_limits=Limits(memory_max_bytes=1 << 30), payload_bytes=1, params=params or {})


def test_a_runtime_grant_runs_under_the_principals_first_role() -> None:
    grant = make()
    decision = decide(policy_with(grant), "alice", ("analyst",), "sqlite_query")
    assert (decision.role, decision.grant) == ("analyst", f"runtime:{grant.grant_id}")
    assert decision.effective_limits.memory_max_bytes == 64 << 20  # the role's ceiling holds
    assert decide(policy_with(grant), "alice", ("analyst",), "reader").grant == "roles.analyst.tools[0]"
    with pytest.raises(ToolNotGranted):
        decide(policy_with(grant), "bob", ("analyst",), "sqlite_query")  # another principal's


def test_a_principal_without_a_role_runs_under_the_bare_role() -> None:
    grant = make(principal="ghost")
    assert decide(policy_with(grant), "ghost", (), "sqlite_query").role == "runtime-grant"


def test_a_runtime_grants_constraint_and_expiry_hold() -> None:
    grant = make(params_json='{"properties": {"sql": {"pattern": "^select"}}}')
    policy = policy_with(grant)
    assert decide(policy, "alice", ("analyst",), "sqlite_query", {"sql": "select 1"}).role == "analyst"
    with pytest.raises(ParamsNotGranted):
        decide(policy, "alice", ("analyst",), "sqlite_query", {"sql": "delete"})
    with pytest.raises(GrantExpired) as caught:
        decide(policy_with(grant, clock=NOW + 3600), "alice", ("analyst",), "sqlite_query", {"sql": "select 1"})
    assert caught.value.message.startswith(f"runtime:{grant.grant_id} of tool 'sqlite_query'")
    assert policy.visible_tools(Identity("alice", ("analyst",), "jwt"), TOOLS) == ["reader", "sqlite_query"]


def test_the_json_form_round_trips() -> None:
    grant = make(params_json='{"required": ["sql"]}')
    assert RuntimeGrant.from_json(json.loads(json.dumps(grant.to_json()))) == grant
