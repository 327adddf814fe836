"""The session RPCs of ``sandboxd.v1.Sandbox`` — CreateSession, CloseSession, ListSessions, PutFile, GetFile —
as a part of the servicer (:class:`~sandboxd.server.service.SandboxService` mixes it in): identify the caller,
record the request, delegate to :class:`~sandboxd.server.sessions.Sessions` and the confined file I/O of
:mod:`sandboxd.engine.files`, refuse through the servicer's one path.

Files move in chunks of ``FILE_CHUNK_BYTES`` through a worker thread, at most ``[sessions] file_max`` each; a
path is relative to the session's ``/work`` and never leaves it (see :mod:`sandboxd.engine.files`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import NoReturn

import grpc

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.handlers import Undecodable
from sandboxd.audit.record import AuditRecord
from sandboxd.base.errors import SandboxError
from sandboxd.base.limits import Limits
from sandboxd.base.refusals import FileRefusal, SessionFailed
from sandboxd.engine.files import DEFAULT_FILE_MODE, FileInfo, FileReader, FileRefused, FileWriter, open_work_dir
from sandboxd.policy.auth import Identity
from sandboxd.server.audit_trail import AuditTrail, Subject
from sandboxd.server.network_rules import network_details
from sandboxd.server.runtime import Runtime
from sandboxd.server.sessions import OpenSession, Sessions


class SessionRpcs:
    # provided by the servicer this is mixed into
    _runtime: Callable[[], Runtime]
    _trail: AuditTrail
    _sessions: Sessions | None

    async def _identify(self, context: grpc.aio.ServicerContext, runtime: Runtime, rpc: str) -> Identity:
        raise NotImplementedError

    def _allow(self, subject: Subject, *, rpc: str, role: str = "", limits: Limits | None = None,
               command: Sequence[str] | None = None, clamped: Sequence[str] = (),
               network: Mapping[str, Sequence[str]] | None = None) -> AuditRecord:
        raise NotImplementedError

    async def _deny(self, context: grpc.aio.ServicerContext, subject: Subject, *, rpc: str,
                    error: SandboxError, peer: str = "") -> NoReturn:
        raise NotImplementedError

    async def refuse_undecodable(self, request: Undecodable, context: grpc.aio.ServicerContext) -> NoReturn:
        raise NotImplementedError

    @property
    def _kept(self) -> Sessions:
        if self._sessions is None:
            raise SessionFailed("this daemon keeps no sessions")
        return self._sessions

    async def _caller(self, context: grpc.aio.ServicerContext, rpc: str, tool: str = "",
                      request_id: str = "", labels: Mapping[str, str] | None = None
                      ) -> tuple[Runtime, Identity, Subject]:
        raise NotImplementedError

    async def _session(self, context: grpc.aio.ServicerContext, rpc: str, session_id: str) -> tuple[
            OpenSession, Subject]:
        runtime, identity, subject = await self._caller(context, rpc)
        try:
            session = self._kept.get(session_id, identity, runtime)
        except SandboxError as error:
            runtime.policy.charge_refusal(identity)
            await self._deny(context, subject, rpc=rpc, error=error)
        subject = Subject(identity.principal, session.tool, session.session_id, "")
        return session, subject

    async def CreateSession(self, request: pb.CreateSessionRequest | Undecodable,
                            context: grpc.aio.ServicerContext) -> pb.Session:
        if isinstance(request, Undecodable):
            await self.refuse_undecodable(request, context)
        tool = request.tool if request.WhichOneof("target") == "tool" else ""
        runtime, identity, subject = await self._caller(context, "CreateSession", tool, request.request_id)
        try:
            session = await self._kept.create(request, identity, runtime)
        except SandboxError as error:
            await self._deny(context, subject, rpc="CreateSession", error=error)
        self._allow(Subject(identity.principal, tool, session.session_id, request.request_id), rpc="CreateSession",
                    role=session.role, limits=session.limits, network=network_details(session.network))
        return session.message()

    async def CloseSession(self, request: pb.CloseSessionRequest | Undecodable,
                           context: grpc.aio.ServicerContext) -> pb.CloseSessionResponse:
        if isinstance(request, Undecodable):
            await self.refuse_undecodable(request, context)
        session, subject = await self._session(context, "CloseSession", request.session_id)
        self._allow(subject, rpc="CloseSession")
        await self._kept.close(session, by=subject.principal)
        return pb.CloseSessionResponse()

    async def ListSessions(self, request: pb.ListSessionsRequest | Undecodable,
                           context: grpc.aio.ServicerContext) -> pb.ListSessionsResponse:
        if isinstance(request, Undecodable):
            await self.refuse_undecodable(request, context)
        runtime = self._runtime()
        identity = await self._identify(context, runtime, "ListSessions")
        return pb.ListSessionsResponse(sessions=[s.message() for s in self._kept.visible(identity, runtime)])

    async def PutFile(self, requests: AsyncIterator[pb.PutFileInput | Undecodable],
                      context: grpc.aio.ServicerContext) -> pb.FileInfo:
        first = await anext(aiter(requests), None)
        if isinstance(first, Undecodable):
            await self.refuse_undecodable(first, context)
        if first is None or first.WhichOneof("part") != "header":
            await self.refuse_undecodable(Undecodable("PutFile", "sandboxd.v1.PutFileInput",
                                                      "the first message must be the header"), context)
        header = first.header
        session, subject = await self._session(context, "PutFile", header.session_id)
        config = self._runtime().config.sessions
        try:
            writer = await asyncio.to_thread(_open_writer, session, header.path, header.mode or DEFAULT_FILE_MODE,
                                             config.file_max_bytes)
        except FileRefused as refused:
            await self._deny(context, subject, rpc="PutFile", error=FileRefusal(str(refused)))
        info: FileInfo | None = None
        try:
            async for message in requests:
                if isinstance(message, Undecodable) or message.WhichOneof("part") != "data":
                    raise FileRefused("after the header, a PutFile stream carries data only")
                await asyncio.to_thread(writer.write, message.data)
            info = await asyncio.to_thread(writer.commit)
        except FileRefused as refused:
            await self._deny(context, subject, rpc="PutFile", error=FileRefusal(str(refused)))
        finally:
            if info is None:
                await asyncio.to_thread(writer.abort)
        session.last_used_at = time.time()
        self._trail.file_moved(subject, direction="put", path=info.path, size_bytes=info.size_bytes,
                               sha256=info.sha256, mode=info.mode)
        return pb.FileInfo(path=info.path, size_bytes=info.size_bytes, sha256=info.sha256, mode=info.mode)

    async def GetFile(self, request: pb.GetFileRequest | Undecodable,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.FileChunk]:
        if isinstance(request, Undecodable):
            await self.refuse_undecodable(request, context)
        session, subject = await self._session(context, "GetFile", request.session_id)
        config = self._runtime().config.sessions
        try:
            reader = await asyncio.to_thread(_open_reader, session, request.path, config.file_max_bytes)
        except FileRefused as refused:
            await self._deny(context, subject, rpc="GetFile", error=FileRefusal(str(refused)))
        try:
            chunks = reader.chunks()
            while (data := await asyncio.to_thread(next, chunks, None)) is not None:
                yield pb.FileChunk(data=data)
            info = reader.info()
        finally:
            await asyncio.to_thread(reader.close)
        session.last_used_at = time.time()
        self._trail.file_moved(subject, direction="get", path=info.path, size_bytes=info.size_bytes,
                               sha256=info.sha256, mode=info.mode)
        yield pb.FileChunk(info=pb.FileInfo(path=info.path, size_bytes=info.size_bytes, sha256=info.sha256,
                                            mode=info.mode))


def _open_writer(session: OpenSession, path: str, mode: int, max_bytes: int) -> FileWriter:
    root = open_work_dir(session.sandbox.pid, session.sandbox.pidfd)
    try:
        return FileWriter(root, path, mode=mode, uid=session.sandbox.uid, gid=session.sandbox.uid,
                          max_bytes=max_bytes)
    finally:
        os.close(root)


def _open_reader(session: OpenSession, path: str, max_bytes: int) -> FileReader:
    root = open_work_dir(session.sandbox.pid, session.sandbox.pidfd)
    try:
        return FileReader(root, path, max_bytes=max_bytes)
    finally:
        os.close(root)

