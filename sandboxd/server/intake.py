"""From an ``ExecuteRequest`` to an admitted execution — or to a refusal. Exactly one decision either way.

The order is the order of cost and of trust: who is calling (AUTH_FAILED) → is the daemon taking work
(DRAINING, AUDIT_UNAVAILABLE) → the request's size against the daemon's bound → the target exists → a grant of
it → the params against the tool's schema → the policy (a grant admitting these params, payload, ceilings,
rate) → the risk assessor, for a role with a risk_threshold → a concurrency slot (the principal's, then the
daemon's). The first refusal ends it; nothing has started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from dataclasses import dataclass

from sandboxd.api import convert
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.base.errors import SandboxError
from sandboxd.base.refusals import InvalidRequest, PayloadTooLarge, RateLimited, UnknownSession
from sandboxd.egress.events import ExecutionRules
from sandboxd.engine.spec import ExecutionSpec
from sandboxd.policy.auth import Identity
from sandboxd.policy.decisions import Decision
from sandboxd.policy.risk import Observer
from sandboxd.server.admission import Admission, Admitted
from sandboxd.server.network_rules import allow_hosts, network_rules
from sandboxd.server.risk_intake import assess_risk
from sandboxd.server.runtime import Runtime
from sandboxd.server.sessions import OpenSession, Sessions

# Params larger than this are parsed and validated in a worker thread, not on the event loop.
PARAMS_OFF_LOOP_BYTES = 64 * 1024


@dataclass(frozen=True)
class Accepted:
    admitted: Admitted
    spec: ExecutionSpec
    decision: Decision
    network: ExecutionRules | None = None  # what it may connect to through the egress proxy; None = nothing
    session: OpenSession | None = None  # the session it runs in (its network is the session's)






def checked_payload_bytes(request: pb.ExecuteRequest, runtime: Runtime) -> int:
    """The request's size, or PAYLOAD_TOO_LARGE past ``daemon.max_request_bytes``."""
    payload_bytes = request.ByteSize()
    limit_bytes = runtime.config.daemon.max_request_bytes
    if payload_bytes > limit_bytes:
        raise PayloadTooLarge(f"request of {payload_bytes} bytes exceeds daemon.max_request_bytes = {limit_bytes}")
    return payload_bytes


def target_of(request: pb.ExecuteRequest) -> str:
    """The tool name, or ``""`` for a raw command (as records and metrics name it)."""
    return request.tool if request.WhichOneof("target") == "tool" else ""


async def accept(
    request: pb.ExecuteRequest, identity: Identity, runtime: Runtime, admission: Admission,
    sessions: Sessions | None = None, *, observe_risk: Observer | None = None,
) -> Accepted:
    """Decide on ``request``; raises the refusal (a SandboxError with its reason) when there is one.

    Every request costs its principal a rate token: the decision takes one, and a refusal before it is
    charged one here (RATE_LIMITED instead, once the rate is used up). ``observe_risk``: told how each risk
    assessment went (the metrics)."""
    decided: list[Decision] = []
    try:
        return await _accept(request, identity, runtime, admission, decided, sessions, observe_risk)
    except RateLimited:
        raise
    except SandboxError:
        if not decided:
            runtime.policy.charge_refusal(identity)
        raise


async def _accept(request: pb.ExecuteRequest, identity: Identity, runtime: Runtime, admission: Admission,
                  decided: list[Decision], sessions: Sessions | None, observe_risk: Observer | None) -> Accepted:
    admission.check_open()
    session = None
    if request.session_id:
        if sessions is None:
            raise UnknownSession("this daemon keeps no sessions")
        session = sessions.get(request.session_id, identity, runtime)
        check_session_target(request, session)
    payload_bytes = checked_payload_bytes(request, runtime)
    requested = convert.limits_from_proto(request.limits)
    target = request.WhichOneof("target")
    registry = runtime.registry
    if target == "tool":
        if not registry.has(request.tool) and not runtime.policy.is_admin(identity):
            # Callers who may not see every tool learn of one only through their grants: an absent tool they
            # are not granted is refused as a present one would be (TOOL_NOT_GRANTED), never UNKNOWN_TOOL.
            runtime.policy.check_grant(identity, request.tool)
        tool = registry.get(request.tool)  # UNKNOWN_TOOL
        # not granted at all (or its role's conditions unmet): refused before its params are read
        runtime.policy.check_grant(identity, tool.name, classification=tool.classification)
        if len(request.params_json) > PARAMS_OFF_LOOP_BYTES:  # megabytes of JSON: parse and validate aside
            params = await asyncio.to_thread(registry.check_params, request.tool, request.params_json)
        else:
            params = registry.check_params(request.tool, request.params_json)
        decision = runtime.policy.decide(  # the grants' params constraints too
            identity, tool=tool.name, requested=requested, tool_limits=tool.limits, payload_bytes=payload_bytes,
            params=params, classification=tool.classification,
        )
        decided.append(decision)
        decision = await assess_risk(runtime, identity, decision, params=params, argv=None, labels=request.labels,
                                     request_id=request.request_id, observe=observe_risk)
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
        decision = await assess_risk(runtime, identity, decision, params=None, argv=list(request.command.argv),
                                     labels=request.labels, request_id=request.request_id, observe=observe_risk)
        allow = allow_hosts(list(request.command.allow_hosts))
        profile = request.command.profile or (session.profile if session is not None else "")
        spec = registry.plan_command(
            list(request.command.argv), profile=profile, stdin=request.stdin,
            limits=decision.effective_limits, labels=request.labels,
            networked=allow is not None or (session is not None and session.network is not None),
        )
        network = network_rules(allow, decision)
    else:
        raise InvalidRequest("the request names neither a tool nor a command")
    if session is not None:  # the session's root, binds and door out, not a sandbox of its own
        spec = dataclasses.replace(spec, egress_listen_port=None)
        network = None
    admitted = admission.admit(
        Admitted(
            execution_id=uuid.uuid4().hex[:16],
            tool=spec.tool,
            principal=identity.principal,
            request_id=request.request_id,
            labels=dict(request.labels),
            session_id=session.session_id if session is not None else "",
        ),
        principal_max=decision.max_concurrent,
    )
    return Accepted(admitted, spec, decision, network, session)


def check_session_target(request: pb.ExecuteRequest, session: OpenSession) -> None:
    """A session runs what it was made for: its tool's calls, or (a command session) raw commands."""
    target = request.WhichOneof("target")
    if session.tool and (target != "tool" or request.tool != session.tool):
        raise InvalidRequest(f"session {session.session_id} runs tool {session.tool!r}: name it as the tool")
    if not session.tool and target != "command":
        raise InvalidRequest(f"session {session.session_id} runs raw commands: send a command")
    if target == "command" and request.command.allow_hosts:
        raise InvalidRequest("a call in a session uses the session's network: allow_hosts belongs to "
                             "CreateSession")

