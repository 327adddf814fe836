"""Least privilege from the audit: the roles suggested from a recorded trail grant exactly the tools each
principal ran, with ceilings above the peaks it needed; loaded, they allow what was used and nothing else."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from sandboxd.base.limits import Limits
from sandboxd.base.refusals import CommandNotGranted, ToolNotGranted
from sandboxd.base.toml import TomlTable
from sandboxd.policy.auth import Identity
from sandboxd.policy.config import parse_policy
from sandboxd.policy.decisions import Policy
from sandboxd.policy.suggest import ceiling, observe, role_name, suggest_toml

MIB = 1 << 20
TOOL_LIMITS = Limits(memory_max_bytes=1 << 30, cpu_time_ms=60_000, wall_time_ms=60_000, output_max_bytes=1 << 30)


def finished(principal: str, tool: str, outcome: str = "OK", *, memory: int = 10 * MIB, cpu_usec: int = 200_000,
             wall_ms: int = 400, stdout: int = 1000, stderr: int = 0) -> dict[str, Any]:
    return {"event": "execution.finished", "principal": principal, "tool": tool, "time": "2026-05-01T00:00:00Z",
            "details": {"outcome": outcome, "memory_peak_bytes": memory, "cpu_user_usec": cpu_usec,
                        "cpu_system_usec": 0, "wall_time_ms": wall_ms, "stdout_bytes": stdout,
                        "stderr_bytes": stderr}}


def denied(principal: str, tool: str, reason: str = "TOOL_NOT_GRANTED") -> dict[str, Any]:
    return {"event": "decision", "principal": principal, "tool": tool,
            "details": {"outcome": "denied", "rpc": "Execute", "reason": reason}}


TRAIL = [
    {"event": "daemon.started", "principal": "", "tool": "", "details": {}},
    finished("alice", "reader", memory=30 * MIB, wall_ms=2500, stdout=200_000),
    finished("alice", "reader", memory=12 * MIB),
    finished("alice", "sqlite_query", cpu_usec=3_000_000),
    denied("alice", "python"),
    finished("jwt:bob", "python", "NONZERO_EXIT"),
    finished("jwt:bob", "python", "SETUP_FAILED", memory=900 * MIB, wall_ms=50_000),
    finished("ops", "", memory=5 * MIB),
    finished("ops", "reader", "MEMORY_LIMIT", memory=64 * MIB),
    denied("mallory", "reader"),
]


def load(text: str, principals: dict[str, str]) -> Policy:
    mapping = "".join(f'[principals.{name}]\nroles = ["{role}"]\n' for name, role in principals.items())
    top = TomlTable(tomllib.loads('[auth]\nunix_socket_principal = ""\n' + mapping + text), file="suggested.toml")
    config = parse_policy(top)
    top.finish()
    return Policy(config)


def run(policy: Policy, principal: str, role: str, tool: str | None, **requested: int) -> Limits:
    identity = Identity(principal, (role,), "static-token")
    return policy.decide(identity, tool=tool, requested=requested, tool_limits=TOOL_LIMITS,
                         payload_bytes=10).effective_limits


def test_the_suggested_roles_allow_exactly_what_was_used() -> None:
    text = suggest_toml(observe(TRAIL))
    roles = tomllib.loads(text)["roles"]
    assert roles["least-alice"]["tools"] == ["reader", "sqlite_query"]
    assert roles["least-jwt-bob"]["tools"] == ["python"]
    assert roles["least-ops"] == {"tools": ["reader"], "commands": True, "ceilings": roles["least-ops"]["ceilings"]}
    assert "least-mallory" not in roles  # refused only: nothing to grant
    policy = load(text, {"alice": "least-alice", "ops": "least-ops"})
    limits = run(policy, "alice", "least-alice", "reader")
    # each used tool runs with at least what its peak needed ...
    assert limits.memory_max_bytes is not None and limits.memory_max_bytes >= 30 * MIB
    assert limits.wall_time_ms is not None and limits.wall_time_ms >= 2500
    assert limits.output_max_bytes is not None and limits.output_max_bytes >= 200_000
    assert run(policy, "alice", "least-alice", "sqlite_query").cpu_time_ms >= 3000  # type: ignore[operator]
    # ... and nothing else is granted
    for tool in ("python", "file_processor"):
        with pytest.raises(ToolNotGranted):
            run(policy, "alice", "least-alice", tool)
    with pytest.raises(CommandNotGranted):
        run(policy, "alice", "least-alice", None)
    run(policy, "ops", "least-ops", None)  # it ran raw commands


def test_ceilings_are_the_peak_plus_the_margin_rounded_up_and_floored() -> None:
    roles = tomllib.loads(suggest_toml(observe(TRAIL)))["roles"]
    assert roles["least-alice"]["ceilings"] == {"memory": "45M", "cpu_time": "4500ms", "wall_time": "3800ms",
                                                "output": "293K"}
    # setup failures say nothing of the need: only the NONZERO_EXIT run counts
    assert roles["least-jwt-bob"]["ceilings"] == {"memory": "16M", "cpu_time": "1s", "wall_time": "1s",
                                                  "output": "64K"}
    assert ceiling("memory", 30 * MIB, 1.0) == 60 * MIB
    assert ceiling("wall_time", 10, 0.5) == 1000  # the floor
    assert ceiling("wall_time", 1001, 0.0) == 1100  # to the next 100 ms


def test_the_comments_say_what_was_seen() -> None:
    text = suggest_toml(observe(TRAIL))
    assert '# principal "alice": 3 executions' in text
    assert "# refused: python (TOOL_NOT_GRANTED), 1 time" in text
    assert "# reader: 2 runs (2 ok); peak memory 30M, cpu 200ms, wall 2500ms" in text
    assert "ended by a limit: it needed at least that much" in text  # ops' MEMORY_LIMIT run
    assert '[principals.alice] roles = ["least-alice"]' in text
    assert 'its JWTs\' roles claim names "least-jwt-bob"' in text
    assert "# (it ran nothing: no role to suggest)" in text  # mallory


def test_role_names_and_an_empty_trail() -> None:
    assert role_name("jwt:alice@example.com") == "least-jwt-alice@example.com"
    text = suggest_toml(observe([]))
    assert tomllib.loads(text) == {}
    assert "from 0 audit records" in text


def test_a_margin_of_its_own() -> None:
    roles = tomllib.loads(suggest_toml(observe(TRAIL), margin=1.0))["roles"]
    assert roles["least-alice"]["ceilings"]["memory"] == "60M"
