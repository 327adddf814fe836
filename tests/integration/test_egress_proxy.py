"""The egress proxy over real loopback sockets: HTTP CONNECT, forwarded plain HTTP and SOCKS5 reach an upstream
on 127.0.0.1 when allowed, and are refused readably — with one event per attempt — when not. No root, no
namespaces: the listener is a plain socket here. Limits, hostile clients and closing are in
``test_egress_limits.py``, which shares the harness below."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.server
import socket
import struct
import threading
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any, TypeVar

import pytest

from sandboxd.egress.allowlist import Allowlist
from sandboxd.egress.events import ConnectAttempt, ConnectionClosed, ExecutionRules
from sandboxd.egress.proxy import EgressProxy, ExecutionEgress
from sandboxd.egress.settings import EgressSettings, proxy_env

T = TypeVar("T")
PINNED = "api.example.test"
SETTINGS = EgressSettings(resolve={PINNED: (IPv4Address("127.0.0.1"),),
                                   "other.example.test": (IPv4Address("127.0.0.1"),)})
SCENARIO_TIMEOUT_S = 30.0


def run(scenario: Coroutine[Any, Any, T]) -> T:
    """One test's event loop, bounded: a hang fails the test instead of the run."""
    async def bounded() -> T:
        return await asyncio.wait_for(scenario, SCENARIO_TIMEOUT_S)
    return asyncio.run(bounded())


# --- what the daemon would be: hooks that record -------------------------------------------------------------


@dataclass
class Recorder:
    attempts: list[ConnectAttempt] = field(default_factory=list)
    closed: list[ConnectionClosed] = field(default_factory=list)
    byte_limits: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def connect(self, event: ConnectAttempt) -> None:
        self.attempts.append(event)
        self._changed.set()

    def closed_(self, event: ConnectionClosed) -> None:
        self.closed.append(event)
        self._changed.set()

    def byte_limit(self) -> None:
        self.byte_limits += 1
        self._changed.set()

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def closed_event(self, connection: int) -> ConnectionClosed:
        await self.until(lambda: any(event.connection == connection for event in self.closed))
        return next(event for event in self.closed if event.connection == connection)


