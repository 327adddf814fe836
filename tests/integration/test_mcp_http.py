"""The daemon's MCP endpoint (``[mcp] listen``) through the MCP SDK's own client over streamable HTTP, against a
real daemon: ``streamable_http_client`` with a bearer token and a ``ClientSession`` list the caller's tools and
call them — stdout as text; a memory hog's and a timeout's verdict as results with ``isError`` — receive
progress as output comes, and cancel a call, which cancels its execution. Every caller is a principal of its
own: two tokens, two roles, one refused. The gatekeeping around the SDK: no token → 401 with
``WWW-Authenticate`` (and, with JWTs configured, the RFC 9728 metadata naming the issuer); a foreign Origin →
403; a session is its creator's; at most ``max_sessions`` at once. The audit records of a call carry its MCP
session and request ids."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import jwt
import pytest
from certs import make_ca
from daemon_harness import Daemon, daemon_fixture, make_daemon, reload_and_wait, running, sandbox_processes, wait_for
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_scenarios import MEMORY_HOG, SHIPPED, SLOW, WAIT_S, list_executions, records, run, text_of

pytestmark = pytest.mark.root

ADMIN_TOKEN = "mcp-http-admin-token"
ANALYST_TOKEN = "mcp-http-analyst-token"
JWT_SECRET = b"an-hs256-secret-of-more-than-32-bytes-for-mcp-tests"
JWT_ISSUER = "https://issuer.example"
JWT_AUDIENCE = "sandboxd-mcp-test"


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# [principals] replaces the embedded ones whole: the socket's local-admin is restated; the embedded roles stay
POLICY = f"""
[principals.local-admin]
roles = ["admin"]
[principals.mcp-admin]
roles = ["admin"]
token_sha256 = ["{_sha256(ADMIN_TOKEN)}"]
[principals.mcp-analyst]
roles = ["analyst"]
token_sha256 = ["{_sha256(ANALYST_TOKEN)}"]
"""
MCP = """
[mcp]
listen = "127.0.0.1:0"
allowed_origins = ["https://app.example.test"]
max_sessions = 3
"""

daemon = daemon_fixture(tools={"slow": SLOW}, extra=POLICY + MCP)

def endpoint(daemon: Daemon) -> str:
    """The URL the daemon logged (it listens on a free port)."""
    match = re.search(r"mcp on (https?://[\d.]+:\d+/mcp)", daemon.logs())
    assert match, f"the daemon did not log its MCP endpoint:\n{daemon.logs()}"
    return match.group(1)


class Client:
    """The SDK's HTTP client with a token, noting the MCP session ids the endpoint hands it."""

    def __init__(self, token: str | None, *, ca_file: Path | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.http = create_mcp_http_client(headers=headers) if ca_file is None else httpx2.AsyncClient(
            headers=headers, timeout=WAIT_S, verify=ssl.create_default_context(cafile=str(ca_file)))
        self.session_ids: list[str] = []
        self.http.event_hooks["response"].append(self._note)

    async def _note(self, response: httpx2.Response) -> None:
        session_id = response.headers.get("mcp-session-id")
        if session_id and session_id not in self.session_ids:
            self.session_ids.append(session_id)


@asynccontextmanager
async def mcp_session(daemon: Daemon, token: str | None = ADMIN_TOKEN,
                      client: Client | None = None) -> AsyncIterator[ClientSession]:
    """An initialized session with the daemon's endpoint, as the bearer of ``token``."""
    client = client or Client(token)
    async with client.http, streamable_http_client(endpoint(daemon), http_client=client.http) as (read, write), \
            ClientSession(read, write) as session:
        initialized = await session.initialize()
        assert initialized.server_info.name == "sandboxd"
        assert initialized.capabilities.tools is not None
        yield session


def test_lists_the_tools_and_calls_each(daemon: Daemon) -> None:
    with daemon.client() as client:
        schemas = {tool.name: json.loads(tool.params_schema_json) for tool in client.list_tools()}

    async def scenario() -> None:
        async with mcp_session(daemon) as session:
            listed = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert listed.keys() == SHIPPED | {"slow"}, sorted(listed)
            for name in SHIPPED:
                assert listed[name].input_schema == schemas[name], name
                assert listed[name].description

            answer = await session.call_tool("python", {"code": "print(6 * 7)"})
            assert (answer.is_error, answer.content) == (False, [types.TextContent(type="text", text="42\n")])

            rows = await session.call_tool("sqlite_query", {"sql": "select count(*) from measurements"})
            assert not rows.is_error, text_of(rows)
            assert json.loads(text_of(rows))["rows"] == [[5]]

            query = await session.call_tool("file_processor", {"operation": "json_query", "path": "inventory.json",
                                                               "query": "warehouse.items[0]"})
            assert not query.is_error, text_of(query)
            assert json.loads(text_of(query)) == {"sku": "A-1", "count": 3}

            # its allowlist is empty as shipped: the proxy refuses, and the tool says so in its answer
            fetched = await session.call_tool("http_fetch", {"url": "http://blocked.example.test/"})
            assert not fetched.is_error, text_of(fetched)
            answer_json = json.loads(text_of(fetched))
            assert answer_json["status"] == 403 and "not on the allowlist" in answer_json["body"]

    run(scenario)
    finished = records(daemon, "execution.finished")
    assert [record["tool"] for record in finished] == ["python", "sqlite_query", "file_processor", "http_fetch"]
    assert {record["principal"] for record in finished} == {"mcp-admin"}


def test_verdicts_are_error_results(daemon: Daemon) -> None:
    async def scenario() -> None:
        async with mcp_session(daemon) as session:
            hog = await session.call_tool("python", {"code": MEMORY_HOG})
            assert hog.is_error and text_of(hog).startswith("MEMORY_LIMIT: "), text_of(hog)
            assert "not limited" not in text_of(hog)

            slow = await session.call_tool("slow", {})
            assert slow.is_error and text_of(slow).startswith("TIMEOUT: "), text_of(slow)

            invalid = await session.call_tool("python", {"code": 42})
            assert invalid.is_error and text_of(invalid).startswith("INVALID_PARAMS: "), text_of(invalid)

    run(scenario)
    assert [record["details"]["outcome"] for record in records(daemon, "execution.finished")] == \
        ["MEMORY_LIMIT", "TIMEOUT"]


def test_progress_per_output_chunk(daemon: Daemon) -> None:
    code = "import time\nfor i in range(4):\n    print(f'line {i}', flush=True)\n    time.sleep(0.3)"
    expected = "line 0\nline 1\nline 2\nline 3\n"

    async def scenario() -> None:
        reported: list[float] = []
        all_output = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            reported.append(progress)
            if progress == len(expected):
                all_output.set()

        async with mcp_session(daemon) as session:
            result = await session.call_tool("python", {"code": code}, progress_callback=on_progress)
            assert (result.is_error, text_of(result)) == (False, expected)
            with anyio.fail_after(WAIT_S):  # the SDK hands notifications to the callback in tasks of their own
                await all_output.wait()
        # one per chunk, bytes so far: the lines came 0.3 s apart, so in more than one chunk
        assert len(reported) >= 2 and reported == sorted(set(reported)), reported
        assert reported[-1] == len(expected)

    run(scenario)


def test_cancelling_the_request_cancels_the_execution(daemon: Daemon) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('not cancelled')"

    async def scenario() -> None:
        started = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            started.set()

        async def call(session: ClientSession) -> None:
            await session.call_tool("python", {"code": code}, progress_callback=on_progress)
            raise AssertionError("the call ended before it was cancelled")

        async with mcp_session(daemon) as session:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(call, session)
                with anyio.fail_after(WAIT_S):
                    await started.wait()  # its output has come: it is running
                running = await anyio.to_thread.run_sync(list_executions, daemon)
                # the SDK's way: cancel the task awaiting the call, and the session sends notifications/cancelled
                task_group.cancel_scope.cancel()

            assert [item.tool for item in running] == ["python"]
            execution_id, request_id = running[0].execution_id, running[0].request_id
            # the session is still open: what ends the execution is the cancellation, not the client leaving
            await anyio.to_thread.run_sync(
                wait_for, lambda: records(daemon, "execution.finished", execution_id), WAIT_S, "its outcome record")
            await anyio.to_thread.run_sync(
                wait_for, lambda: not list_executions(daemon), WAIT_S, "no execution left running")
            assert not sandbox_processes(daemon.ids)

            [cancelled] = records(daemon, "execution.cancelled", execution_id)
            assert (cancelled["request_id"], cancelled["details"]["by"]) == (request_id, "caller-left")
            [finished] = records(daemon, "execution.finished", execution_id)
            assert finished["details"]["outcome"] == "CANCELLED", finished

            again = await session.call_tool("python", {"code": "print(42)"})  # and the session serves on
            assert (again.is_error, text_of(again)) == (False, "42\n")

    run(scenario)


def test_each_token_is_a_principal_with_its_own_grants(daemon: Daemon) -> None:
    async def scenario() -> None:
        async with mcp_session(daemon, ANALYST_TOKEN) as analyst, mcp_session(daemon, ADMIN_TOKEN) as admin:
            assert [tool.name for tool in (await analyst.list_tools()).tools] == ["sqlite_query"]
            refused = await analyst.call_tool("python", {"code": "print(42)"})
            assert refused.is_error and text_of(refused).startswith("TOOL_NOT_GRANTED: "), text_of(refused)
            rows = await analyst.call_tool("sqlite_query", {"sql": "select count(*) from tools"})
            assert not rows.is_error, text_of(rows)

            allowed = await admin.call_tool("python", {"code": "print(42)"})
            assert (allowed.is_error, text_of(allowed)) == (False, "42\n")

    run(scenario)
    decisions = [(record["principal"], record["tool"], record["details"]["outcome"])
                 for record in records(daemon, "decision") if record["tool"]]
    assert decisions == [("mcp-analyst", "python", "denied"), ("mcp-analyst", "sqlite_query", "allowed"),
                         ("mcp-admin", "python", "allowed")]


def test_a_calls_audit_records_carry_its_mcp_session_and_request_ids(daemon: Daemon) -> None:
    client = Client(ADMIN_TOKEN)
    call_ids: list[str] = []

    async def note_call(request: httpx2.Request) -> None:
        if request.method == "POST" and request.content:
            message = json.loads(request.content)
            if message.get("method") == "tools/call":
                call_ids.append(str(message["id"]))

    client.http.event_hooks["request"].append(note_call)

    async def scenario() -> None:
        async with mcp_session(daemon, client=client) as session:
            answer = await session.call_tool("python", {"code": "print(1)"})
            assert not answer.is_error, text_of(answer)

    run(scenario)
    [session_id] = client.session_ids
    [call_id] = call_ids
    [received] = [record for record in records(daemon, "request.received") if record["tool"] == "python"]
    assert received["details"]["labels"] == {"mcp_session_id": session_id, "mcp_request_id": call_id}
    assert (received["principal"], received["request_id"], received["details"]["rpc"]) == \
        ("mcp-admin", call_id, "Execute")
    assert received["details"]["peer"].startswith("ipv4:127.0.0.1:")
    [finished] = records(daemon, "execution.finished")
    assert finished["request_id"] == call_id


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "raw", "version": "1"}}}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def post(daemon: Daemon, body: dict[str, Any] | None = None, *, token: str | None = None,
               origin: str | None = None, session_id: str | None = None) -> httpx2.Response:
    """One raw POST to the endpoint: an initialize unless ``body``; a request of ``session_id`` if given."""
    headers = dict(ACCEPT)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if origin is not None:
        headers["Origin"] = origin
    if session_id is not None:
        headers |= {"mcp-session-id": session_id, "mcp-protocol-version": "2025-06-18"}
    async with httpx2.AsyncClient(timeout=WAIT_S) as http:
        return await http.post(endpoint(daemon), json=body or INITIALIZE, headers=headers)


