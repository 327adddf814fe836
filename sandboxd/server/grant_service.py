"""The runtime-grant RPCs of ``sandboxd.v1.Sandbox`` — Grant, Revoke, ListGrants — as a part of the servicer
(:class:`~sandboxd.server.service.SandboxService` mixes it in), and the keeper that ends grants at their expiry.

A change, one at a time (the keeper's lock)::

    Grant/Revoke   who calls (request.received) → admin? (ADMIN_ONLY) → valid? (INVALID_REQUEST,
                   GRANT_NOT_FOUND) → decision allowed → the grants file written (aside, fsynced, renamed)
                   → the live grants swapped (the next request sees them) → grant.created / grant.revoked,
                   fsynced → the answer
    expiry         a timer at the earliest expiry, and every request's intake when one is due: the file
                   rewritten without the expired grants → grant.expired, one per grant

The policy never honours an expired grant, swept or not: the sweep is what the file and the audit trail say.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import grpc

from sandboxd.api import convert
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.status import status_for, trailing_metadata_for
from sandboxd.audit.record import AuditRecord
from sandboxd.base.echo import cut
from sandboxd.base.errors import SandboxError
from sandboxd.base.limits import Limits
from sandboxd.base.refusals import AdminOnly, InvalidRequest, UnknownGrant
from sandboxd.policy.auth import Identity
from sandboxd.policy.runtime_grants import RuntimeGrant, RuntimeGrants, new_grant
from sandboxd.server.audit_trail import AuditTrail, Subject
from sandboxd.server.mcp_servers_config import SEPARATOR
from sandboxd.server.runtime import Runtime

log = logging.getLogger("sandboxd.grants")


async def _abort(context: grpc.aio.ServicerContext, error: SandboxError) -> NoReturn:
    await context.abort(status_for(error), cut(error.message), trailing_metadata_for(error))
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def _iso(unix_s: float) -> str:
    return datetime.datetime.fromtimestamp(unix_s, datetime.UTC).isoformat().replace("+00:00", "Z")


def grant_details(grant: RuntimeGrant) -> dict[str, Any]:
    """What a ``grant.*`` record says of the grant."""
    return {"grant_id": grant.grant_id, "expires_at": _iso(grant.expires_at), "reason": grant.reason,
            "params": None if grant.params is None else dict(grant.params.schema), "created_by": grant.created_by}


def grant_message(grant: RuntimeGrant) -> pb.RuntimeGrant:
    return pb.RuntimeGrant(
        grant_id=grant.grant_id, principal=grant.principal, tool=grant.tool,
        params_constraint_json="" if grant.params is None else grant.params.to_json(),
        expires_at=convert.timestamp(grant.expires_at), created_at=convert.timestamp(grant.created_at),
        created_by=grant.created_by, reason=grant.reason,
    )


class GrantKeeper:
    """Changes the runtime grants one at a time, and ends them at their expiry (a timer, and :meth:`sweep_due`)."""

    def __init__(self, trail: AuditTrail, *, clock: Callable[[], float] = time.time) -> None:
        self._trail = trail
        self._clock = clock
        self.lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._sweeps: set[asyncio.Task[None]] = set()

    async def change(self, store: RuntimeGrants, *, add: RuntimeGrant | None = None,
                     remove: Sequence[str] = ()) -> None:
        """Persist and install the change (the caller holds :attr:`lock`); OSError when the file cannot be
        written, and nothing changed."""
        grants = store.replaced(add=add, remove=remove)
        await asyncio.to_thread(store.persist, grants)
        store.install(grants)
        self.arm(store)

    async def sweep_due(self, store: RuntimeGrants | None) -> None:
        """Drop the grants whose expiry has passed, recording each; cheap when none has."""
        if store is None:
            return
        due = store.next_expiry()
        if due is None or due > self._clock():
            self.arm(store)
            return
        async with self.lock:
            expired = store.expired(self._clock())
            if not expired:
                return
            self._trail.check_writable()  # no grant ends unrecorded
            try:
                await self.change(store, remove=[grant.grant_id for grant in expired])
            except OSError as exc:  # kept in the file for now; the policy ignores them all the same
                log.error("expired runtime grants could not be dropped from %s: %s", store.path, exc)
                return
            for grant in expired:
                self._trail.runtime_grant("grant.expired", Subject(grant.principal, grant.tool),
                                          {**grant_details(grant), "by": "expiry"})

    def arm(self, store: RuntimeGrants) -> None:
        """A timer at the earliest expiry (replacing one set for another time)."""
        due = store.next_expiry()
        if due == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, due
        if due is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, due - self._clock()) + 0.001, self._fire, store)

    def _fire(self, store: RuntimeGrants) -> None:
        self._timer = self._timer_at = None
        task = asyncio.get_running_loop().create_task(self._timed_sweep(store))
        self._sweeps.add(task)
        task.add_done_callback(self._sweeps.discard)

    async def _timed_sweep(self, store: RuntimeGrants) -> None:
        try:
            await self.sweep_due(store)
        except SandboxError as error:  # the audit log is down: the next request's intake sweeps again
            log.error("expired runtime grants could not be recorded: %s", error.message)


class GrantRpcs:
    # provided by the servicer this is mixed into
    _runtime: Callable[[], Runtime]
    _trail: AuditTrail
    _grant_keeper: GrantKeeper

    async def _identify(self, context: grpc.aio.ServicerContext, runtime: Runtime, rpc: str) -> Identity:
        raise NotImplementedError

    def _allow(self, subject: Subject, *, rpc: str, role: str = "", limits: Limits | None = None,
               command: Sequence[str] | None = None, clamped: Sequence[str] = (),
               network: Mapping[str, Sequence[str]] | None = None,
               policy: Mapping[str, Any] | None = None) -> AuditRecord:
        raise NotImplementedError

    async def _deny(self, context: grpc.aio.ServicerContext, subject: Subject, *, rpc: str,
                    error: SandboxError, peer: str = "") -> NoReturn:
        raise NotImplementedError

    async def _caller(self, context: grpc.aio.ServicerContext, rpc: str, tool: str = "",
                      request_id: str = "", labels: Mapping[str, str] | None = None
                      ) -> tuple[Runtime, Identity, Subject]:
        raise NotImplementedError

    async def _admin(self, context: grpc.aio.ServicerContext, rpc: str, tool: str,
                     request_id: str) -> tuple[Runtime, Identity, Subject, RuntimeGrants]:
        runtime, identity, subject = await self._caller(context, rpc, tool, request_id)
        if not runtime.policy.is_admin(identity):
            await self._deny(context, subject, rpc=rpc, error=AdminOnly("runtime grants are made by admin principals"))
        if runtime.grants is None:  # pragma: no cover - build_runtime always loads them
            await self._deny(context, subject, rpc=rpc, error=InvalidRequest("this daemon keeps no runtime grants"))
        return runtime, identity, subject, runtime.grants

    async def _recorded(self, context: grpc.aio.ServicerContext, record: AuditRecord) -> None:
        try:
            await self._trail.durable(record)
        except SandboxError as error:
            await _abort(context, error)

    async def Grant(self, request: pb.GrantRequest, context: grpc.aio.ServicerContext) -> pb.RuntimeGrant:
        runtime, identity, subject, store = await self._admin(context, "Grant", request.tool, request.request_id)
        async with self._grant_keeper.lock:
            try:
                grant = new_grant(
                    principal=request.principal, tool=request.tool, params_json=request.params_constraint_json,
                    expires_at=request.expires_at.ToNanoseconds() / 1e9 if request.HasField("expires_at") else None,
                    ttl_ms=request.ttl_ms, reason=request.reason, created_by=identity.principal, now=time.time(),
                    policy=runtime.policy.config, tool_names=runtime.tool_names,
                    tool_prefixes=[f"{name}{SEPARATOR}" for name in runtime.mcp_servers])
                store.check_room(grant.principal, runtime.policy.config.runtime_grants)
            except ValueError as exc:
                await self._deny(context, subject, rpc="Grant", error=InvalidRequest(f"grant refused: {exc}"))
            self._allow(subject, rpc="Grant", policy={"grant_id": grant.grant_id, "grantee": grant.principal})
            try:
                await self._grant_keeper.change(store, add=grant)
            except OSError as exc:
                log.error("runtime grant %s could not be written to %s: %s", grant.grant_id, store.path, exc)
                await _abort(context, SandboxError(f"the grant could not be kept: {exc}"))
            record = self._trail.runtime_grant("grant.created", Subject(grant.principal, grant.tool, "",
                                                                        request.request_id),
                                               {**grant_details(grant), "by": identity.principal})
        log.info("runtime grant %s: %s may run %s until %s (by %s)", grant.grant_id, grant.principal, grant.tool,
                 _iso(grant.expires_at), identity.principal)
        await self._recorded(context, record)
        return grant_message(grant)

    async def Revoke(self, request: pb.RevokeRequest, context: grpc.aio.ServicerContext) -> pb.RevokeResponse:
        _, identity, subject, store = await self._admin(context, "Revoke", "", request.request_id)
        async with self._grant_keeper.lock:
            grant = store.get(request.grant_id)
            if grant is None:
                await self._deny(context, subject, rpc="Revoke", error=UnknownGrant(
                    f"no runtime grant {request.grant_id[:64]!r}; `sandboxctl grants` lists them"))
            self._allow(subject, rpc="Revoke", policy={"grant_id": grant.grant_id, "grantee": grant.principal})
            try:
                await self._grant_keeper.change(store, remove=[grant.grant_id])
            except OSError as exc:
                log.error("runtime grant %s could not be revoked in %s: %s", grant.grant_id, store.path, exc)
                await _abort(context, SandboxError(f"the revoke could not be kept: {exc}"))
            record = self._trail.runtime_grant(
                "grant.revoked", Subject(grant.principal, grant.tool, "", request.request_id),
                {**grant_details(grant), "by": identity.principal, "revoke_reason": request.reason[:500]})
        log.info("runtime grant %s revoked by %s", grant.grant_id, identity.principal)
        await self._recorded(context, record)
        return pb.RevokeResponse(grant=grant_message(grant))

    async def ListGrants(self, request: pb.ListGrantsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListGrantsResponse:
        runtime = self._runtime()
        identity = await self._identify(context, runtime, "ListGrants")
        store = runtime.grants
        try:
            await self._grant_keeper.sweep_due(store)
        except SandboxError as error:  # an expiry that cannot be recorded: the log is down
            await _abort(context, error)
        everyone = runtime.policy.is_admin(identity)
        grants = [grant for grant in (store.all() if store is not None else [])
                  if (everyone or grant.principal == identity.principal)
                  and (not request.principal or grant.principal == request.principal)]
        return pb.ListGrantsResponse(grants=[grant_message(grant) for grant in grants])

