"""What a reload replaces as one piece: the configuration, the tools, their compiled profiles, the policy.

The service reads ``runtime`` once per request, so a request sees one consistent generation from its
decision to its Result even when SIGHUP swaps in the next one meanwhile; an execution that already runs
keeps the limits it was started with.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from sandboxd.engine.seccomp.profile import ProfileCache
from sandboxd.policy.auth import Authenticator
from sandboxd.policy.config import EMBEDDED, check_policy
from sandboxd.policy.decisions import Policy
from sandboxd.server.config import SHIPPED_HANDLERS_DIR, Config
from sandboxd.server.registry import ToolRegistry
from sandboxd.server.tools import load_tools


@dataclass(frozen=True)
class Runtime:
    config: Config
    registry: ToolRegistry
    policy: Policy
    authenticator: Authenticator
    loaded_at: float = field(default_factory=time.time)

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

    With ``previous``, the rate-limit state carries over: a reload does not hand every caller a fresh burst.
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
    check_policy(config.policy, tools)  # errors name policy.source: the file its tables came from
    authenticator = Authenticator.from_config(config.policy)
    policy = Policy(config.policy, rate_limiter=previous.policy.rate_limiter if previous else None)
    return Runtime(config, registry, policy, authenticator)