def error_message(response: httpx2.Response) -> str:
    return str(response.json()["error"]["message"])


def test_no_token_or_a_bad_one_is_401_and_audited(daemon: Daemon) -> None:
    async def scenario() -> None:
        missing = await post(daemon)
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="sandboxd"'
        assert error_message(missing).startswith("AUTH_FAILED: no credentials"), missing.text

        wrong = await post(daemon, token="not-a-token-of-anyone")
        assert wrong.status_code == 401
        assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="sandboxd", error="invalid_token"'
        assert "not-a-token-of-anyone" not in wrong.text

        # the SDK's client sees the refusal as the initialize's error
        http = create_mcp_http_client()
        async with http, streamable_http_client(endpoint(daemon), http_client=http) as (read, write), \
                ClientSession(read, write) as session:
            with pytest.raises(MCPError, match="AUTH_FAILED: no credentials"):
                await session.initialize()

        # no OAuth metadata without JWTs
        async with httpx2.AsyncClient(timeout=WAIT_S) as http:
            metadata = await http.get(endpoint(daemon).replace("/mcp", "/.well-known/oauth-protected-resource/mcp"))
        assert metadata.status_code == 404

    run(scenario)
    denied = [record for record in records(daemon, "decision") if record["details"]["outcome"] == "denied"]
    assert [(record["details"]["rpc"], record["details"]["reason"]) for record in denied] == \
        [("MCP", "AUTH_FAILED")] * 3
    assert all(record["details"]["peer"].startswith("ipv4:127.0.0.1:") for record in denied)


