"""Sessions: sandboxes that live across calls, as the daemon keeps them.

A session is one execution that keeps a sandbox standing — its *keeper*, ``/bin/sleep infinity`` under its
init, with the session's limits on the session's cgroup (see :class:`~sandboxd.engine.run.SessionSandbox`)
— and the calls that join it: each an ``Execute`` with the session's id, decided, admitted, limited and
audited like any other, run in the session's root, ``/work``, network and uid, in a cgroup of its own below
the session's. Its owner (and admins) may use it; nobody else learns it exists.

A session ends when it is closed (its owner, an admin), after ``idle_timeout`` without a call, at
``max_lifetime``, when the daemon stops, or when its keeper dies; its running calls are cancelled first, then
the keeper's cgroup is killed and removed with everything below it. Records: ``session.created``,
``session.closed`` / ``session.expired``; each call's as any execution's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sandboxd.api import convert
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.session_ids import new_session_id
from sandboxd.base.errors import SandboxError
from sandboxd.base.limits import Limits
from sandboxd.base.refusals import InvalidRequest, SessionFailed, TooManySessions, UnknownSession
from sandboxd.egress.events import ExecutionRules
from sandboxd.egress.proxy import EgressProxy, ExecutionEgress
from sandboxd.egress.settings import PROXY_PORT
from sandboxd.engine.executor import Executor
from sandboxd.engine.result import NetworkReady, Result, Started, Status
from sandboxd.engine.run import SessionSandbox
from sandboxd.engine.spec import ExecutionSpec
from sandboxd.policy.auth import Identity
from sandboxd.server.admission import Admission, Admitted
from sandboxd.server.audit_trail import AuditTrail, Subject
from sandboxd.server.config import SessionsConfig
from sandboxd.server.execution_network import NetworkRecorder
from sandboxd.server.metrics import Metrics
from sandboxd.server.network_rules import allow_hosts, network_rules
from sandboxd.server.runtime import Runtime
from sandboxd.server.tools import BASE_ENV

log = logging.getLogger("sandboxd.sessions")

KEEPER_ARGV = ("/bin/sleep", "infinity")
KEEPER_OUTPUT_BYTES = 4096
_BUSY_RECHECK_S = 1.0
CALLS_END_TIMEOUT_S = 10.0  # after cancelling a closing session's calls: how long they get to deliver Results


@dataclass
class OpenSession:
    session_id: str
    principal: str
    tool: str  # "" for a command session
    profile: str  # a command session's calls' default profile
    role: str
    limits: Limits
    network: ExecutionRules | None
    labels: Mapping[str, str]
    created_at: float  # unix seconds
    expires_at: float  # unix seconds
    idle_timeout_s: float
    sandbox: SessionSandbox
    admitted: Admitted  # the keeper's: its token ends the session
    keeper: asyncio.Task[Result]
    last_used_at: float = field(default_factory=time.time)
    executions: int = 0
    running: int = 0
    ending: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while no call runs

    def call_started(self) -> None:
        self.executions += 1
        self.running += 1
        self.idle.clear()
        self.last_used_at = time.time()

    def call_ended(self) -> None:
        self.running -= 1
        self.last_used_at = time.time()  # idle from here
        if self.running == 0:
            self.idle.set()

    def message(self) -> pb.Session:
        return pb.Session(
            session_id=self.session_id, tool=self.tool, principal=self.principal,
            limits=convert.limits_to_proto(self.limits), uid=self.sandbox.uid,
            created_at=convert.timestamp(self.created_at), expires_at=convert.timestamp(self.expires_at),
            idle_timeout_ms=int(self.idle_timeout_s * 1000), labels=dict(self.labels), executions=self.executions,
            running=self.running, last_used_at=convert.timestamp(self.last_used_at),
        )


class Sessions:
    def __init__(self, *, executor: Executor, admission: Admission, trail: AuditTrail, metrics: Metrics,
                 egress: EgressProxy | None, instance: str = "default") -> None:
        self._instance = instance  # named in every session id, so a client of a fleet finds the session here
        self._executor = executor
        self._admission = admission
        self._trail = trail
        self._metrics = metrics
        self._egress = egress
        self._open: dict[str, OpenSession] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._open)

    # -- who may see what ----------------------------------------------------------------------------

    def get(self, session_id: str, identity: Identity, runtime: Runtime) -> OpenSession:
        """The session, when the caller owns it or is admin; otherwise as if it did not exist."""
        session = self._open.get(session_id)
        if session is None or session.ending or not (
                session.principal == identity.principal or runtime.policy.is_admin(identity)):
            raise UnknownSession(f"no open session {session_id[:64]!r} of yours; `sandboxctl session ls` lists them")
        return session

    def visible(self, identity: Identity, runtime: Runtime) -> list[OpenSession]:
        everyone = runtime.policy.is_admin(identity)
        return sorted((s for s in self._open.values() if not s.ending and (everyone or s.principal ==
                       identity.principal)), key=lambda s: s.created_at)

    # -- creating ------------------------------------------------------------------------------------

    async def create(self, request: pb.CreateSessionRequest, identity: Identity, runtime: Runtime) -> OpenSession:
        """Decide, bound, build the sandbox, record ``session.created``; raises the refusal when there is one."""
        self._admission.check_open()
        registry, policy, config = runtime.registry, runtime.policy, runtime.config.sessions
        requested = convert.limits_from_proto(request.limits)
        target = request.WhichOneof("target")
        if target == "tool":
            if not registry.has(request.tool) and not policy.is_admin(identity):
                policy.check_grant(identity, request.tool)  # refuses an absent tool as a present one
            tool = registry.get(request.tool)
            decision = policy.decide(identity, tool=tool.name, requested=requested, tool_limits=tool.limits,
                                     payload_bytes=request.ByteSize())
            allow, binds, name, profile = tool.network_allow, tool.binds, tool.name, tool.seccomp_profile
        elif target == "command":
            decision = policy.decide(identity, tool=None, requested=requested, tool_limits=registry.default_limits,
                                     payload_bytes=request.ByteSize())
            allow, binds, name = allow_hosts(list(request.command.allow_hosts)), (), ""
            profile = request.command.profile or registry.default_profile
            registry.profile_bpf(profile)  # UNKNOWN_PROFILE now, not at the first call
        else:
            raise InvalidRequest("the request names neither a tool nor a command")
        limits = decision.effective_limits
        self._check_bounds(identity, limits, config, decision.max_sessions)
        idle_ms = min(request.idle_timeout_ms or config.idle_timeout_ms, config.idle_timeout_ms)
        lifetime_ms = min(request.max_lifetime_ms or config.max_lifetime_ms, config.max_lifetime_ms)
        network = network_rules(allow, decision)
        keeper_spec = ExecutionSpec(
            argv=KEEPER_ARGV, seccomp_bpf=registry.profile_bpf(registry.default_profile), env=dict(BASE_ENV),
            limits=dataclasses.replace(limits, wall_time_ms=None, cpu_time_ms=None,
                                       output_max_bytes=KEEPER_OUTPUT_BYTES),
            binds=binds, seccomp_profile_name=registry.default_profile, tool=name, labels=dict(request.labels),
            egress_listen_port=PROXY_PORT if network is not None else None,
        )
        session_id = new_session_id(self._instance)
        admitted = Admitted(execution_id=session_id, tool=name, principal=identity.principal,
                            request_id=request.request_id, labels=dict(request.labels))
        started: asyncio.Future[SessionSandbox] = asyncio.get_running_loop().create_future()
        keeper = asyncio.create_task(self._keep(keeper_spec, admitted, network, started))
        watched: set[asyncio.Future[object]] = {keeper, started}  # type: ignore[arg-type]
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            result = keeper.result()
            raise SessionFailed(f"the session's sandbox could not be built: {result.message}")
        now = time.time()
        session = OpenSession(
            session_id, identity.principal, name, profile, decision.role, limits, network, dict(request.labels),
            created_at=now, expires_at=now + lifetime_ms / 1000, idle_timeout_s=idle_ms / 1000,
            sandbox=started.result(), admitted=admitted, keeper=keeper)
        session.idle.set()
        self._open[session_id] = session
        self._trail.session_created(self._subject(session), role=decision.role, limits=limits,
                                    uid=session.sandbox.uid, idle_timeout_ms=idle_ms, max_lifetime_ms=lifetime_ms,
                                    network=None if network is None else network.allow.texts())
        watcher = asyncio.create_task(self._watch(session))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return session

    def _check_bounds(self, identity: Identity, limits: Limits, config: SessionsConfig,
                      role_max: int | None) -> None:
        own = sum(1 for s in self._open.values() if s.principal == identity.principal)
        bound = min(config.max_per_principal, role_max if role_max is not None else math.inf)
        if own >= bound:
            raise TooManySessions(f"principal {identity.principal!r} has {own} open sessions, the most allowed "
                                  f"({int(bound)}); close one first")
        if len(self._open) >= config.max_total:
            raise TooManySessions(f"{len(self._open)} sessions are open, the most this daemon allows "
                                  f"(sessions.max_total = {config.max_total})")
        if limits.memory_max_bytes is None:
            raise InvalidRequest("a session needs a memory limit: sessions.memory_total bounds them together")
        held = sum(s.limits.memory_max_bytes or 0 for s in self._open.values())
        if held + limits.memory_max_bytes > config.memory_total_bytes:
            raise TooManySessions(f"open sessions hold {held} bytes of memory limits; {limits.memory_max_bytes} "
                                  f"more would pass sessions.memory_total = {config.memory_total_bytes}")

    async def _keep(self, spec: ExecutionSpec, admitted: Admitted, network: ExecutionRules | None,
                    started: asyncio.Future[SessionSandbox]) -> Result:
        """Run the keeper to its end, serving the session's door out meanwhile; its Result."""
        egress: ExecutionEgress | None = None
        result = Result(admitted.execution_id, Status.CANCELLED, "the session's keeper ended early")
        try:
            async for event in self._executor.execute(spec, execution_id=admitted.execution_id,
                                                      cancel=admitted.cancel_token, opens_session=True):
                if isinstance(event, NetworkReady) and network is not None and self._egress is not None:
                    recorder = NetworkRecorder(admitted=admitted, trail=self._trail, metrics=self._metrics,
                                               network_max_bytes=network.network_max_bytes)
                    egress = self._egress.attach(event.listener.dup(), network, recorder)
                elif isinstance(event, Started):
                    sandbox = self._executor.session(admitted.execution_id)
                    if sandbox is not None and not started.done():
                        started.set_result(sandbox)
                elif isinstance(event, Result):
                    result = event
        finally:
            if egress is not None:
                await egress.close()
        return result

    # -- ending ---------------------------------------------------------------------------------------

    async def close(self, session: OpenSession, *, by: str, expired: str = "") -> None:
        """End ``session``: cancel its running calls, then kill its sandbox; ``expired``: why it ended by
        itself ("idle", "lifetime", "keeper ended"). Waits until it is gone; a second close waits too."""
        if session.ending:
            await session.ended.wait()
            return
        session.ending = True
        try:
            for admitted in self._admission.admitted():
                if admitted.session_id == session.session_id:
                    admitted.cancel(by)
            try:  # a call whose caller does not read its Result must not hold the session up for ever
                await asyncio.wait_for(session.idle.wait(), CALLS_END_TIMEOUT_S)
            except TimeoutError:
                log.warning("session %s: %d calls did not end in %.0f s; ending the session under them",
                            session.session_id, session.running, CALLS_END_TIMEOUT_S)
            session.admitted.cancel(by)  # killing its cgroup kills what is left of its calls too
            result = await session.keeper
            subject = self._subject(session)
            event, ended_by = ("session.expired", expired) if expired else ("session.closed", by)
            record = self._trail.session_ended(subject, event, by=ended_by, executions=session.executions,
                                               memory_peak_bytes=result.memory_peak_bytes)
            await self._trail.durable(record)  # whoever closed it hears so once the record is on disk
        except SandboxError as error:  # the audit log failed: the session is gone all the same
            log.error("session %s: %s", session.session_id, error.message)
        finally:
            self._open.pop(session.session_id, None)
            session.ended.set()

    async def close_all(self, *, by: str) -> None:
        await asyncio.gather(*(self.close(s, by=by) for s in list(self._open.values())))
        for watcher in list(self._watchers):
            watcher.cancel()

    async def _watch(self, session: OpenSession) -> None:
        """End the session when idle too long, past its lifetime, or when its keeper died."""
        while not session.ending:
            now = time.time()
            if session.keeper.done():
                await self.close(session, by="daemon", expired="keeper ended")
                return
            if now >= session.expires_at:
                await self.close(session, by="daemon", expired="lifetime")
                return
            idle_until = session.last_used_at + session.idle_timeout_s
            if session.running == 0 and now >= idle_until:
                await self.close(session, by="daemon", expired="idle")
                return
            wake_s = min(session.expires_at, idle_until if session.running == 0 else now + _BUSY_RECHECK_S) - now
            await asyncio.wait({session.keeper}, timeout=max(0.05, wake_s))  # a timeout leaves the keeper be

    @staticmethod
    def _subject(session: OpenSession) -> Subject:
        return Subject(session.principal, session.tool, session.session_id, session.admitted.request_id)

