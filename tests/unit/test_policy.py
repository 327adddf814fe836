"""Decisions: one per request, allowed with the tightest limits or denied with a reason and the matched role."""

from __future__ import annotations

import dataclasses
import datetime
import tomllib
from collections.abc import Mapping

import pytest

from sandboxd.api.status import status_for
from sandboxd.base.limits import Limits
from sandboxd.base.refusals import (
    CommandNotGranted,
    GrantExpired,
    InvalidRequest,
    LimitAboveCeiling,
    PayloadTooLarge,
    PolicyDenied,
    RateLimited,
    ToolNotGranted,
)
from sandboxd.base.toml import TomlTable
from sandboxd.policy.auth import Identity
from sandboxd.policy.config import DEFAULT_POLICY, PolicyConfig, parse_policy
from sandboxd.policy.decisions import Decision, Policy
from sandboxd.policy.ratelimit import RateLimiter

EXPIRY = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC).timestamp()
BEFORE_EXPIRY = EXPIRY - 1
TOOL = Limits(memory_max_bytes=256 << 20, wall_time_ms=30_000, output_max_bytes=1 << 20, cpu_time_ms=None)
DAEMON = Limits()

CONFIG = """
[auth]
unix_socket_principal = ""

[principals.gateway]
roles = ["support"]

[roles.support]
tools = ["file_processor", { name = "sqlite_query", expires = 2027-01-01T00:00:00Z }]
rate_per_minute = 60
burst = 2
max_payload = "1K"
max_concurrent = 3
[roles.support.ceilings]
memory = "128M"
cpu_time = "5s"

[roles.clamped]
tools = ["sqlite_*"]
limits_above_ceiling = "clamp"
[roles.clamped.ceilings]
memory = "64M"

[roles.ops]
tools = ["sqlite_query", "python"]
commands = true
admin = true
"""


class Clocks:
    def __init__(self) -> None:
        self.wall = BEFORE_EXPIRY
        self.mono = 1000.0


def make(text: str = CONFIG, clocks: Clocks | None = None) -> tuple[Policy, Clocks]:
    clocks = clocks or Clocks()
    top = TomlTable(tomllib.loads(text), file="/etc/sandboxd/sandboxd.toml")
    config: PolicyConfig = parse_policy(top)
    top.finish()
    return Policy(config, clock=lambda: clocks.wall, monotonic=lambda: clocks.mono), clocks


def who(*roles: str, principal: str = "alice") -> Identity:
    return Identity(principal, roles, "jwt")


def decide(
    policy: Policy,
    identity: Identity,
    tool: str | None = "file_processor",
    requested: Mapping[str, int] | None = None,
    *,
    tool_limits: Limits = TOOL,
    payload_bytes: int = 100,
) -> Decision:
    return policy.decide(identity, tool=tool, requested=requested, tool_limits=tool_limits,
                         payload_bytes=payload_bytes)


def denied(
    error: type[PolicyDenied], policy: Policy, identity: Identity, *args: object, **kwargs: object
) -> PolicyDenied:
    with pytest.raises(error) as caught:
        decide(policy, identity, *args, **kwargs)  # type: ignore[arg-type]
    return caught.value


# -- grants ---------------------------------------------------------------------------------------------------


def test_allowed_with_the_matching_role() -> None:
    policy, _ = make()
    decision = decide(policy, who("support"))
    assert (decision.principal, decision.role, decision.tool, decision.max_concurrent) == (
        "alice", "support", "file_processor", 3)


def test_tool_not_granted() -> None:
    policy, _ = make()
    error = denied(ToolNotGranted, policy, who("support"), "python")
    assert error.reason == "TOOL_NOT_GRANTED" and error.role == ""
    assert error.message == "principal 'alice' (roles: support) is not granted tool 'python'"
    assert status_for(error).name == "PERMISSION_DENIED"
    assert "(roles: none)" in denied(ToolNotGranted, policy, who(), "python").message
    # a role the config does not know grants nothing
    denied(ToolNotGranted, policy, who("superuser"), "python")


