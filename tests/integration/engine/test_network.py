"""The sandbox has its own network namespace with only loopback: the host is unreachable."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sandboxd.engine.executor import Executor
from sandboxd.engine.result import NetworkReady, Output, Result, Status
from sandboxd.engine.spec import ExecutionSpec

from .conftest import Engine, Run

pytestmark = [pytest.mark.root, pytest.mark.netns]


def test_tcp_connect_to_host_loopback_listener_fails(engine: Engine) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        probe = socket.create_connection(("127.0.0.1", port), timeout=2)  # the listener really is there
        probe.close()
        script = (
            "import socket\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')\n"
            "except OSError as e:\n    print('refused', e.errno)\n"
        )
        run = engine.run(engine.spec("/usr/bin/python3", "-c", script))
    assert run.result.status is Status.OK, (run.result, run.stderr)
    assert run.stdout.startswith(b"refused"), run.stdout


def test_only_loopback_exists_and_is_up(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/cat", "/proc/net/dev"))
    assert run.result.status is Status.OK, run.result
    interfaces = [line.split(b":")[0].strip() for line in run.stdout.splitlines()[2:]]
    assert interfaces == [b"lo"]
    script = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print('listening')"
    assert engine.run(engine.spec("/usr/bin/python3", "-c", script)).stdout == b"listening\n"


DOOR_PORT = 3128
_DOOR_SCRIPT = f"""
import errno, socket, time
s = socket.create_connection(('127.0.0.1', {DOOR_PORT}), timeout=5)
s.sendall(b'sandbox\\n')
print(s.makefile('rb').readline().decode().strip())
t0 = time.monotonic()
try:
    socket.create_connection(('192.0.2.1', 80), timeout=5)  # TEST-NET-1: would need a route out
    print('direct: connected')
except OSError as e:
    print('direct:', errno.errorcode.get(e.errno, e.errno), round(time.monotonic() - t0, 1))
try:
    socket.getaddrinfo('example.com', 443)
    print('dns: resolved')
except OSError as e:
    print('dns: failed')
try:
    socket.socket().bind(('127.0.0.1', {DOOR_PORT}))
    print('door port: free')
except OSError as e:
    print('door port:', errno.errorcode.get(e.errno, e.errno))
"""


def _serve_door(engine: Engine, spec: ExecutionSpec) -> tuple[Run, list[socket.socket]]:
    """Run ``spec`` and answer, on its door, "hello " + the line each connection sends."""
    listeners: list[socket.socket] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello " + await reader.readline())
        await writer.drain()
        writer.close()

    async def body(executor: Executor) -> Run:
        out = bytearray()
        server: asyncio.Server | None = None
        try:
            async for event in executor.execute(spec):
                if isinstance(event, NetworkReady):
                    listeners.append(event.listener)
                    server = await asyncio.start_server(answer, sock=event.listener.dup())
                elif isinstance(event, Output):
                    out.extend(event.data)
                elif isinstance(event, Result):
                    return Run(None, event, bytes(out))
        finally:
            if server is not None:
                server.close()
                await server.wait_closed()
        raise AssertionError("no Result")

    return asyncio.run(engine._with_executor(body)), listeners


def test_the_door_out_is_open_before_the_handler_runs_and_nothing_else_leaves(engine: Engine) -> None:
    run, listeners = _serve_door(engine, engine.spec("/usr/bin/python3", "-c", _DOOR_SCRIPT,
                                                     egress_listen_port=DOOR_PORT))
    assert run.result.status is Status.OK, run.result
    lines = run.stdout.decode().splitlines()
    assert lines[0] == "hello sandbox"  # connected at once: the listener was there before the handler ran
    assert lines[1].startswith("direct: ENETUNREACH"), lines  # no route out: fails at once, never hangs
    assert float(lines[1].split()[-1]) < 1.0
    assert lines[2] == "dns: failed"
    assert lines[3] == "door port: EADDRINUSE"  # the door is the daemon's; the sandbox cannot take its port
    assert len(listeners) == 1 and listeners[0].fileno() == -1  # the engine closed its door with the sandbox


def test_without_a_door_nothing_listens(engine: Engine) -> None:
    script = f"import socket; socket.create_connection(('127.0.0.1', {DOOR_PORT}), timeout=2)"
    run = engine.run(engine.spec("/usr/bin/python3", "-c", script))
    assert run.result.status is Status.NONZERO_EXIT
    assert b"ConnectionRefusedError" in run.stderr
