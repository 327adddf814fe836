"""The policy decision: may this caller run this tool (or a raw command), and with which limits.

:meth:`Policy.decide` gives every request exactly one answer — a :class:`Decision`, or a raised
:class:`~sandboxd.base.refusals.PolicyDenied` naming the reason and the role that matched. The checks, in order,
each only after the ones before it passed::

    grant      the first grant the caller holds — its roles' in their order, each role's grants in theirs,
               then its runtime grants — that matches the tool, is unexpired, whose role's conditions the
               caller meets and whose params constraint the params satisfy (``commands = true`` for a raw
               command)                  TOOL_NOT_GRANTED / GRANT_EXPIRED / COMMAND_NOT_GRANTED / MFA_REQUIRED /
                                                           CLASSIFICATION_DENIED / PARAMS_NOT_GRANTED
    payload    the request's size against the role's max_payload                    PAYLOAD_TOO_LARGE
    ceilings   each per-call limit against the tool's and the role's ceilings        LIMIT_ABOVE_CEILING
               (or lowered to the ceiling: limits_above_ceiling = "clamp")
    rate       one token of the (principal, role) bucket                              RATE_LIMITED

so a refused request never costs a token. :attr:`Decision.effective_limits` are the tightest of request, tool
and role; this is the one place ceilings are applied, and the registry plans with them unchanged.

Grants add up: a request passes when any grant admits it, and that grant's role decides the rest. When none
does, the refusal is that of the grant that came closest (expired < a condition unmet < params refused), the
first of equals.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sandboxd.base.echo import quote
from sandboxd.base.errors import InvalidSpec
from sandboxd.base.limits import LIMIT_FIELDS, Limits
from sandboxd.base.refusals import (
    CommandNotGranted,
    GrantExpired,
    InvalidRequest,
    LimitAboveCeiling,
    ParamsNotGranted,
    PayloadTooLarge,
    PolicyDenied,
    RateLimited,
    ToolNotGranted,
)
from sandboxd.policy.auth import Identity
from sandboxd.policy.conditions import condition_refusal
from sandboxd.policy.config import Grant, PolicyConfig, RoleConfig
from sandboxd.policy.constraints import held_to
from sandboxd.policy.ratelimit import RateLimiter
from sandboxd.policy.runtime_grants import RUNTIME_ROLE, RuntimeGrants


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
    grant: str = ""  # which grant admitted it: "roles.NAME.tools[I]"; "" for a raw command
    risk: Mapping[str, Any] | None = None  # what the risk assessor said (sandboxd.policy.risk); None = not asked

    def audit_details(self) -> dict[str, Any]:
        """What its ``decision`` record says of the policy, besides the role and the limits."""
        details: dict[str, Any] = {"grant": self.grant} if self.grant else {}
        if self.risk is not None:
            details["risk"] = dict(self.risk)
        return details


class Policy:
    """Decisions over one :class:`PolicyConfig`. ``clock`` (Unix seconds) dates grants; ``monotonic`` rates.

    Pass the previous generation's ``rate_limiter`` on reload, so a reload hands nobody a fresh burst, and its
    ``runtime_grants`` (:mod:`sandboxd.policy.runtime_grants`), which outlive a reload.
    """

    def __init__(
        self,
        config: PolicyConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rate_limiter: RateLimiter | None = None,
        runtime_grants: RuntimeGrants | None = None,
    ) -> None:
        self.config = config
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter()
        self.runtime_grants = runtime_grants  # an admin's grants made at run time, after the roles' own
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
        params: Mapping[str, Any] | None = None,
        classification: str | None = None,
    ) -> Decision:
        """Allow ``tool`` (``None``: a raw command) with ``requested`` per-call limits (Limits field names,
        absent = not asked for) over ``tool_limits`` (the tool's, or the daemon's for a command) — or raise.

        ``params``: the call's, valid against the tool's schema, held to the grants' constraints; None when
        there are none to check yet (a session's creation: each call in it is decided with its own).
        ``classification``: the tool's label (``""``: none) for the roles' clearances; None: not checked."""
        role, grant = self._grant(identity, tool, params=params, classification=classification)
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
            grant=grant,
        )

    def _grants(self, identity: Identity) -> Iterator[tuple[RoleConfig, Grant, str]]:
        """Every grant the caller holds, in order, with the role it comes with and its name: the roles' grants,
        then its runtime grants (under its first role, or the bare ``runtime-grant`` role when it has none)."""
        roles = self._roles(identity)
        for role in roles:
            for index, grant in enumerate(role.tools):
                yield role, grant, f"roles.{role.name}.tools[{index}]"
        if self.runtime_grants is not None:
            base = roles[0] if roles else RUNTIME_ROLE
            for runtime_grant in self.runtime_grants.for_principal(identity.principal):
                yield base, runtime_grant.as_grant(), f"runtime:{runtime_grant.grant_id}"

    def _grant(self, identity: Identity, tool: str | None, *, params: Mapping[str, Any] | None = None,
               classification: str | None = None) -> tuple[RoleConfig, str]:
        """The role and the name of the grant that admits the request, or the refusal of the closest one."""
        held = ", ".join(identity.roles) or "none"
        if tool is None:
            for role in self._roles(identity):
                if role.commands:
                    return role, ""
            raise CommandNotGranted(
                f"principal {identity.principal!r} may not run raw commands: none of its roles ({held}) "
                f"has commands = true"
            )
        now = self._clock()
        closest: tuple[int, PolicyDenied] | None = None
        for role, grant, name in self._grants(identity):
            if not grant.matches(tool):
                continue
            stage, refusal = self._refusal(identity, role, grant, name, tool, params, classification, now)
            if refusal is None:
                return role, name
            if closest is None or stage > closest[0]:
                closest = (stage, refusal)
        if closest is not None:
            raise closest[1]
        raise ToolNotGranted(f"principal {identity.principal!r} (roles: {held}) is not granted tool {quote(tool)}")

    def _refusal(self, identity: Identity, role: RoleConfig, grant: Grant, name: str, tool: str,
                 params: Mapping[str, Any] | None, classification: str | None,
                 now: float) -> tuple[int, PolicyDenied | None]:
        """Why ``grant`` (which matches ``tool``) does not admit the request, and how close it came; None: it does."""
        if grant.expired(now):
            whose = f"{name}" if name.startswith("runtime:") else f"role {role.name!r}'s grant"
            return 0, GrantExpired(
                f"{whose} of tool {quote(tool)} ({grant.pattern!r}) expired at {_iso(grant.expires_at)}",
                role=role.name,
            )
        unmet = condition_refusal(role, identity, tool, classification, self.config.classifications)
        if unmet is not None:
            return 1, unmet
        if params is not None and grant.params is not None:
            violation = grant.params.violation(params)
            if violation is not None:
                return 2, ParamsNotGranted(
                    f"params not granted: {violation.describe()} — role {role.name!r} grants tool {quote(tool)} "
                    f"only for params its constraint admits ({name}.params)",
                    json_path=violation.json_path, rule=violation.rule, role=role.name,
                )
        return 0, None

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

    def check_grant(self, identity: Identity, tool: str, *, classification: str | None = None) -> None:
        """Raise TOOL_NOT_GRANTED / GRANT_EXPIRED unless a role of the caller grants ``tool`` now — whether
        or not such a tool exists, so that a refusal tells nobody which tools exist that they cannot see. Params
        are not looked at: :meth:`decide` holds them to the grants' constraints."""
        self._grant(identity, tool, classification=classification)

    def _usable(self, identity: Identity, tool: str, classification: str | None, now: float) -> list[Grant]:
        """The grants that admit ``tool`` for some params now."""
        return [grant for role, grant, name in self._grants(identity) if grant.matches(tool)
                and self._refusal(identity, role, grant, name, tool, None, classification, now)[1] is None]

    def visible_tools(self, identity: Identity, names: Iterable[str],
                      classifications: Mapping[str, str] | None = None) -> list[str]:
        """The tools of ``names`` the caller may run now, in the order given (``classifications``: their labels)."""
        now = self._clock()
        labels = classifications or {}
        return [name for name in names if self._usable(identity, name, labels.get(name), now)]

    def params_constraint(self, identity: Identity, tool: str, *,
                          classification: str | None = None) -> Mapping[str, Any] | None:
        """What the caller's params of ``tool`` are held to beyond its schema: None when a grant it may use has
        no constraint, else any one of its grants' constraints (``anyOf`` when they differ)."""
        return held_to([grant.params for grant in self._usable(identity, tool, classification, self._clock())])

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