def test_grant_expiry() -> None:
    policy, clocks = make()
    assert decide(policy, who("support"), "sqlite_query").role == "support"
    clocks.wall = EXPIRY
    error = denied(GrantExpired, policy, who("support"), "sqlite_query")
    assert error.reason == "GRANT_EXPIRED" and error.role == "support"
    assert error.message == (
        "role 'support''s grant of tool 'sqlite_query' ('sqlite_query') expired at 2027-01-01T00:00:00Z")
    assert status_for(error).name == "PERMISSION_DENIED"
    # a later role with a valid grant still matches; the first role in the identity's order wins
    assert decide(policy, who("support", "ops"), "sqlite_query").role == "ops"
    clocks.wall = BEFORE_EXPIRY
    assert decide(policy, who("support", "ops"), "sqlite_query").role == "support"
    assert decide(policy, who("ops", "support"), "sqlite_query").role == "ops"


def test_raw_commands() -> None:
    policy, _ = make()
    error = denied(CommandNotGranted, policy, who("support", "clamped"), None, tool_limits=DAEMON)
    assert error.reason == "COMMAND_NOT_GRANTED" and error.role == ""
    assert "none of its roles (support, clamped) has commands = true" in error.message
    decision = decide(policy, who("support", "ops"), None, tool_limits=DAEMON)
    assert (decision.role, decision.tool, decision.effective_limits) == ("ops", "", DAEMON)


def test_globs() -> None:
    policy, _ = make()
    assert decide(policy, who("clamped"), "sqlite_query").role == "clamped"
    denied(ToolNotGranted, policy, who("clamped"), "file_processor")


# -- payload, ceilings, rate --------------------------------------------------------------------------------------


def test_payload_too_large() -> None:
    policy, _ = make()
    assert decide(policy, who("support"), payload_bytes=1024).role == "support"
    error = denied(PayloadTooLarge, policy, who("support"), payload_bytes=1025)
    assert error.reason == "PAYLOAD_TOO_LARGE" and error.role == "support"
    assert error.message == "request of 1025 bytes exceeds role 'support''s max_payload of 1024 bytes"
    assert status_for(error).name == "INVALID_ARGUMENT"
    assert decide(policy, who("ops"), "python", payload_bytes=10 << 20).role == "ops"  # no max_payload


def test_effective_limits_are_the_tightest_of_request_tool_and_role() -> None:
    policy, _ = make()
    decision = decide(policy, who("support"), requested={"wall_time_ms": 10_000, "output_max_bytes": 4096})
    assert decision.effective_limits == dataclasses.replace(
        TOOL, memory_max_bytes=128 << 20, cpu_time_ms=5000, wall_time_ms=10_000, output_max_bytes=4096)
    assert decision.clamped == ()
    # nothing asked, no role ceilings: the tool's limits, nothing per call
    plain = decide(policy, who("ops"), "python")
    assert plain.effective_limits == TOOL


def test_limit_above_a_ceiling_is_denied() -> None:
    policy, _ = make()
    error = denied(LimitAboveCeiling, policy, who("support"), requested={"memory_max_bytes": 200 << 20})
    assert error.reason == "LIMIT_ABOVE_CEILING" and error.role == "support"
    assert error.message == "limit memory_max_bytes=209715200 is above the role 'support''s ceiling of 134217728"
    assert status_for(error).name == "PERMISSION_DENIED"
    error = denied(LimitAboveCeiling, policy, who("support"), requested={"wall_time_ms": 60_000})
    assert error.message == "limit wall_time_ms=60000 is above the tool 'file_processor''s ceiling of 30000"
    error = denied(LimitAboveCeiling, policy, who("ops"), None, requested={"pids_max": 1000}, tool_limits=DAEMON)
    assert error.message == "limit pids_max=1000 is above the daemon's ceiling of 64"
    # at the ceiling is fine; the tool's unlimited cpu_time is capped by the role
    assert decide(policy, who("support"), requested={"memory_max_bytes": 128 << 20}).role == "support"
    denied(LimitAboveCeiling, policy, who("support"), requested={"cpu_time_ms": 5001})
    assert decide(policy, who("ops"), "python", requested={"cpu_time_ms": 10**6}).effective_limits.cpu_time_ms == 10**6


def test_limit_above_a_ceiling_is_clamped_when_the_role_says_so() -> None:
    policy, _ = make()
    decision = decide(policy, who("clamped"), "sqlite_query",
                      requested={"memory_max_bytes": 1 << 30, "wall_time_ms": 60_000, "output_max_bytes": 100})
    assert decision.effective_limits.memory_max_bytes == 64 << 20  # the role's ceiling
    assert decision.effective_limits.wall_time_ms == 30_000  # the tool's
    assert decision.effective_limits.output_max_bytes == 100
    assert decision.clamped == ("memory_max_bytes", "wall_time_ms")


