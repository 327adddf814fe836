"""One sandboxed MCP server, running: an execution of its own — cgroup, namespaces, seccomp, uid, limits and
door out like any tool's, recorded like any (``decision`` with rpc ``McpServer``, ``execution.started``,
``network.*``, ``execution.finished`` with its verdict) — whose stdin and stdout carry MCP, spoken by the SDK's
:class:`~mcp.ClientSession` on the daemon's side (:mod:`sandboxd.server.mcp_link`).

Its life: :meth:`McpInstance.start` admits it (it counts as a running execution), starts it and waits for its
answer to ``initialize`` and ``tools/list`` (``start_timeout``); :meth:`call` forwards one ``tools/call``
(``call_timeout``); it ends when stopped (:meth:`stop`), or by itself — a limit broken, a crash, a message past
the bound — when :attr:`result` tells how, and the calls in flight fail with that verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import anyio
from mcp import ClientSession, types
from mcp.shared.exceptions import MCPError

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.mcp_labels import SESSION_LABEL
from sandboxd.base.refusals import SessionFailed
from sandboxd.egress.events import ExecutionRules
from sandboxd.engine.spec import ExecutionSpec
from sandboxd.server.admission import Admitted
from sandboxd.server.audit_trail import Subject
from sandboxd.server.execution_stream import stream_execution
from sandboxd.server.mcp_instance_types import Daemon, InstanceKey, ServerGone
from sandboxd.server.mcp_link import MessageTooLarge, StdioLink
from sandboxd.server.mcp_servers_config import McpServerConfig
from sandboxd.server.network_rules import network_details

log = logging.getLogger("sandboxd.mcp")

SERVER_LABEL = "mcp_server"
STDERR_KEPT_BYTES = 4096  # the end of a server's stderr, quoted when it fails to start or dies
_END_WAIT_S = 10.0  # after a kill: how long its Result may take
_TOOL_PAGES_MAX = 64  # of tools/list: a server cannot keep the daemon listing for ever


class McpInstance:
    def __init__(self, config: McpServerConfig, key: InstanceKey, *, spec: ExecutionSpec,
                 network: ExecutionRules | None, role: str, daemon: Daemon) -> None:
        self.config = config
        self.key = key
        self.instance_id = uuid.uuid4().hex[:16]
        self.tools: list[types.Tool] = []
        self.result: pb.Result | None = None  # how it ended
        self.last_used_at = time.monotonic()
        self.calls_running = 0
        self._spec = spec
        self._network = network
        self._role = role
        self._daemon = daemon
        self._stderr = bytearray()
        self._failure = ""  # why the conversation ended, when the server did not end it
        self._session: ClientSession | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self.gone = asyncio.Event()
        self._admitted: Admitted | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return not self.gone.is_set() and not self._closing.is_set()

    # -- start and stop --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start it and wait for its handshake and tool list; raises SessionFailed (it is then gone) or the
        admission's refusal (DRAINING, TOO_MANY_EXECUTIONS: nothing started)."""
        daemon, key = self._daemon, self.key
        self._admitted = daemon.admission.admit(Admitted(
            execution_id=self.instance_id, tool=self.config.name, principal=key.principal, request_id="",
            labels={SERVER_LABEL: self.config.name, SESSION_LABEL: key.mcp_session}))
        subject = Subject(key.principal, self.config.name, self.instance_id)
        try:
            record = daemon.trail.allowed(subject, rpc="McpServer", role=self._role, limits=self._spec.limits,
                                          command=self._spec.argv, network=network_details(self._network))
        except BaseException:
            daemon.admission.release(self.instance_id)
            raise
        self._task = asyncio.create_task(self._run(self._admitted, record))
        waits = {asyncio.ensure_future(self._ready.wait()), asyncio.ensure_future(self.gone.wait())}
        try:
            await asyncio.wait(waits, timeout=self.config.start_timeout_ms / 1000,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        if not self._ready.is_set() or not self.alive:
            why = self._ended_how() if self.gone.is_set() else (
                f"no answer to initialize within {self.config.start_timeout_ms / 1000:g} s")
            await self.stop(by="daemon")
            raise SessionFailed(f"MCP server {self.config.name!r} did not start: {why}{self._stderr_text()}")
        log.info("MCP server %s started for %r (execution %s, %d tools)", self.config.name, key.principal,
                 self.instance_id, len(self.tools))

    async def stop(self, *, by: str) -> None:
        """Kill it (whoever ``by`` is: a principal, "daemon", "idle") and wait until it is gone."""
        self._closing.set()
        if self._admitted is not None:
            self._admitted.cancel(by)
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.gone.wait()), _END_WAIT_S)

    # -- calls -----------------------------------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """One tools/call; raises ServerGone when the server ends before answering, TimeoutError past
        ``call_timeout`` (the server lives on: the SDK tells it the request is cancelled)."""
        session = self._session
        if session is None or not self.alive:
            raise ServerGone(*self._gone_verdict())
        self.calls_running += 1
        self.last_used_at = time.monotonic()
        try:
            with anyio.fail_after(self.config.call_timeout_ms / 1000):
                return await session.call_tool(tool, arguments)
        except MCPError as error:
            if not self.alive or self.gone.is_set():
                with contextlib.suppress(TimeoutError):  # its Result says how it ended
                    await asyncio.wait_for(asyncio.shield(self.gone.wait()), _END_WAIT_S)
                raise ServerGone(*self._gone_verdict()) from None
            return types.CallToolResult(content=[types.TextContent(
                type="text", text=f"the MCP server answered with error {error.error.code}: {error.error.message}")],
                is_error=True)
        finally:
            self.calls_running -= 1
            self.last_used_at = time.monotonic()

    # -- its run ---------------------------------------------------------------------------------------

    async def _run(self, admitted: Admitted, record: Any) -> None:
        daemon = self._daemon
        link = StdioLink()
        events = stream_execution(admitted, self._spec, decision_record=record, engine=daemon.engine,
                                  trail=daemon.trail, metrics=daemon.metrics, received_at=time.monotonic(),
                                  network=self._network, proxy=daemon.egress, stdin_stream=link.stdin())
        conversation = asyncio.create_task(self._converse(link))
        writes = asyncio.create_task(link.pump_writes())
        too_large = False
        try:
            async for event in events:
                kind = event.WhichOneof("event")
                if kind == "output" and event.output.stream == pb.STDOUT and not too_large:
                    try:
                        await link.from_stdout(event.output.data)
                    except MessageTooLarge as error:
                        too_large = True
                        self._failure = str(error)
                        admitted.cancel("daemon")
                elif kind == "output":
                    self._stderr.extend(event.output.data)
                    del self._stderr[:-STDERR_KEPT_BYTES]
                elif kind == "result":
                    self.result = event.result
        except Exception:
            log.exception("MCP server %s (execution %s) failed", self.config.name, self.instance_id)
        finally:
            await events.aclose()
            self._closing.set()
            await link.close()
            writes.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(conversation, _END_WAIT_S)
            daemon.admission.release(self.instance_id)
            self.gone.set()
            log.info("MCP server %s (execution %s) ended: %s", self.config.name, self.instance_id,
                     self._ended_how())

    async def _converse(self, link: StdioLink) -> None:
        try:
            async with ClientSession(link.read_stream, link.write_stream) as session:
                await session.initialize()
                tools: list[types.Tool] = []
                cursor: str | None = None
                for _page in range(_TOOL_PAGES_MAX):
                    page = await session.list_tools(
                        params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self.tools = tools
                self._session = session
                self._ready.set()
                await self._closing.wait()
        except Exception as error:  # the server broke the protocol, or went away mid-handshake
            if not self._closing.is_set():
                self._failure = self._failure or f"MCP conversation failed: {error}"
                log.warning("MCP server %s (execution %s): %s", self.config.name, self.instance_id, self._failure)
        finally:
            self._session = None
            if not self._closing.is_set() and self._admitted is not None:
                self._admitted.cancel("daemon")  # a server we cannot talk to is of no use running

    # -- how it ended ----------------------------------------------------------------------------------

    def _gone_verdict(self) -> tuple[int, str]:
        """The verdict a call it leaves gets: its own (MEMORY_LIMIT …), or SETUP_FAILED when it has none yet."""
        status = pb.SETUP_FAILED if self.result is None else self.result.status
        return status, f"MCP server {self.config.name!r} ended: {self._ended_how()}"

    def _ended_how(self) -> str:
        result = self.result
        text = self._failure
        if result is not None:
            verdict = f"{pb.Status.Name(result.status)}: {result.message}"
            text = f"{verdict} ({text})" if text else verdict
        return text or "it is not running"

    def _stderr_text(self) -> str:
        tail = bytes(self._stderr).decode("utf-8", errors="replace").strip()
        return f"; its stderr ends: {tail[-1000:]}" if tail else ""
