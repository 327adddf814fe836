"""Third-party MCP servers, each in sandboxes of its own, through sandboxd: a server written with the SDK here
(``mcp_fixtures/probe_server.py``) and two published ones installed from PyPI by ``.ci/setup``
(``mcp-server-time``, ``mcp-server-fetch``, in ``.venv-mcp-servers``, bound in read-only at ``/opt/mcp``).

Through the SDK's own client over ``sandboxctl mcp``: their tools are listed as ``NAME__TOOL`` beside
sandboxd's, filtered by the caller's grants (globs); calls are answered; every call is decided and recorded
before it reaches the server (arguments' size and SHA-256) and after (duration, isError); a server's state is
its MCP session's alone; a server that breaks its memory limit is killed — the call in flight gets
MEMORY_LIMIT — and started again for the next call; what a server tries beyond its sandbox (``/etc/shadow``,
a host off its list) fails and the attempt to connect is in the audit.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from daemon_harness import SANDBOXCTL, Daemon, make_daemon, running
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_scenarios import run, text_of
from upstream import Upstream

pytestmark = [pytest.mark.root, pytest.mark.netns]

CHECKOUT = Path(__file__).resolve().parents[2]
SERVERS_VENV = CHECKOUT / ".venv-mcp-servers"
FIXTURES = Path(__file__).resolve().parent / "mcp_fixtures"
API = "api.example.test"
TIMER_TOKEN = "mcp-timer-token"
EUROPE_ONLY = '{ properties = { timezone = { pattern = "^Europe/" } } }'  # a grant's constraint on the arguments


def _server(description: str, argv: list[str], *, profile: str = "python", allow: list[str] | None = None,
            memory: str = "256M", scope: str = "session") -> str:
    network = f"[network]\nallow = {json.dumps(allow)}\n" if allow is not None else ""
    return textwrap.dedent(f"""
        description = "{description}"
        argv = {json.dumps(argv)}
        seccomp_profile = "{profile}"
        scope = "{scope}"
        call_timeout = "20s"
        {network}
        [limits]
        memory = "{memory}"
        pids = 64
        [[binds]]
        source = "{SERVERS_VENV}"
        target = "/opt/mcp"
        [[binds]]
        source = "{FIXTURES}"
        target = "/opt/mcp-fixtures"
        """)


@pytest.fixture(scope="module")
def web() -> Iterator[Upstream]:
    with Upstream() as plain:
        yield plain


@pytest.fixture(scope="module")
def daemon(web: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if not (SERVERS_VENV / ".sandboxd-installed").exists():
        pytest.fail(f"{SERVERS_VENV} is missing: .ci/setup installs the MCP servers these tests run")
    python = "/opt/mcp/bin/python3"
    servers_dir = tmp_path_factory.mktemp("mcp-servers")
    servers_dir.chmod(0o755)
    (servers_dir / "probe.toml").write_text(_server(
        "A probe written with the MCP SDK", [python, "/opt/mcp-fixtures/probe_server.py"], profile="http_fetch",
        allow=[f"{API}:{web.port}"]))
    (servers_dir / "time.toml").write_text(_server(
        "The reference MCP time server", [python, "-m", "mcp_server_time", "--local-timezone", "UTC"],
        scope="principal"))
    (servers_dir / "fetch.toml").write_text(_server(
        "The reference MCP fetch server", [python, "-m", "mcp_server_fetch", "--ignore-robots-txt"],
        profile="http_fetch", allow=[f"{API}:{web.port}"], memory="512M"))
    extra = textwrap.dedent(f"""
        [egress]
        resolve = {{ "{API}" = "127.0.0.1" }}

        [principals.local-admin]
        roles = ["admin"]
        [principals.timer]
        roles = ["timer"]
        token_sha256 = ["{hashlib.sha256(TIMER_TOKEN.encode()).hexdigest()}"]

        [roles.admin]
        tools = ["*"]
        commands = true
        admin = true
        [roles.timer]
        tools = ["time__conv*", {{ name = "time__get_current_time", params = {EUROPE_ONLY} }}]
        """)
    with running(make_daemon(tmp_path_factory.mktemp("mcp"), extra=extra, top=f'mcp_servers_dir = "{servers_dir}"',
                             max_concurrent_executions=32)) as made:
        yield made


@asynccontextmanager
async def mcp_session(daemon: Daemon, *, token: str | None = None) -> AsyncIterator[ClientSession]:
    server = StdioServerParameters(command=str(SANDBOXCTL), args=["--socket", str(daemon.socket), "mcp"],
                                   env={"SANDBOXD_TOKEN": token} if token else None)
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def test_servers_tools_are_listed_beside_sandboxds_and_answer(daemon: Daemon) -> None:
    async def scenario() -> None:
        async with mcp_session(daemon) as session:
            listed = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert {"python", "probe__echo", "probe__hog", "time__get_current_time", "time__convert_time",
                    "fetch__fetch"} <= set(listed), sorted(listed)
            assert listed["probe__echo"].input_schema["properties"]["text"]["type"] == "string"
            echoed = await session.call_tool("probe__echo", {"text": "hello through the sandbox"})
            assert not echoed.is_error, text_of(echoed)
            assert text_of(echoed) == "hello through the sandbox"
            now = await session.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert not now.is_error, text_of(now)
            assert json.loads(text_of(now))["timezone"] == "UTC"
            wrong = await session.call_tool("probe__echo", {"text": 42})
            assert wrong.is_error and text_of(wrong).startswith("INVALID_PARAMS"), text_of(wrong)
            unknown = await session.call_tool("probe__nothing", {})
            assert unknown.is_error and text_of(unknown).startswith("UNKNOWN_TOOL"), text_of(unknown)

    run(scenario)


def test_every_call_is_decided_and_recorded_with_its_arguments_digest(daemon: Daemon) -> None:
    arguments = {"text": "audited"}

    async def scenario() -> None:
        async with mcp_session(daemon) as session:
            assert text_of(await session.call_tool("probe__echo", arguments)) == "audited"

    run(scenario)
    records = daemon.audit_records()
    decision = [r for r in records if r["event"] == "decision" and r["tool"] == "probe__echo"
                and r["details"].get("mcp", {}).get("arguments_bytes") == len(json.dumps(arguments))][-1]
    digest = hashlib.sha256(json.dumps(arguments).encode()).hexdigest()
    assert decision["details"]["outcome"] == "allowed"
    assert decision["details"]["mcp"] == {"server": "probe", "tool": "echo",
                                          "arguments_bytes": len(json.dumps(arguments)), "arguments_sha256": digest}
    own = [r for r in records if r["execution_id"] == decision["execution_id"]]
    assert [r["event"] for r in own] == ["decision", "mcp.call", "execution.finished"]
    call = own[1]["details"]
    assert call["server"] == "probe" and call["is_error"] is False and call["duration_ms"] >= 0
    received = [r for r in records if r["event"] == "request.received" and r["request_id"] == decision["request_id"]]
    assert received and received[-1]["details"]["labels"]["mcp_session_id"]
    # the server's sandbox is an execution of its own, recorded with its argv
    sandboxes = [r for r in records if r["event"] == "execution.started" and r["execution_id"] == call["instance"]]
    assert sandboxes and sandboxes[0]["tool"] == "probe"


def test_a_servers_state_belongs_to_one_mcp_session(daemon: Daemon) -> None:
    async def scenario() -> None:
        async with mcp_session(daemon) as first, mcp_session(daemon) as second:
            assert text_of(await first.call_tool("probe__remember", {"key": "k", "value": "first's"})) == "kept"
            assert text_of(await first.call_tool("probe__recall", {"key": "k"})) == "first's"
            assert text_of(await second.call_tool("probe__recall", {"key": "k"})) == "(none)"

    run(scenario)


def test_a_server_that_breaks_its_limit_is_killed_and_started_again(daemon: Daemon) -> None:
    async def scenario() -> None:
        async with mcp_session(daemon) as session:
            before = text_of(await session.call_tool("probe__whoami", {}))
            hog = await session.call_tool("probe__hog", {"megabytes": 512})
            assert hog.is_error and text_of(hog).startswith("MEMORY_LIMIT"), text_of(hog)
            after = await session.call_tool("probe__whoami", {})
            assert not after.is_error, text_of(after)
            assert text_of(after) != before  # a new sandbox: another uid and pid

    run(scenario)
    finished = [r for r in daemon.audit_records() if r["event"] == "execution.finished" and r["tool"] == "probe"]
    assert any(r["details"]["outcome"] == "MEMORY_LIMIT" for r in finished)


def test_what_a_server_tries_beyond_its_sandbox_fails_and_is_audited(daemon: Daemon, web: Upstream) -> None:
    async def scenario() -> None:
        async with mcp_session(daemon) as session:
            shadow = await session.call_tool("probe__read_file", {"path": "/etc/shadow"})
            assert shadow.is_error, text_of(shadow)
            assert "root:" not in text_of(shadow)
            allowed = await session.call_tool("probe__fetch", {"url": f"http://{API}:{web.port}/hello"})
            assert text_of(allowed) == "hello from upstream\n", text_of(allowed)
            refused = await session.call_tool("probe__fetch", {"url": "http://elsewhere.example.test/"})
            assert refused.is_error, text_of(refused)  # the SDK hides the exception; the audit names it

    run(scenario)
    connects = [r for r in daemon.audit_records() if r["event"] == "network.connect" and r["tool"] == "probe"]
    assert any(r["details"]["host"] == "elsewhere.example.test" and r["details"]["outcome"] == "denied"
               for r in connects), connects


def test_the_published_fetch_server_reaches_only_its_list(daemon: Daemon, web: Upstream) -> None:
    async def scenario() -> None:
        async with mcp_session(daemon) as session:
            page = await session.call_tool("fetch__fetch", {"url": f"http://{API}:{web.port}/hello"})
            assert not page.is_error, text_of(page)
            assert "hello from upstream" in text_of(page)
            off_list = await session.call_tool("fetch__fetch", {"url": "http://elsewhere.example.test/"})
            assert off_list.is_error, text_of(off_list)

    run(scenario)
    connects = [r for r in daemon.audit_records() if r["event"] == "network.connect" and r["tool"] == "fetch"]
    assert {r["details"]["outcome"] for r in connects} >= {"allowed", "denied"}, connects


def test_grants_name_servers_tools_with_globs_and_constrain_their_arguments(daemon: Daemon) -> None:
    async def scenario() -> None:
        async with mcp_session(daemon, token=TIMER_TOKEN) as session:
            listed = {tool.name for tool in (await session.list_tools()).tools}
            assert listed == {"time__get_current_time", "time__convert_time"}, listed
            refused = await session.call_tool("probe__echo", {"text": "x"})
            assert refused.is_error and text_of(refused).startswith("TOOL_NOT_GRANTED"), text_of(refused)
            now = await session.call_tool("time__get_current_time", {"timezone": "Europe/Paris"})
            assert not now.is_error, text_of(now)
            outside = await session.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert outside.is_error and text_of(outside).startswith("PARAMS_NOT_GRANTED"), text_of(outside)

    run(scenario)


def test_grpc_callers_reach_servers_tools_too(daemon: Daemon) -> None:
    with daemon.client() as client:
        outcome = client.run_tool("probe__echo", {"text": "over gRPC"})
        assert outcome.status_name == "OK", outcome
        answer = json.loads(outcome.stdout)
        assert answer["content"][0]["text"] == "over gRPC" and not answer.get("isError")
        tools = {tool.name: tool for tool in client.list_tools()}
        assert tools["probe__echo"].mcp_server == "probe"
        assert outcome.result.mcp_server == "probe"


def test_a_stopping_daemon_leaves_no_server_running(tmp_path: Path) -> None:
    servers_dir = tmp_path / "servers"
    servers_dir.mkdir(mode=0o755)
    (servers_dir / "probe.toml").write_text(_server("probe", ["/opt/mcp/bin/python3",
                                                               "/opt/mcp-fixtures/probe_server.py"]))
    made = make_daemon(tmp_path, top=f'mcp_servers_dir = "{servers_dir}"')
    with running(made), made.client() as client:  # its teardown asserts no sandbox process or cgroup is left
        assert client.run_tool("probe__echo", {"text": "x"}).status_name == "OK"
        running_now = [e for e in client.list_executions() if e.tool == "probe"]
        assert running_now, "the server's sandbox is listed among the running executions"