@pytest.mark.parametrize(
    ("requested", "says"),
    [({"memory": 1}, "unknown limit 'memory'"), ({"pids_max": 0}, "must be a positive integer"),
     ({"cpu_share_percent": 10**7}, "must be at most 102400"),
     ({"file_size_max_bytes": 2**64 - 1}, "file_size_max_bytes must be at most 9223372036854775807"),
     ({"open_files_max": 10**9}, "open_files_max must be at most 1048576"),
     ({"open_files_max": 3}, "open_files_max must be at least 4")],
)
def test_malformed_per_call_limits(requested: dict[str, int], says: str) -> None:
    policy, _ = make()
    with pytest.raises(InvalidRequest, match=says):
        # under unlimited ceilings: only what the kernel takes bounds the request
        unlimited = Limits(cpu_share_percent=None, file_size_max_bytes=None, open_files_max=None)
        decide(policy, who("ops"), "python", requested, tool_limits=unlimited)


def test_rate_limited_with_a_retry_hint() -> None:
    policy, clocks = make()
    alice = who("support")
    assert [decide(policy, alice).role for _ in range(2)] == ["support", "support"]  # burst 2
    error = denied(RateLimited, policy, alice)
    assert isinstance(error, RateLimited)
    assert error.reason == "RATE_LIMITED" and error.role == "support" and error.temporary
    assert error.retry_after_s == 1.0
    assert "used up role 'support''s rate of 60 per minute (burst 2); retry in 1.000s" in error.message
    assert status_for(error).name == "RESOURCE_EXHAUSTED"
    decide(policy, who("support", principal="bob"))  # buckets are per principal …
    decide(policy, who("support", "ops"), "python")  # … and per role: ops has no rate
    clocks.mono += 1.0
    decide(policy, alice)
    denied(RateLimited, policy, alice)


def test_a_denied_request_costs_no_token() -> None:
    policy, _ = make()
    alice = who("support")
    for _ in range(5):
        denied(PayloadTooLarge, policy, alice, payload_bytes=1 << 20)
        denied(LimitAboveCeiling, policy, alice, requested={"memory_max_bytes": 1 << 30})
        denied(ToolNotGranted, policy, alice, "python")
    decide(policy, alice)
    decide(policy, alice)
    denied(RateLimited, policy, alice)


def test_the_rate_state_outlives_a_reload() -> None:
    policy, clocks = make()
    decide(policy, who("support"))
    decide(policy, who("support"))
    reloaded = Policy(policy.config, monotonic=lambda: clocks.mono, clock=lambda: clocks.wall,
                      rate_limiter=policy.rate_limiter)
    denied(RateLimited, reloaded, who("support"))
    fresh = Policy(policy.config, monotonic=lambda: clocks.mono, clock=lambda: clocks.wall, rate_limiter=RateLimiter())
    decide(fresh, who("support"))


# -- what else the service asks --------------------------------------------------------------------------------


def test_visible_tools_admin_and_concurrency() -> None:
    policy, clocks = make()
    names = ["file_processor", "python", "sqlite_query"]
    assert policy.visible_tools(who("support"), names) == ["file_processor", "sqlite_query"]
    assert policy.visible_tools(who("clamped", "ops"), names) == ["python", "sqlite_query"]
    assert policy.visible_tools(who(), names) == []
    clocks.wall = EXPIRY
    assert policy.visible_tools(who("support"), names) == ["file_processor"]
    assert policy.is_admin(who("support", "ops")) and not policy.is_admin(who("support", "clamped"))


def test_the_embedded_roles() -> None:
    policy = Policy(DEFAULT_POLICY)
    local_admin = Identity("local-admin", ("admin",), "unix-socket")
    assert decide(policy, local_admin, "anything").role == "admin"
    assert decide(policy, local_admin, None, tool_limits=DAEMON).role == "admin"
    assert policy.is_admin(local_admin)
    service = Identity("gw", ("customer-service",), "jwt")
    assert policy.visible_tools(service, ["file_processor", "python", "sqlite_query"]) == [
        "file_processor", "sqlite_query"]
    denied(CommandNotGranted, policy, service, None, tool_limits=DAEMON)
    analyst = Identity("an", ("analyst",), "jwt")
    denied(PayloadTooLarge, policy, analyst, "sqlite_query", payload_bytes=(1 << 20) + 1)
    assert not policy.is_admin(analyst)