def test_a_foreign_origin_is_refused(daemon: Daemon) -> None:
    async def scenario() -> None:
        foreign = await post(daemon, token=ADMIN_TOKEN, origin="http://evil.example.test")
        assert foreign.status_code == 403, foreign.text
        assert "'http://evil.example.test' is not allowed" in error_message(foreign)
        assert (await post(daemon, token=ADMIN_TOKEN, origin="null")).status_code == 403
        # its own origin (as 127.0.0.1 or localhost) and a configured one pass
        own = endpoint(daemon).removesuffix("/mcp")
        for origin in (own, own.replace("127.0.0.1", "localhost"), "https://app.example.test"):
            allowed = await post(daemon, token=ADMIN_TOKEN, origin=origin)
            assert allowed.status_code == 200, (origin, allowed.text)
            await delete_session(daemon, allowed.headers["mcp-session-id"], ADMIN_TOKEN)

    run(scenario)
    assert not [record for record in records(daemon, "decision") if record["details"]["outcome"] == "denied"]


async def delete_session(daemon: Daemon, session_id: str, token: str) -> None:
    async with httpx2.AsyncClient(timeout=WAIT_S) as http:
        ended = await http.delete(endpoint(daemon), headers={"mcp-session-id": session_id,
                                                             "Authorization": f"Bearer {token}"})
    assert ended.status_code in (200, 204), ended.text