class Hooks:
    """The EgressHooks protocol over a Recorder (``closed`` is a list there)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def connect(self, event: ConnectAttempt) -> None:
        self.recorder.connect(event)

    def closed(self, event: ConnectionClosed) -> None:
        self.recorder.closed_(event)

    def byte_limit(self) -> None:
        self.recorder.byte_limit()


@dataclass
class Harness:
    proxy: EgressProxy
    egress: ExecutionEgress
    events: Recorder
    port: int

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def connect_tunnel(self, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        reader, writer = await self.open()
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = await read_head(reader)
        return reader, writer, head


@contextlib.asynccontextmanager
async def proxy_for(allow: list[str], *, narrow: list[str] | None = None, network_max_bytes: int | None = None,
                    settings: EgressSettings = SETTINGS, hooks: Any = None,
                    resolver: Callable[[str, int], Awaitable[list[IPv4Address | IPv6Address]]] | None = None,
                    ) -> AsyncIterator[Harness]:
    proxy = EgressProxy(settings, resolver=resolver)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    recorder = Recorder()
    rules = ExecutionRules(Allowlist.parse(allow), Allowlist.parse(narrow) if narrow is not None else None,
                           network_max_bytes)
    egress = proxy.attach(listener, rules, hooks if hooks is not None else Hooks(recorder))
    try:
        yield Harness(proxy, egress, recorder, port)
    finally:
        await egress.close()
        await proxy.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 10)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def header(response: bytes, name: str) -> str | None:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.decode().partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


# --- the "internet": an HTTP server on loopback, in a thread -------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Upstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = bytearray(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.server.seen.append(Seen(self.command, self.path, list(self.headers.items()), bytes(body)))
        payload = b"hello " + bytes(body) if body else b"hello from upstream"
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Keep-Alive", "timeout=5")
        self.send_header("Connection", "keep-alive, X-Hop")
        self.send_header("X-Hop", "only for the next hop")
        self.send_header("X-End", "end to end")
        self.end_headers()
        self.wfile.write(payload)


class _Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[Seen] = []


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    server = _Upstream()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def upstream_port(server: _Upstream) -> int:
    return int(server.server_address[1])


# --- HTTP CONNECT ---------------------------------------------------------------------------------------------


def test_connect_tunnels_an_exchange_and_reports_it_with_its_bytes(upstream: _Upstream) -> None:
    port = upstream_port(upstream)

    async def scenario() -> tuple[bytes, bytes, Recorder]:
        async with proxy_for([f"{PINNED}:{port}"]) as harness:
            reader, writer, head = await harness.connect_tunnel(f"{PINNED}:{port}")
            request = f"GET /inside HTTP/1.1\r\nHost: {PINNED}\r\nConnection: close\r\n\r\n".encode()
            writer.write(request)
            response = await read_all(reader)
            writer.close()
            closed = await harness.events.closed_event(1)
            assert closed.bytes_sent == len(request) and closed.bytes_received == len(response)
            assert harness.egress.bytes_sent == len(request)
            assert harness.egress.bytes_received == len(response)
            assert harness.egress.connections == 1
            return head, response, harness.events

    head, response, events = run(scenario())
    assert head == b"HTTP/1.1 200 Connection established\r\n\r\n"
    assert status_of(response) == 200 and body_of(response) == b"hello from upstream"
    assert upstream.seen[0].path == "/inside"
    assert events.attempts == [ConnectAttempt(1, "http-connect", PINNED, port, "127.0.0.1", "allowed",
                                              f"{PINNED}:{port}")]
    (closed,) = events.closed
    assert (closed.connection, closed.protocol, closed.host, closed.port, closed.address) == (
        1, "http-connect", PINNED, port, "127.0.0.1")
    assert closed.ended_by in ("client", "upstream") and closed.duration_ms >= 0


def test_bytes_sent_right_behind_the_connect_head_go_upstream_first(upstream: _Upstream) -> None:
    port = upstream_port(upstream)

    async def scenario() -> bytes:
        async with proxy_for([f"127.0.0.1:{port}"]) as harness:
            reader, writer = await harness.open()
            writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n"
                         f"GET /early HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            assert status_of(await read_head(reader)) == 200
            response = await read_all(reader)
            writer.close()
            return response

    assert status_of(run(scenario())) == 200
    assert upstream.seen[0].path == "/early"


def test_a_name_not_on_the_list_is_refused_readably(upstream: _Upstream) -> None:
    async def scenario() -> tuple[bytes, Recorder]:
        async with proxy_for(["api.example.com:443", "*.wikipedia.org:443"]) as harness:
            reader, writer, head = await harness.connect_tunnel("api.evil.test:443")
            response = head + await read_all(reader)
            writer.close()
            return response, harness.events

    response, events = run(scenario())
    assert status_of(response) == 403
    assert header(response, "Content-Type") == "text/plain"
    assert header(response, "Connection") == "close"
    assert body_of(response) == (b"sandboxd egress: api.evil.test:443 is not allowed for this execution "
                                 b"(not on the allowlist: api.example.com:443, *.wikipedia.org:443)\n")
    assert events.attempts == [ConnectAttempt(1, "http-connect", "api.evil.test", 443, "", "denied",
                                              "not on the allowlist: api.example.com:443, *.wikipedia.org:443")]
    assert events.closed == []


def test_an_allowed_name_that_resolves_to_loopback_is_refused(upstream: _Upstream) -> None:
    port = upstream_port(upstream)

    async def scenario() -> tuple[bytes, Recorder]:
        # not pinned: the system resolver answers, and loopback is inward
        async with proxy_for([f"localhost:{port}"]) as harness:
            reader, writer, head = await harness.connect_tunnel(f"localhost:{port}")
            response = head + await read_all(reader)
            writer.close()
            return response, harness.events

    response, events = run(scenario())
    assert status_of(response) == 403
    assert b"localhost resolves to" in body_of(response) and b"(loopback)" in body_of(response)
    assert b"an address entry or an [egress] resolve pin is needed" in body_of(response)
    (attempt,) = events.attempts
    assert attempt.outcome == "denied" and attempt.address in ("127.0.0.1", "::1")
    assert "loopback" in attempt.reason
    assert upstream.seen == []


def test_names_resolving_inward_are_refused_before_any_connect() -> None:
    asked: list[str] = []

    async def metadata(host: str, port: int) -> list[IPv4Address | IPv6Address]:
        asked.append(host)
        return [IPv4Address("93.184.216.34"), IPv4Address("169.254.169.254")]

    async def scenario() -> tuple[bytes, Recorder]:
        async with proxy_for(["*.cloud.test"], resolver=metadata) as harness:
            _reader, writer, head = await harness.connect_tunnel("metadata.cloud.test:80")
            writer.close()
            return head, harness.events

    head, events = run(scenario())
    assert status_of(head) == 403
    assert events.attempts[0].reason.startswith("metadata.cloud.test resolves to 169.254.169.254 (link-local)")
    assert events.attempts[0].address == "169.254.169.254"
    assert asked == ["metadata.cloud.test"]  # resolved once


def test_a_name_that_does_not_resolve_is_a_502() -> None:
    async def nowhere(host: str, port: int) -> list[IPv4Address | IPv6Address]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def scenario() -> tuple[bytes, Recorder]:
        async with proxy_for(["*.test"], resolver=nowhere) as harness:
            reader, writer, head = await harness.connect_tunnel("nowhere.test:443")
            response = head + await read_all(reader)
            writer.close()
            return response, harness.events

    response, events = run(scenario())
    assert status_of(response) == 502
    assert b"nowhere.test does not resolve (Name or service not known)" in body_of(response)
    assert events.attempts[0].outcome == "failed"


def test_a_refused_upstream_connect_is_a_502_and_a_failed_attempt() -> None:
    closed_port = _free_port()

    async def scenario() -> tuple[bytes, Recorder]:
        async with proxy_for([PINNED]) as harness:
            _reader, writer, head = await harness.connect_tunnel(f"{PINNED}:{closed_port}")
            writer.close()
            return head, harness.events

    head, events = run(scenario())
    assert status_of(head) == 502
    assert events.attempts == [ConnectAttempt(1, "http-connect", PINNED, closed_port, "127.0.0.1", "failed",
                                              f"127.0.0.1:{closed_port} refused the connection")]
    assert events.closed == []


def test_an_upstream_that_does_not_answer_is_a_504_or_socks_06() -> None:
    settings = dataclasses.replace(SETTINGS, connect_timeout_ms=300)
    # A listener whose accept queue is full drops further SYNs: a connect to it hangs, all on loopback.
    full = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = full.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))

    async def scenario() -> tuple[bytes, bytes, Recorder]:
        async with proxy_for([f"{PINNED}:{port}"], settings=settings) as harness:
            _, writer, head = await harness.connect_tunnel(f"{PINNED}:{port}")
            writer.close()
            _, writer, reply = await socks_request(harness, 1, 3, PINNED.encode(), port)
            writer.close()
            return head, reply, harness.events

    try:
        head, reply, events = run(scenario())
    finally:
        filler.close()
        full.close()
    assert status_of(head) == 504 and reply[1] == 0x06
    assert [(event.outcome, event.reason) for event in events.attempts] == [
        ("failed", f"no answer from 127.0.0.1:{port} within 300 ms")] * 2


def test_the_role_narrows_the_tools_list(upstream: _Upstream) -> None:
    port = upstream_port(upstream)

    async def scenario() -> tuple[bytes, bytes, Recorder]:
        async with proxy_for([PINNED, "other.example.test"], narrow=["other.example.test"]) as harness:
            _, writer, refused = await harness.connect_tunnel(f"{PINNED}:{port}")
            writer.close()
            _, writer, allowed = await harness.connect_tunnel(f"other.example.test:{port}")
            writer.close()
            return refused, allowed, harness.events

    refused, allowed, events = run(scenario())
    assert status_of(refused) == 403 and status_of(allowed) == 200
    assert events.attempts[0].reason == "not on the caller's role allowlist: other.example.test"
    assert events.attempts[1].outcome == "allowed"


def test_address_literals_need_address_entries(upstream: _Upstream) -> None:
    port = upstream_port(upstream)

    async def scenario() -> list[int]:
        statuses = []
        async with proxy_for([f"127.0.0.0/8:{port}", PINNED]) as harness:
            for target in (f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}", f"[::ffff:127.0.0.1]:{port}"):
                _, writer, head = await harness.connect_tunnel(target)
                writer.close()
                statuses.append(status_of(head))
        async with proxy_for([PINNED]) as harness:  # the name is allowed, not its address
            _, writer, head = await harness.connect_tunnel(f"127.0.0.1:{port}")
            writer.close()
            statuses.append(status_of(head))
        return statuses

    assert run(scenario()) == [200, 403, 403, 403]


def test_a_sweeping_address_entry_does_not_open_inward_space(upstream: _Upstream) -> None:
    port = upstream_port(upstream)

    async def scenario() -> tuple[list[int], list[bytes]]:
        statuses, bodies = [], []
        for allow in (["0.0.0.0/0"], ["0.0.0.0/1", "128.0.0.0/1"], ["127.0.0.1"]):
            async with proxy_for(allow) as harness:
                _, writer, head = await harness.connect_tunnel(f"127.0.0.1:{port}")
                writer.close()
                statuses.append(status_of(head))
                bodies.append(head.split(b"\r\n", 1)[0])
        return statuses, bodies

    statuses, lines = run(scenario())
    assert statuses == [403, 403, 200]  # only an entry naming inward space alone reaches it
    assert b"127.0.0.1 is loopback; 0.0.0.0/0 also spans public space" in lines[0]


def test_malformed_connect_targets_are_400s() -> None:
    async def scenario() -> list[tuple[int, bytes]]:
        answers = []
        async with proxy_for([PINNED]) as harness:
            for target in ("api.example.test", "api.example.test:0", "api.example.test:99999", "a b:443",
                           "::1:443", "user@api.example.test:443", "api.example.test:443/x"):
                reader, writer = await harness.open()
                writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                response = await read_all(reader)
                writer.close()
                answers.append((status_of(response), body_of(response)))
            assert harness.events.attempts == []  # no target named, nothing to decide
        return answers

    for status, body in run(scenario()):
        assert status == 400 and body.startswith(b"sandboxd egress: "), body


# --- plain HTTP, forwarded ------------------------------------------------------------------------------------


def test_plain_http_through_urllib_drops_hop_by_hop_headers(upstream: _Upstream) -> None:
    port = upstream_port(upstream)

    def fetch(proxy_port: int) -> tuple[int, bytes, dict[str, str]]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{proxy_port}"}))
        request = urllib.request.Request(f"http://{PINNED}:{port}/path?q=1", headers={
            "Proxy-Authorization": "Basic c2VjcmV0", "Keep-Alive": "timeout=9", "TE": "trailers",
            "Proxy-Connection": "keep-alive", "Upgrade": "h2c", "X-Kept": "yes"})
        with opener.open(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers.items())

    async def scenario() -> tuple[tuple[int, bytes, dict[str, str]], Recorder]:
        async with proxy_for([f"{PINNED}:{port}"]) as harness:
            answer = await asyncio.to_thread(fetch, harness.port)
            await harness.events.closed_event(1)
            return answer, harness.events

    (status, body, response_headers), events = run(scenario())
    assert (status, body) == (200, b"hello from upstream")
    (seen,) = upstream.seen
    assert (seen.method, seen.path) == ("GET", "/path?q=1")
    assert seen.get("Host") == f"{PINNED}:{port}"
    assert seen.get("Connection") == "close"
    assert seen.get("X-Kept") == "yes"
    for hop in ("Proxy-Authorization", "Keep-Alive", "TE", "Proxy-Connection", "Upgrade"):
        assert seen.get(hop) is None, hop
    assert response_headers.get("X-End") == "end to end"
    assert "X-Hop" not in response_headers and "Keep-Alive" not in response_headers
    assert response_headers.get("Connection") == "close"
    assert events.attempts[0].protocol == "http" and events.attempts[0].outcome == "allowed"
    (closed,) = events.closed
    assert closed.protocol == "http" and closed.bytes_received > len(b"hello from upstream")


def test_one_request_per_connection_with_its_body_streamed(upstream: _Upstream) -> None:
    port = upstream_port(upstream)

    async def scenario() -> bytes:
        async with proxy_for([f"{PINNED}:{port}", "*.evil.test"]) as harness:
            reader, writer = await harness.open()
            writer.write(
                f"POST http://user:pw@{PINNED}:{port}/submit#frag HTTP/1.1\r\nHost: wrong.evil.test\r\n"
                f"Connection: keep-alive, X-Secret\r\nX-Secret: s3cret\r\nTransfer-Encoding: chunked\r\n\r\n"
                f"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                # pipelined: for another virtual host behind the same address — must not get there
                f"GET http://a.evil.test:{port}/second HTTP/1.1\r\nHost: a.evil.test\r\n\r\n".encode())
            response = await read_all(reader)
            writer.close()
            return response

    response = run(scenario())
    assert status_of(response) == 200
    assert body_of(response).endswith(b"hello hello world")
    assert header(response, "Connection") == "close"
    (seen,) = upstream.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/submit", b"hello world")
    assert seen.get("Host") == f"{PINNED}:{port}"
    assert seen.get("X-Secret") is None


def test_an_origin_form_request_is_decided_on_its_host_header(upstream: _Upstream) -> None:
    port = upstream_port(upstream)

    async def scenario() -> tuple[bytes, bytes]:
        async with proxy_for([f"{PINNED}:{port}"]) as harness:
            reader, writer = await harness.open()
            writer.write(f"GET /transparent HTTP/1.1\r\nHost: {PINNED}:{port}\r\n\r\n".encode())
            allowed = await read_all(reader)
            writer.close()
            reader, writer = await harness.open()
            writer.write(b"GET /x HTTP/1.1\r\nHost: api.example.test\r\n\r\n")  # port 80: not on the list
            refused = await read_all(reader)
            writer.close()
            return allowed, refused

    allowed, refused = run(scenario())
    assert status_of(allowed) == 200 and upstream.seen[0].path == "/transparent"
    assert status_of(refused) == 403 and b"api.example.test:80 is not allowed" in body_of(refused)


def test_https_uris_must_use_connect() -> None:
    async def scenario() -> bytes:
        async with proxy_for([PINNED]) as harness:
            reader, writer = await harness.open()
            writer.write(b"GET https://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
            response = await read_all(reader)
            writer.close()
            return response

    response = run(scenario())
    assert status_of(response) == 400 and b"CONNECT" in body_of(response)


def test_an_upstream_that_closes_without_answering_is_a_502() -> None:
    async def scenario() -> tuple[bytes, Recorder]:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, proxy_for([f"{PINNED}:{port}"]) as harness:
            reader, writer = await harness.open()
            writer.write(f"GET http://{PINNED}:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            response = await read_all(reader)
            writer.close()
            await harness.events.closed_event(1)
            return response, harness.events

    response, events = run(scenario())
    assert status_of(response) == 502
    assert b"closed its connection before the end of its response" in body_of(response)
    assert events.closed[0].ended_by == "upstream"


# --- SOCKS5 ---------------------------------------------------------------------------------------------------


async def socks_request(harness: Harness, command: int, atyp: int, address: bytes, port: int,
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await harness.open()
    writer.write(b"\x05\x01\x00")
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\x05\x00"
    prefix = bytes([len(address)]) if atyp == 3 else b""
    writer.write(bytes([5, command, 0, atyp]) + prefix + address + struct.pack("!H", port))
    reply = await asyncio.wait_for(reader.readexactly(10), 5)
    return reader, writer, reply


def test_socks5_connects_to_an_allowed_name(upstream: _Upstream) -> None:
    port = upstream_port(upstream)

    async def scenario() -> tuple[bytes, bytes, Recorder]:
        async with proxy_for([f"{PINNED}:{port}"]) as harness:
            reader, writer, reply = await socks_request(harness, 1, 3, PINNED.encode(), port)
            writer.write(b"GET /socks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = await read_all(reader)
            writer.close()
            await harness.events.closed_event(1)
            return reply, response, harness.events

    reply, response, events = run(scenario())
    assert reply[:4] == b"\x05\x00\x00\x01" and reply[4:8] == socket.inet_aton("127.0.0.1")
    assert status_of(response) == 200 and upstream.seen[0].path == "/socks"
    assert events.attempts[0] == ConnectAttempt(1, "socks5", PINNED, port, "127.0.0.1", "allowed",
                                                f"{PINNED}:{port}")
    assert events.closed[0].protocol == "socks5" and events.closed[0].bytes_received == len(response)


def test_socks5_with_an_address_literal(upstream: _Upstream) -> None:
    port = upstream_port(upstream)

    async def scenario() -> bytes:
        async with proxy_for([f"127.0.0.1:{port}"]) as harness:
            _, writer, reply = await socks_request(harness, 1, 1, socket.inet_aton("127.0.0.1"), port)
            writer.close()
            return reply

    assert run(scenario())[1] == 0x00


def test_socks5_refusals_carry_their_reply_codes() -> None:
    async def nowhere(host: str, port: int) -> list[IPv4Address | IPv6Address]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def scenario() -> tuple[list[int], Recorder]:
        codes = []
        async with proxy_for([PINNED, "*.nowhere.test"], resolver=nowhere) as harness:
            for command, atyp, address, port in (
                    (1, 3, b"api.evil.test", 443),  # not on the list
                    (1, 3, b"x.nowhere.test", 443),  # does not resolve
                    (1, 3, PINNED.encode(), _free_port()),  # refused
                    (3, 1, socket.inet_aton("0.0.0.0"), 0),  # UDP ASSOCIATE
                    (2, 3, PINNED.encode(), 443)):  # BIND
                _, writer, reply = await socks_request(harness, command, atyp, address, port)
                writer.close()
                codes.append(reply[1])
            return codes, harness.events

    codes, events = run(scenario())
    assert codes == [0x02, 0x04, 0x05, 0x07, 0x07]
    assert [event.outcome for event in events.attempts] == ["denied", "failed", "failed"]


def test_socks_handshakes_the_proxy_does_not_speak() -> None:
    async def scenario() -> tuple[bytes, bytes, bytes]:
        async with proxy_for([PINNED]) as harness:
            reader, writer = await harness.open()
            writer.write(b"\x05\x01\x02")  # username/password only
            no_method = await read_all(reader)
            writer.close()
            reader, writer = await harness.open()
            writer.write(b"\x04\x01\x01\xbb\x7f\x00\x00\x01user\x00")  # SOCKS4 CONNECT
            socks4 = await read_all(reader)
            writer.close()
            reader, writer = await harness.open()
            writer.write(b"\x05\x01\x00\x05\x01\x00\x09\x00\x00\x00\x00")  # ATYP 9
            await asyncio.wait_for(reader.readexactly(2), 5)
            bad_atyp = await read_all(reader)
            writer.close()
            assert harness.events.attempts == []
            return no_method, socks4, bad_atyp

    no_method, socks4, bad_atyp = run(scenario())
    assert no_method == b"\x05\xff"
    assert socks4 == b"\x00\x5b\x00\x00\x00\x00\x00\x00"
    assert bad_atyp[:2] == b"\x05\x08"


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_literals_through_connect_and_socks() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hello over IPv6")
            writer.close()

        try:
            server = await asyncio.start_server(hello, "::1", 0)
        except OSError:
            pytest.skip("no ::1 on this host")
        port = server.sockets[0].getsockname()[1]
        async with server, proxy_for([f"[::1]:{port}"]) as harness:
            reader, writer, head = await harness.connect_tunnel(f"[::1]:{port}")
            tunnelled = await read_all(reader)
            writer.close()
            reader, writer, reply = await socks_request(harness, 1, 4, socket.inet_pton(socket.AF_INET6, "::1"), port)
            writer.close()
            return head + tunnelled, reply

    tunnelled, reply = run(scenario())
    assert tunnelled.endswith(b"hello over IPv6") and status_of(tunnelled) == 200
    assert reply[1] == 0x00


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_environment_points_every_client_at_the_proxy() -> None:
    env = proxy_env(3128)
    assert env["HTTP_PROXY"] == env["https_proxy"] == "http://127.0.0.1:3128"
    assert env["ALL_PROXY"] == env["all_proxy"] == "socks5h://127.0.0.1:3128"  # names resolved by the proxy
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"
    assert len(env) == 8
