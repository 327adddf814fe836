"""The README's policy example (a constrained role, a risk assessor, runtime grants' bound) loads as printed and
means what the README says of it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from sandboxd.base.limits import Limits
from sandboxd.base.refusals import ParamsNotGranted
from sandboxd.base.toml import TomlTable
from sandboxd.policy.auth import Identity
from sandboxd.policy.config import check_policy, parse_policy
from sandboxd.policy.decisions import Policy

README = Path(__file__).resolve().parents[2] / "README.md"


def example() -> str:
    after = README.read_text().split("## Policy: constraints, conditions, a risk assessor", 1)[1]
    match = re.search(r"```toml\n(.*?)```", after, re.S)
    assert match, "the README lost its policy example"
    return match.group(1)


def test_the_readme_policy_example_loads_and_holds() -> None:
    text = example() + '\n[principals.local-admin]\nroles = ["analyst"]\n'
    top = TomlTable(tomllib.loads(text), file="README.md")
    config = parse_policy(top)
    top.finish()
    check_policy(config, ["file_processor", "sqlite_query", "python"])
    assert config.risk is not None and config.risk.assessor == "chat-completions"
    assert config.runtime_grants.max_ttl_ms == 24 * 3600 * 1000
    policy = Policy(config)
    analyst = Identity("jwt:ann", ("analyst",), "jwt", {"amr": ["pwd", "mfa"]})

    def decide(tool: str, params: dict[str, str]) -> str:
        return policy.decide(analyst, tool=tool, requested=None, tool_limits=Limits(), payload_bytes=1,
                             params=params, classification="internal").role

    assert decide("file_processor", {"path": "reports/q1.csv"}) == "analyst"
    assert decide("sqlite_query", {"sql": "SELECT 1"}) == "analyst"
    for tool, params in (("file_processor", {"path": "etc/passwd"}), ("sqlite_query", {"sql": "drop table t"})):
        with pytest.raises(ParamsNotGranted):
            decide(tool, params)
