"""``sandboxctl mcp`` through the MCP SDK's own client, against a real daemon: ``stdio_client`` launches
``sandboxctl --socket <daemon> mcp`` and a ``ClientSession`` initializes, lists the tools with their schemas and
calls them — stdout as text; every other verdict (NONZERO_EXIT, MEMORY_LIMIT, TIMEOUT) and every refusal
(INVALID_PARAMS, UNKNOWN_TOOL, TOOL_NOT_GRANTED) as a result with ``isError`` — receives progress notifications
as output comes, and cancels a call the SDK's way, which cancels its execution (audited, nothing left running).
The caller's grants apply: with a token, the gateway lists and runs what that principal may, no more."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from daemon_harness import SANDBOXCTL, Daemon, daemon_fixture, sandbox_processes, wait_for
from mcp import ClientSession, types
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_scenarios import MEMORY_HOG, SHIPPED, SLOW, WAIT_S, list_executions, records, run, text_of

pytestmark = pytest.mark.root

ANALYST_TOKEN = "mcp-analyst-token"
# [principals] replaces the embedded ones whole: the socket's local-admin is restated; the embedded roles stay
POLICY = f"""
[principals.local-admin]
roles = ["admin"]
[principals.mcp-analyst]
roles = ["analyst"]
token_sha256 = ["{hashlib.sha256(ANALYST_TOKEN.encode()).hexdigest()}"]
"""

daemon = daemon_fixture(tools={"slow": SLOW}, extra=POLICY)

@asynccontextmanager
async def mcp_session(daemon: Daemon, tmp_path: Path, *, token: str | None = None) -> AsyncIterator[ClientSession]:
    """An initialized session with ``sandboxctl --socket <daemon> mcp``; fails if anything but protocol messages
    came out of its stdout (the transport hands a line it cannot parse to the message handler)."""
    unparsed: list[Exception] = []

    async def on_message(message: types.ServerNotification | Exception) -> None:
        if isinstance(message, Exception):
            unparsed.append(message)

    server = StdioServerParameters(command=str(SANDBOXCTL), args=["--socket", str(daemon.socket), "mcp"],
                                   env={"SANDBOXD_TOKEN": token} if token else None)
    stderr_path = tmp_path / "sandboxctl-mcp.stderr"
    with stderr_path.open("a") as errlog:
        async with stdio_client(server, errlog=errlog) as (read, write), \
                ClientSession(read, write, message_handler=on_message) as session:
            initialized = await session.initialize()
            assert initialized.server_info.name == "sandboxd"
            assert initialized.capabilities.tools is not None
            yield session
    assert not unparsed, f"not a protocol message on stdout: {unparsed}; stderr:\n{stderr_path.read_text()}"


def test_lists_the_tools_and_calls_them(daemon: Daemon, tmp_path: Path) -> None:
    with daemon.client() as client:
        schemas = {tool.name: json.loads(tool.params_schema_json) for tool in client.list_tools()}

    async def scenario() -> None:
        async with mcp_session(daemon, tmp_path) as session:
            listed = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert listed.keys() >= SHIPPED, sorted(listed)
            for name in SHIPPED:
                assert listed[name].input_schema == schemas[name], name
                assert listed[name].description
            assert listed["python"].input_schema["required"] == ["code"]

            answer = await session.call_tool("python", {"code": "print(6 * 7)"})
            assert (answer.is_error, answer.content) == (False, [types.TextContent(type="text", text="42\n")])

            rows = await session.call_tool("sqlite_query", {"sql": "select count(*) from measurements"})
            assert not rows.is_error, text_of(rows)
            assert json.loads(text_of(rows))["rows"] == [[5]]

    run(scenario)
    # each execution carries the MCP request's id, as its request_id, in every audit record
    finished = [record for record in daemon.audit_records() if record["event"] == "execution.finished"]
    assert [record["tool"] for record in finished] == ["python", "sqlite_query"]
    ids = [record["request_id"] for record in finished]
    assert all(request_id.isdigit() for request_id in ids) and ids[0] != ids[1], ids


def test_verdicts_and_refusals_are_error_results(daemon: Daemon, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mcp_session(daemon, tmp_path) as session:
            failed = await session.call_tool("python", {"code": "print('partial')\nraise ValueError('bad input')"})
            assert failed.is_error
            assert failed.content[0].type == "text" and failed.content[0].text.startswith("NONZERO_EXIT: exited 1\n")
            assert "ValueError: bad input" in failed.content[0].text  # the handler's stderr, appended
            assert text_of(failed).endswith("partial\n")  # and what it printed

            hog = await session.call_tool("python", {"code": MEMORY_HOG})
            assert hog.is_error and text_of(hog).startswith("MEMORY_LIMIT: "), text_of(hog)
            assert "not limited" not in text_of(hog)

            slow = await session.call_tool("slow", {})
            assert slow.is_error and text_of(slow).startswith("TIMEOUT: "), text_of(slow)

            invalid = await session.call_tool("python", {"code": 42})
            assert invalid.is_error
            assert text_of(invalid).startswith("INVALID_PARAMS: "), text_of(invalid)
            assert "$.code: 42 is not of type 'string'" in text_of(invalid)

            unknown = await session.call_tool("no_such_tool", {})
            assert unknown.is_error and text_of(unknown).startswith("UNKNOWN_TOOL: "), text_of(unknown)

    run(scenario)
    outcomes = [record["details"]["outcome"] for record in daemon.audit_records()
                if record["event"] == "execution.finished"]
    assert outcomes == ["NONZERO_EXIT", "MEMORY_LIMIT", "TIMEOUT"]
    denied = [record["details"]["reason"] for record in daemon.audit_records()
              if record["event"] == "decision" and record["details"]["outcome"] == "denied"]
    assert denied == ["INVALID_PARAMS", "UNKNOWN_TOOL"]


def test_progress_per_output_chunk(daemon: Daemon, tmp_path: Path) -> None:
    code = "import time\nfor i in range(4):\n    print(f'line {i}', flush=True)\n    time.sleep(0.3)"
    expected = "line 0\nline 1\nline 2\nline 3\n"

    async def scenario() -> None:
        progress: list[float] = []
        all_output = anyio.Event()

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)
            if value == len(expected):
                all_output.set()

        async with mcp_session(daemon, tmp_path) as session:
            result = await session.call_tool("python", {"code": code}, progress_callback=on_progress)
            assert (result.is_error, text_of(result)) == (False, expected)
            with anyio.fail_after(WAIT_S):  # the SDK hands notifications to the callback in tasks of their own
                await all_output.wait()
        # one per chunk, bytes so far: the lines came 0.3 s apart, so in more than one chunk
        assert len(progress) >= 2 and progress == sorted(set(progress)), progress
        assert progress[-1] == len(expected)

    run(scenario)


def test_cancelling_the_request_cancels_the_execution(daemon: Daemon, tmp_path: Path) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('not cancelled')"

    async def scenario() -> None:
        started = anyio.Event()

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            started.set()

        async def call(session: ClientSession) -> None:
            await session.call_tool("python", {"code": code}, progress_callback=on_progress)
            raise AssertionError("the call ended before it was cancelled")

        async with mcp_session(daemon, tmp_path) as session:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(call, session)
                with anyio.fail_after(WAIT_S):
                    await started.wait()  # its output has come: it is running
                running = await anyio.to_thread.run_sync(list_executions, daemon)
                # the SDK's way: cancel the task awaiting the call, and the session sends notifications/cancelled
                task_group.cancel_scope.cancel()

            assert [(item.tool, item.labels["mcp_request_id"]) for item in running] == \
                [("python", running[0].request_id)]
            execution_id = running[0].execution_id
            assert running[0].request_id.isdigit()

            # the session is still open: what ends the execution is the cancellation, not the client leaving
            await anyio.to_thread.run_sync(
                wait_for, lambda: records(daemon, "execution.finished", execution_id), WAIT_S, "its outcome record")
            await anyio.to_thread.run_sync(
                wait_for, lambda: not list_executions(daemon), WAIT_S, "no execution left running")
            assert not sandbox_processes(daemon.ids)

            cancelled = records(daemon, "execution.cancelled", execution_id)
            assert [record["request_id"] for record in cancelled] == [running[0].request_id]
            [finished] = records(daemon, "execution.finished", execution_id)
            assert finished["details"]["outcome"] == "CANCELLED", finished
            assert finished["request_id"] == running[0].request_id

            again = await session.call_tool("python", {"code": "print(42)"})  # and the gateway serves on
            assert (again.is_error, text_of(again)) == (False, "42\n")

    run(scenario)


def test_the_callers_grants_apply(daemon: Daemon, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mcp_session(daemon, tmp_path, token=ANALYST_TOKEN) as session:
            listed = [tool.name for tool in (await session.list_tools()).tools]
            assert listed == ["sqlite_query"]  # the embedded analyst role's one grant
            refused = await session.call_tool("python", {"code": "print(42)"})
            assert refused.is_error and text_of(refused).startswith("TOOL_NOT_GRANTED: "), text_of(refused)
            rows = await session.call_tool("sqlite_query", {"sql": "select count(*) from tools"})
            assert not rows.is_error, text_of(rows)

    run(scenario)
    decisions = [(record["principal"], record["tool"], record["details"]["outcome"])
                 for record in daemon.audit_records() if record["event"] == "decision" and record["tool"]]
    assert decisions == [("mcp-analyst", "python", "denied"), ("mcp-analyst", "sqlite_query", "allowed")]
