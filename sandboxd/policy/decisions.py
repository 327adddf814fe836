"""The policy decision: may this caller run this tool (or a raw command), and with which limits.

:meth:`Policy.decide` gives every request exactly one answer — a :class:`Decision`, or a raised
:class:`~sandboxd.base.refusals.PolicyDenied` naming the reason and the role that matched. The checks, in order,
each only after the ones before it passed::

    grant      the first of the caller's roles, in its order, with an unexpired grant of the tool
               (``commands = true`` for a raw command)     TOOL_NOT_GRANTED / GRANT_EXPIRED / COMMAND_NOT_GRANTED
    payload    the request's size against the role's max_payload                    PAYLOAD_TOO_LARGE
    ceilings   each per-call limit against the tool's and the role's ceilings        LIMIT_ABOVE_CEILING
               (or lowered to the ceiling: limits_above_ceiling = "clamp")
    rate       one token of the (principal, role) bucket                              RATE_LIMITED

so a refused request never costs a token. :attr:`Decision.effective_limits` are the tightest of request, tool
and role; this is the one place ceilings are applied, and the registry plans with them unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sandboxd.base.echo import quote
from sandboxd.base.errors import InvalidSpec
from sandboxd.base.limits import LIMIT_FIELDS, Limits
from sandboxd.base.refusals import (
    CommandNotGranted,
    GrantExpired,
    InvalidRequest,
    LimitAboveCeiling,
    PayloadTooLarge,
    RateLimited,
    ToolNotGranted,
)
from sandboxd.policy.auth import Identity
from sandboxd.policy.config import Grant, PolicyConfig, RoleConfig
from sandboxd.policy.ratelimit import RateLimiter


@dataclass(frozen=True)
class Decision:
    """An allowed request. ``tool`` is ``""`` for a raw command."""

    principal: str
    role: str
    tool: str
    effective_limits: Limits  # what the execution runs with: the registry plans with exactly these
    clamped: tuple[str, ...] = ()  # Limits fields lowered to a ceiling (limits_above_ceiling = "clamp")
    max_concurrent: int | None = None  # the role's bound on the principal's running executions
    network_allow: tuple[str, ...] | None = None  # the role's narrowing of the network allowlist; None = none
    max_sessions: int | None = None  # the role's bound on the principal's open sessions


class Policy:
    """Decisions over one :class:`PolicyConfig`. ``clock`` (Unix seconds) dates grants; ``monotonic`` rates.

    Pass the previous generation's ``rate_limiter`` on reload, so a reload hands nobody a fresh burst.
    """

    def __init__(
        self,
        config: PolicyConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.config = config
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter()
        self._clock = clock
        self._monotonic = monotonic

    def _roles(self, identity: Identity) -> list[RoleConfig]:
        return [self.config.roles[name] for name in identity.roles if name in self.config.roles]

    def decide(
        self,
        identity: Identity,
        *,
        tool: str | None,
        requested: Mapping[str, int] | None,
        tool_limits: Limits,
        payload_bytes: int,
    ) -> Decision:
        """Allow ``tool`` (``None``: a raw command) with ``requested`` per-call limits (Limits field names,
        absent = not asked for) over ``tool_limits`` (the tool's, or the daemon's for a command) — or raise."""
        role = self._grant(identity, tool)
        if role.max_payload_bytes is not None and payload_bytes > role.max_payload_bytes:
            raise PayloadTooLarge(
                f"request of {payload_bytes} bytes exceeds role {role.name!r}'s max_payload of "
                f"{role.max_payload_bytes} bytes",
                role=role.name,
            )
        owner = f"tool {quote(tool)}" if tool is not None else "daemon"
        effective, clamped = _limits(role, requested or {}, tool_limits, owner=owner)
        self._charge(identity, role)
        return Decision(
            principal=identity.principal,
            role=role.name,
            tool=tool or "",
            effective_limits=effective,
            clamped=clamped,
            max_concurrent=role.max_concurrent,
            network_allow=role.network_allow,
            max_sessions=role.max_sessions,
        )

    def _grant(self, identity: Identity, tool: str | None) -> RoleConfig:
        roles = self._roles(identity)
        held = ", ".join(identity.roles) or "none"
        if tool is None:
            for role in roles:
                if role.commands:
                    return role
            raise CommandNotGranted(
                f"principal {identity.principal!r} may not run raw commands: none of its roles ({held}) "
                f"has commands = true"
            )
        now = self._clock()
        expired: tuple[RoleConfig, Grant] | None = None
        for role in roles:
            for grant in role.tools:
                if not grant.matches(tool):
                    continue
                if not grant.expired(now):
                    return role
                expired = expired or (role, grant)
        if expired is not None:
            role, grant = expired
            raise GrantExpired(
                f"role {role.name!r}'s grant of tool {quote(tool)} ({grant.pattern!r}) expired at "
                f"{_iso(grant.expires_at)}",
                role=role.name,
            )
        raise ToolNotGranted(f"principal {identity.principal!r} (roles: {held}) is not granted tool {quote(tool)}")

    def _charge(self, identity: Identity, role: RoleConfig) -> None:
        """One token of the (principal, role) bucket, or RATE_LIMITED."""
        if role.rate is None:
            return
        retry_after_s = self.rate_limiter.try_acquire((identity.principal, role.name), role.rate, self._monotonic())
        if retry_after_s > 0:
            raise RateLimited(
                f"principal {identity.principal!r} used up role {role.name!r}'s rate of {role.rate.per_minute} "
                f"per minute (burst {role.rate.burst}); retry in {retry_after_s:.3f}s",
                retry_after_s=retry_after_s,
                role=role.name,
            )

    def charge_refusal(self, identity: Identity) -> None:
        """A request refused before it was decided (an unknown tool, bad params, no grant …) costs a token too,
        of the principal's first role with a rate: refusals cannot flood the daemon or its audit log. Raises
        RATE_LIMITED once that is used up."""
        for role in self._roles(identity):
            if role.rate is not None:
                self._charge(identity, role)
                return

    def check_grant(self, identity: Identity, tool: str) -> None:
        """Raise TOOL_NOT_GRANTED / GRANT_EXPIRED unless a role of the caller grants ``tool`` now — whether
        or not such a tool exists, so that a refusal tells nobody which tools exist that they cannot see."""
        self._grant(identity, tool)

    def visible_tools(self, identity: Identity, names: Iterable[str]) -> list[str]:
        """The tools of ``names`` the caller may run now, in the order given."""
        now = self._clock()
        grants = [grant for role in self._roles(identity) for grant in role.tools if not grant.expired(now)]
        return [name for name in names if any(grant.matches(name) for grant in grants)]

    def is_admin(self, identity: Identity) -> bool:
        """Sees and cancels every execution, may subscribe to the audit stream."""
        return any(role.admin for role in self._roles(identity))


def _iso(unix_s: float | None) -> str:
    if unix_s is None:  # pragma: no cover - only expired grants are named
        return "never"
    return datetime.datetime.fromtimestamp(unix_s, datetime.UTC).isoformat().replace("+00:00", "Z")


def _limits(
    role: RoleConfig, requested: Mapping[str, int], tool_limits: Limits, *, owner: str
) -> tuple[Limits, tuple[str, ...]]:
    """The effective limits (the tightest of request, tool and role) and what was clamped.

    The only place ceilings are applied: the registry plans with the result as it is."""
    for name, asked in requested.items():
        if name not in LIMIT_FIELDS:
            raise InvalidRequest(f"unknown limit {quote(name)}")
        if isinstance(asked, bool) or not isinstance(asked, int) or asked <= 0:
            raise InvalidRequest(f"limit {name} must be a positive integer, got {quote(asked)}")
    per_call: dict[str, int] = {}
    clamped: list[str] = []
    for name in LIMIT_FIELDS:
        tool_value: int | None = getattr(tool_limits, name)
        role_value = role.ceilings.get(name)
        ceiling: int | None = tool_value
        ceiling_owner = owner
        if role_value is not None and (ceiling is None or role_value < ceiling):
            ceiling, ceiling_owner = role_value, f"role {role.name!r}"
        value = requested.get(name)
        if value is not None and ceiling is not None and value > ceiling:
            if role.limits_above_ceiling == "deny":
                raise LimitAboveCeiling(
                    f"limit {name}={value} is above the {ceiling_owner}'s ceiling of {ceiling}", role=role.name
                )
            value = ceiling
            clamped.append(name)
        effective = value if value is not None else ceiling
        if effective is not None and effective != tool_value:
            per_call[name] = effective
    try:
        limits = dataclasses.replace(tool_limits, **per_call)
    except InvalidSpec as exc:  # beyond what the kernel takes, and no ceiling caught it (an unlimited one)
        raise InvalidRequest(exc.message) from exc
    return limits, tuple(clamped)
