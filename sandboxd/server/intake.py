"""From an ``ExecuteRequest`` to an admitted execution — or to a refusal. Exactly one decision either way.

The order is the order of cost and of trust: who is calling (AUTH_FAILED) → is the daemon taking work
(DRAINING, AUDIT_UNAVAILABLE) → the request's size against the daemon's bound → the target exists → the
policy (grant, payload, ceilings, rate) → the params against the tool's schema → a concurrency slot (the
principal's, then the daemon's). The first refusal ends it; nothing has started.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sandboxd.api import convert
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.base.echo import ECHO_MAX_CHARS, cut
from sandboxd.base.errors import SandboxError
from sandboxd.base.refusals import InvalidRequest, PayloadTooLarge, RateLimited
from sandboxd.egress.allowlist import Allowlist
from sandboxd.egress.events import ExecutionRules
from sandboxd.engine.spec import ExecutionSpec
from sandboxd.policy.auth import Identity
from sandboxd.policy.decisions import Decision
from sandboxd.server.admission import Admission, Admitted
from sandboxd.server.runtime import Runtime

# Params larger than this are parsed and validated in a worker thread, not on the event loop.
PARAMS_OFF_LOOP_BYTES = 64 * 1024


@dataclass(frozen=True)
class Accepted:
    admitted: Admitted
    spec: ExecutionSpec
    decision: Decision
    network: ExecutionRules | None = None  # what it may connect to through the egress proxy; None = nothing


def network_details(rules: ExecutionRules | None) -> dict[str, list[str]] | None:
    """What the decision record says of the network: the allowlist, and the role's narrowing of it."""
    if rules is None:
        return None
    details = {"allow": rules.allow.texts()}
    if rules.narrow is not None:
        details["narrow"] = rules.narrow.texts()
    return details


def network_rules(allow: Allowlist | None, decision: Decision) -> ExecutionRules | None:
    """The target's allowlist, narrowed by the deciding role's (checked at load), with the byte budget."""
    if allow is None:
        return None
    narrow = None if decision.network_allow is None else Allowlist.parse(decision.network_allow)
    return ExecutionRules(allow=allow, narrow=narrow,
                          network_max_bytes=decision.effective_limits.network_max_bytes)


def target_of(request: pb.ExecuteRequest) -> str:
    """The tool name, or ``""`` for a raw command (as records and metrics name it)."""
    return request.tool if request.WhichOneof("target") == "tool" else ""


async def accept(
    request: pb.ExecuteRequest, identity: Identity, runtime: Runtime, admission: Admission
) -> Accepted:
    """Decide on ``request``; raises the refusal (a SandboxError with its reason) when there is one.

    Every request costs its principal a rate token: the decision takes one, and a refusal before it is
    charged one here (RATE_LIMITED instead, once the rate is used up)."""
    decided: list[Decision] = []
    try:
        return await _accept(request, identity, runtime, admission, decided)
    except RateLimited:
        raise
    except SandboxError:
        if not decided:
            runtime.policy.charge_refusal(identity)
        raise


async def _accept(request: pb.ExecuteRequest, identity: Identity, runtime: Runtime, admission: Admission,
                  decided: list[Decision]) -> Accepted:
    admission.check_open()
    daemon = runtime.config.daemon
    payload_bytes = request.ByteSize()
    if payload_bytes > daemon.max_request_bytes:
        raise PayloadTooLarge(
            f"request of {payload_bytes} bytes exceeds daemon.max_request_bytes = {daemon.max_request_bytes}"
        )
    requested = convert.limits_from_proto(request.limits)
    target = request.WhichOneof("target")
    registry = runtime.registry
    if target == "tool":
        if not registry.has(request.tool) and not runtime.policy.is_admin(identity):
            # Callers who may not see every tool learn of one only through their grants: an absent tool they
            # are not granted is refused as a present one would be (TOOL_NOT_GRANTED), never UNKNOWN_TOOL.
            runtime.policy.check_grant(identity, request.tool)
        tool = registry.get(request.tool)  # UNKNOWN_TOOL
        decision = runtime.policy.decide(
            identity, tool=tool.name, requested=requested, tool_limits=tool.limits, payload_bytes=payload_bytes
        )
        decided.append(decision)
        if len(request.params_json) > PARAMS_OFF_LOOP_BYTES:  # megabytes of JSON: parse and validate aside
            params = await asyncio.to_thread(registry.check_params, request.tool, request.params_json)
        else:
            params = registry.check_params(request.tool, request.params_json)
        spec = registry.plan_tool(
            request.tool, params=params, stdin=request.stdin, limits=decision.effective_limits,
            labels=request.labels,
        )
        network = network_rules(tool.network_allow, decision)
    elif target == "command":
        if request.params_json:
            raise InvalidRequest("params_json belongs to tools; a command reads its stdin")
        decision = runtime.policy.decide(
            identity, tool=None, requested=requested, tool_limits=registry.default_limits,
            payload_bytes=payload_bytes,
        )
        decided.append(decision)
        allow = _allow_hosts(list(request.command.allow_hosts))
        spec = registry.plan_command(
            list(request.command.argv), profile=request.command.profile, stdin=request.stdin,
            limits=decision.effective_limits, labels=request.labels, networked=allow is not None,
        )
        network = network_rules(allow, decision)
    else:
        raise InvalidRequest("the request names neither a tool nor a command")
    admitted = admission.admit(
        Admitted(
            execution_id=uuid.uuid4().hex[:16],
            tool=spec.tool,
            principal=identity.principal,
            request_id=request.request_id,
            labels=dict(request.labels),
        ),
        principal_max=decision.max_concurrent,
    )
    return Accepted(admitted, spec, decision, network)


def _allow_hosts(items: list[str] | None) -> Allowlist | None:
    """A raw command's ``allow_hosts``: none = no network at all."""
    if not items:
        return None
    try:
        return Allowlist.parse(items)
    except ValueError as exc:
        raise InvalidRequest(f"command.allow_hosts: {cut(str(exc), ECHO_MAX_CHARS)}") from None