def test_a_session_is_its_creators(daemon: Daemon) -> None:
    client = Client(ADMIN_TOKEN)

    async def scenario() -> None:
        async with mcp_session(daemon, client=client) as session:
            [session_id] = client.session_ids
            ping = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
            stolen = await post(daemon, ping, token=ANALYST_TOKEN, session_id=session_id)
            assert stolen.status_code == 404, stolen.text  # as if there were no such session
            answer = await session.call_tool("python", {"code": "print(42)"})  # its creator's still works
            assert text_of(answer) == "42\n"

    run(scenario)


def test_at_most_max_sessions(daemon: Daemon) -> None:
    async def scenario() -> None:
        async with mcp_session(daemon) as first, mcp_session(daemon, ANALYST_TOKEN), mcp_session(daemon):
            refused = await post(daemon, token=ADMIN_TOKEN)
            assert refused.status_code == 503, refused.text
            assert "3 MCP sessions are open" in error_message(refused)
            assert "[mcp] max_sessions" in error_message(refused)
            assert (await first.send_ping()) is not None  # the open ones are unaffected
        async with mcp_session(daemon) as again:  # room again once they ended (the client deletes its session)
            assert [tool.name for tool in (await again.list_tools()).tools]

    run(scenario)


def test_reload_and_stop_with_a_call_running(daemon: Daemon) -> None:
    """SIGHUP and SIGTERM stay the daemon's own with the endpoint open: a reload keeps it serving; a stop
    (twice: no grace period) cancels a running call, which still gets its verdict, and ends the sessions."""
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)"

    async def scenario() -> None:
        async with mcp_session(daemon) as session:
            record = await anyio.to_thread.run_sync(reload_and_wait, daemon)
            assert record["event"] == "daemon.reloaded", record
            started = anyio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                started.set()

            async with anyio.create_task_group() as task_group:
                async def stop_once_running() -> None:
                    with anyio.fail_after(WAIT_S):
                        await started.wait()
                    daemon.signal(signal.SIGTERM)
                    await anyio.to_thread.run_sync(wait_for, lambda: "stopping: refusing" in daemon.logs(), WAIT_S,
                                                   "the drain")
                    daemon.signal(signal.SIGTERM)  # the second: no grace period

                task_group.start_soon(stop_once_running)
                cut = await session.call_tool("python", {"code": code}, progress_callback=on_progress)
            assert cut.is_error and text_of(cut).startswith("CANCELLED: "), text_of(cut)

    run(scenario)
    assert daemon.stop() == 0, daemon.logs()
    assert "Traceback" not in daemon.logs(), daemon.logs()
    [finished] = records(daemon, "execution.finished")
    assert finished["details"]["outcome"] == "CANCELLED"
    [cancelled] = records(daemon, "execution.cancelled")
    assert cancelled["details"]["by"] == "daemon-stopping"


