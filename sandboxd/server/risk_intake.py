"""The risk step of the intake: after the policy allowed a request, its role's risk threshold (if any) is put
to the risk assessor (:mod:`sandboxd.policy.risk`); the decision comes back with what the assessor said, or
the request is refused (RISK_TOO_HIGH, RISK_UNAVAILABLE). The rate token is already taken by then: an
assessment costs the assessor, so it is never free."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from sandboxd.policy.auth import Identity
from sandboxd.policy.decisions import Decision
from sandboxd.policy.risk import Observer, RiskRequest
from sandboxd.server.runtime import Runtime


async def assess_risk(runtime: Runtime, identity: Identity, decision: Decision, *,
                      params: Mapping[str, Any] | None, argv: Sequence[str] | None, labels: Mapping[str, str],
                      request_id: str, observe: Observer | None = None) -> Decision:
    """``decision`` with the assessment in it, or the refusal raised. ``params`` of a tool call, ``argv`` of a
    raw command."""
    role = runtime.policy.config.roles.get(decision.role)
    gate = runtime.risk
    if gate is None or role is None or role.risk_threshold is None:
        return decision
    request = RiskRequest.of(identity, role=role.name, tool=decision.tool, params=params, argv=argv,
                             labels=labels, request_id=request_id, send_params=gate.config.send_params)
    details = await gate.check(role, request, observe=observe)
    return dataclasses.replace(decision, risk=details.get("risk"))
