"""The sandboxed MCP servers the daemon keeps: which sandbox serves whom, what tools each server offers, and
when a sandbox goes.

- **Instances** are kept per (server, principal, MCP session) — scope ``session``, the default: one MCP client
  session's calls never meet another's state — or per (server, principal) with scope ``principal``. The first
  call starts one; one without a call for ``idle_timeout`` is stopped; one that ended (a limit broken, a crash)
  is started again by the next call. A reload that changes a server's configuration retires its instances: the
  next call starts one from the new configuration.
- **The catalog** — the tools a server offers, which ListTools shows as ``NAME__TOOL`` and calls are checked
  against — is learnt once per configuration, from a sandbox of the server started for that alone (principal
  ``""``, label ``mcp_purpose = discovery``) and stopped at once; every instance's own tools/list refreshes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sandboxd.api import convert
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.base.errors import SandboxError
from sandboxd.base.refusals import SessionFailed, TooManySessions
from sandboxd.policy.auth import Identity
from sandboxd.policy.decisions import Decision
from sandboxd.server.mcp_instance_types import Daemon, InstanceKey
from sandboxd.server.mcp_servers_config import McpServerConfig, split_tool_name
from sandboxd.server.network_rules import network_rules
from sandboxd.server.runtime import Runtime

if TYPE_CHECKING:  # the SDK is loaded once a server starts (_new), not with the daemon
    from mcp import types

    from sandboxd.server.mcp_instance import McpInstance

log = logging.getLogger("sandboxd.mcp")

DISCOVERY_LABEL = "mcp_purpose"
_REAP_INTERVAL_MAX_S = 30.0
_DRAIN_CHECK_S = 0.05
_UNLISTED_RETRY_S = 30.0  # a server that failed to start is tried again for its tools after this long


class McpServers:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._instances: dict[InstanceKey, McpInstance] = {}
        self._starting: dict[InstanceKey, asyncio.Task[McpInstance]] = {}
        self._catalogs: dict[str, tuple[McpServerConfig, list[types.Tool]]] = {}
        self._discovering: dict[str, asyncio.Task[list[types.Tool]]] = {}
        # a server that could not be started to list its tools: not asked again before the time noted
        self._unlisted: dict[str, tuple[McpServerConfig, float, SandboxError]] = {}
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._instances)

    @staticmethod
    def server_of(runtime: Runtime, tool_name: str) -> tuple[McpServerConfig, str] | None:
        """The configured server a ``NAME__TOOL`` name belongs to, and the tool's own name."""
        split = split_tool_name(tool_name)
        if split is None or split[0] not in runtime.mcp_servers:
            return None
        return runtime.mcp_servers[split[0]], split[1]

    # -- the catalog -----------------------------------------------------------------------------------

    async def catalog(self, runtime: Runtime, config: McpServerConfig) -> list[types.Tool]:
        """The server's tools; raises SessionFailed when it cannot be started to ask."""
        known = self._catalogs.get(config.name)
        if known is not None and known[0] == config:
            return known[1]
        failed = self._unlisted.get(config.name)
        if failed is not None and failed[0] == config and time.monotonic() < failed[1]:
            raise failed[2]
        task = self._discovering.get(config.name)
        if task is None or task.done():
            task = asyncio.create_task(self._discover(runtime, config))
            self._discovering[config.name] = task
        return await asyncio.shield(task)

    async def _discover(self, runtime: Runtime, config: McpServerConfig) -> list[types.Tool]:
        decision = Decision(principal="", role="", tool=config.name, effective_limits=config.sandbox.limits)
        instance = self._new(runtime, config, InstanceKey(config.name, "", "discovery"), decision)
        try:
            await instance.start()
        except SandboxError as error:
            self._unlisted[config.name] = (config, time.monotonic() + _UNLISTED_RETRY_S, error)
            raise
        finally:
            await instance.stop(by="daemon")
        self._unlisted.pop(config.name, None)
        self._catalogs[config.name] = (config, instance.tools)
        return instance.tools

    def prefetch(self, runtime: Runtime) -> None:
        """Learn each configured server's tools now, in the background (the daemon started or reloaded), so the
        first tools/list does not wait for them."""
        for config in runtime.mcp_servers.values():
            task = asyncio.create_task(self.catalog(runtime, config))
            task.add_done_callback(_quiet)

    async def tools(self, runtime: Runtime, identity: Identity) -> list[pb.Tool]:
        """The servers' tools this caller may call, as ListTools shows them; a server that cannot be started is
        left out (and logged)."""
        listed: list[pb.Tool] = []
        for config in runtime.mcp_servers.values():
            try:
                tools = await self.catalog(runtime, config)
            except SandboxError as error:
                log.warning("MCP server %s: its tools are not listed: %s", config.name, error.message)
                continue
            by_name = {config.tool_name(tool.name): tool for tool in tools}
            for name in runtime.policy.visible_tools(identity, list(by_name)):
                listed.append(_tool_message(config, name, by_name[name]))
        return listed

    # -- instances -------------------------------------------------------------------------------------

    async def instance(self, runtime: Runtime, config: McpServerConfig, key: InstanceKey,
                       decision: Decision) -> McpInstance:
        """The running instance for ``key``, started when there is none (or it ended, or its configuration
        changed); raises SessionFailed, TooManySessions, or the admission's refusal."""
        current = self._instances.get(key)
        if current is not None and current.alive and current.config == config:
            return current
        if current is not None and self._instances.get(key) is current:
            del self._instances[key]
            await current.stop(by="daemon")  # ended already, or retired by a reload
        starting = self._starting.get(key)
        if starting is None:
            starting = asyncio.create_task(self._start(runtime, config, key, decision))
            self._starting[key] = starting
            starting.add_done_callback(lambda _task: self._starting.pop(key, None))
        return await asyncio.shield(starting)  # raises its refusal; one start for concurrent first calls

    async def _start(self, runtime: Runtime, config: McpServerConfig, key: InstanceKey,
                     decision: Decision) -> McpInstance:
        running = sum(1 for k, i in self._instances.items() if k.server == config.name and i.alive)
        if running >= config.max_instances:
            raise TooManySessions(f"MCP server {config.name!r} runs {running} sandboxes, the most it may "
                                  f"(mcp_servers.{config.name}.max_instances = {config.max_instances})")
        instance = self._new(runtime, config, key, decision)
        await instance.start()
        self._instances[key] = instance
        self._catalogs[config.name] = (config, instance.tools)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap())
        return instance

    def _new(self, runtime: Runtime, config: McpServerConfig, key: InstanceKey, decision: Decision) -> McpInstance:
        labels = {DISCOVERY_LABEL: "discovery"} if key.mcp_session == "discovery" and not key.principal else {}
        try:
            spec = runtime.registry.plan_program(config.sandbox, limits=decision.effective_limits, labels=labels)
        except SandboxError as error:
            raise SessionFailed(f"MCP server {config.name!r} cannot be planned: {error.message}") from None
        from sandboxd.server.mcp_instance import McpInstance

        return McpInstance(config, key, spec=spec, network=network_rules(config.sandbox.network_allow, decision),
                           role=decision.role, daemon=self._daemon)

    async def _reap(self) -> None:
        """Stop the instances idle past their server's ``idle_timeout``, and forget the ended ones."""
        while self._instances:
            now = time.monotonic()
            wake_s = _REAP_INTERVAL_MAX_S
            for key, instance in list(self._instances.items()):
                idle_until = instance.last_used_at + instance.config.idle_timeout_ms / 1000
                if not instance.alive:
                    self._instances.pop(key, None)
                elif instance.calls_running == 0 and now >= idle_until:
                    self._instances.pop(key, None)
                    await instance.stop(by="idle")
                else:
                    wake_s = min(wake_s, max(0.05, idle_until - now))
            await asyncio.sleep(wake_s)

    async def drain(self, grace_s: float) -> None:
        """The daemon stops: let the calls in flight end (within ``grace_s``), then stop every instance — their
        sandboxes are running executions too, which the daemon's drain would otherwise wait on for nothing."""
        deadline = time.monotonic() + grace_s
        while any(i.calls_running for i in self._instances.values()) and time.monotonic() < deadline:
            await asyncio.sleep(_DRAIN_CHECK_S)  # shutdown only: a check per 50 ms costs nothing
        await self.close_all()

    async def close_all(self) -> None:
        """Stop every instance (the daemon stops)."""
        pending = [*self._starting.values(), *self._discovering.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)  # each stops the sandbox it was starting
        instances = list(self._instances.values())
        self._instances.clear()
        await asyncio.gather(*(instance.stop(by="daemon-stopping") for instance in instances))
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper

    def running(self) -> Sequence[McpInstance]:
        return [instance for instance in self._instances.values() if instance.alive]


def _quiet(task: asyncio.Task[list[types.Tool]]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("MCP server: its tools could not be learnt: %s", task.exception())


def _tool_message(config: McpServerConfig, name: str, tool: types.Tool) -> pb.Tool:
    sandbox = config.sandbox
    return pb.Tool(
        name=name, description=tool.description or tool.title or "",
        params_schema_json=json.dumps(tool.input_schema, sort_keys=True),
        limits=convert.limits_to_proto(sandbox.limits), seccomp_profile=sandbox.seccomp_profile,
        network=sandbox.network, network_allow=[] if sandbox.network_allow is None else sandbox.network_allow.texts(),
        binds=[pb.BindInfo(target=str(bind.target), writable=bind.writable) for bind in sandbox.binds],
        mcp_server=config.name,
    )