def mint(**claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "mcp-user", "roles": ["analyst"], "iss": JWT_ISSUER, "aud": JWT_AUDIENCE,
               "iat": now, "exp": now + 300, **claims}
    return jwt.encode(payload, JWT_SECRET, algorithm="HS256")


def test_jwt_callers_and_the_oauth_metadata_over_tls(tmp_path: Path) -> None:
    """With [daemon.tls] the endpoint is https; with JWTs configured a 401 points at the RFC 9728 metadata,
    which names the issuer, and a JWT's subject is the caller."""
    ca = make_ca(tmp_path / "pki")
    server = ca.issue_server()
    key_file = tmp_path / "jwt.key"
    key_file.write_bytes(JWT_SECRET)
    key_file.chmod(0o600)
    extra = f"""
[daemon.tls]
cert_file = "{server.cert_file}"
key_file = "{server.key_file}"
[auth]
jwt_key_file = "{key_file}"
jwt_issuer = "{JWT_ISSUER}"
jwt_audience = "{JWT_AUDIENCE}"
[mcp]
listen = "127.0.0.1:0"
"""

    async def scenario(daemon: Daemon) -> None:
        url = endpoint(daemon)
        assert url.startswith("https://127.0.0.1:")
        metadata_url = url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
        tls = ssl.create_default_context(cafile=str(ca.cert_file))
        async with httpx2.AsyncClient(timeout=WAIT_S, verify=tls) as http:
            refused = await http.post(url, json=INITIALIZE, headers=ACCEPT)
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"] == \
                f'Bearer realm="sandboxd", resource_metadata="{metadata_url}"'
            for where in (metadata_url, metadata_url.removesuffix("/mcp")):
                document = await http.get(where)
                assert document.status_code == 200, (where, document.text)
                assert document.json() == {"resource": url, "authorization_servers": [JWT_ISSUER],
                                           "bearer_methods_supported": ["header"], "resource_name": "sandboxd"}
            expired = await http.post(url, json=INITIALIZE,
                                      headers={**ACCEPT, "Authorization": f"Bearer {mint(exp=1)}"})
            assert expired.status_code == 401 and "expired" in error_message(expired)
            assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]

        async with mcp_session(daemon, client=Client(mint(), ca_file=ca.cert_file)) as session:
            assert [tool.name for tool in (await session.list_tools()).tools] == ["sqlite_query"]  # its roles claim
            rows = await session.call_tool("sqlite_query", {"sql": "select count(*) from tools"})
            assert not rows.is_error, text_of(rows)

    with running(make_daemon(tmp_path, extra=extra)) as daemon:
        run(lambda: scenario(daemon))
        [finished] = records(daemon, "execution.finished")
        assert finished["principal"] == "jwt:mcp-user"


def test_an_idle_session_is_ended(tmp_path: Path) -> None:
    """Idle: no request in flight — the SDK's client keeps a GET stream open while it is connected, so this
    one initializes and then goes quiet, as a client that left without deleting its session."""
    async def scenario(daemon: Daemon) -> None:
        opened = await post(daemon, token=ADMIN_TOKEN)
        assert opened.status_code == 200, opened.text
        session_id = opened.headers["mcp-session-id"]
        await anyio.to_thread.run_sync(wait_for, lambda: f"Session {session_id} idle timeout" in daemon.logs(),
                                       WAIT_S, "the session's idle timeout")
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        ended = await post(daemon, ping, token=ADMIN_TOKEN, session_id=session_id)
        assert ended.status_code == 404, ended.text

    extra = POLICY + '[mcp]\nlisten = "127.0.0.1:0"\nsession_idle_timeout = "500ms"\n'
    with running(make_daemon(tmp_path, extra=extra)) as daemon:
        run(lambda: scenario(daemon))


def test_a_port_in_use_fails_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = make_daemon(tmp_path, extra=f'[mcp]\nlisten = "127.0.0.1:{port}"\n')
        with pytest.raises(AssertionError, match="exited 78 at start"):
            daemon.start()
    assert f"mcp.listen: cannot listen on 127.0.0.1:{port}: Address already in use" in daemon.logs()
    assert not daemon.socket.exists()
