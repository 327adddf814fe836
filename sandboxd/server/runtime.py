"""What a reload replaces as one piece: the configuration, the tools, their compiled profiles, the policy.

The service reads ``runtime`` once per request, so a request sees one consistent generation from its
decision to its Result even when SIGHUP swaps in the next one meanwhile; an execution that already runs
keeps the limits it was started with.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sandboxd.base.errors import ConfigError
from sandboxd.engine.seccomp.profile import ProfileCache
from sandboxd.policy.auth import Authenticator
from sandboxd.policy.conditions import check_tool_classifications
from sandboxd.policy.config import EMBEDDED, PolicyConfig, check_policy
from sandboxd.policy.decisions import Policy
from sandboxd.policy.risk import RiskGate
from sandboxd.policy.runtime_grants import RuntimeGrants
from sandboxd.server.config import SHIPPED_HANDLERS_DIR, Config
from sandboxd.server.mcp_servers_config import SEPARATOR, McpServerConfig, check_tool_names, load_mcp_servers
from sandboxd.server.registry import ToolRegistry
from sandboxd.server.tools import load_tools


@dataclass(frozen=True)
class Runtime:
    config: Config
    registry: ToolRegistry
    policy: Policy
    authenticator: Authenticator
    loaded_at: float = field(default_factory=time.time)
    mcp_servers: Mapping[str, McpServerConfig] = field(default_factory=dict)
    risk: RiskGate | None = None  # the risk assessor of [policy.risk]; None = none configured
    grants: RuntimeGrants | None = None  # runtime grants (sandboxd.policy.runtime_grants): kept across reloads

    @property
    def source_name(self) -> str:
        return str(self.config.source or EMBEDDED)

    @property
    def tool_names(self) -> list[str]:
        return [tool.name for tool in self.registry.tools()]


def build_runtime(
    config: Config, *, state_dir: Path, profiles: ProfileCache, previous: Runtime | None = None
) -> Runtime:
    """Load and check everything ``config`` names; raises ConfigError/ProfileError and changes nothing.

    With ``previous``, the rate-limit state carries over: a reload does not hand every caller a fresh burst; so do
    the runtime grants (read from ``state_dir`` at start) and, when its configuration is the same, the risk cache.
    """
    placeholders = {
        "handlers_dir": str(SHIPPED_HANDLERS_DIR),
        "state_dir": str(state_dir),
        "data_dir": str(SHIPPED_HANDLERS_DIR.parent),
    }
    tools = load_tools(config.tool_dirs, placeholders=placeholders, default_limits=config.sandbox.limits)
    registry = ToolRegistry(
        tools,
        default_limits=config.sandbox.limits,
        default_profile=config.sandbox.default_profile,
        profile_dirs=config.profile_dirs,
        compile_profile=lambda path: profiles.get(path).bpf,
        host_env=os.environ,
    )
    registry.compile_all()
    mcp_servers = load_mcp_servers(config.mcp_servers, config.mcp_servers_dir, file=config.source or EMBEDDED,
                                   placeholders=placeholders, default_limits=config.sandbox.limits)
    check_tool_names(mcp_servers, list(tools))
    for server in mcp_servers.values():
        registry.profile_bpf(server.sandbox.seccomp_profile)  # an unknown or broken profile stops the load
    # errors name policy.source: the file its tables came from
    check_policy(config.policy, tools, tool_prefixes=[f"{name}{SEPARATOR}" for name in mcp_servers])
    check_tool_classifications(config.policy, {t.name: (t.classification, t.source) for t in tools.values()})
    authenticator = Authenticator.from_config(config.policy)
    risk = _risk_gate(config.policy, previous.risk if previous else None)
    grants = previous.grants if previous is not None and previous.grants is not None else \
        RuntimeGrants.load(state_dir)
    policy = Policy(config.policy, rate_limiter=previous.policy.rate_limiter if previous else None,
                    runtime_grants=grants)
    return Runtime(config, registry, policy, authenticator, mcp_servers=mcp_servers, risk=risk, grants=grants)


def _risk_gate(policy: PolicyConfig, previous: RiskGate | None) -> RiskGate | None:
    """The risk assessor's gate, its API key read now (ConfigError naming the file and key when it cannot be)."""
    if policy.risk is None:
        return None
    try:
        return RiskGate.build(policy.risk, previous)
    except ValueError as exc:
        raise ConfigError(f"{policy.source}: policy.risk.api_key_file: {policy.risk.api_key_file}: {exc}") from None
