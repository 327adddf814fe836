"""The egress proxy's bounds, over real loopback sockets: the byte budget, open connections and their rate, the
idle timeout; hostile clients (silent, trickling, garbage, oversized heads) answered and closed without
delaying anyone else; closing an execution; hooks that raise."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv6Address

from test_egress_proxy import (  # the harness (tests/integration is on sys.path)
    PINNED,
    SETTINGS,
    Recorder,
    body_of,
    proxy_for,
    read_all,
    read_head,
    run,
    status_of,
)

from sandboxd.egress.events import ConnectAttempt, ConnectionClosed
from sandboxd.egress.quota import ExecutionQuota

MiB = 1024 * 1024


@asynccontextmanager
async def blaster(size_bytes: int) -> AsyncIterator[int]:
    """An upstream that reads one line, then sends ``size_bytes`` and closes: its port."""
    async def blast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        chunk = b"x" * (64 * 1024)
        left = size_bytes
        while left > 0:
            writer.write(chunk[:left])
            left -= min(left, len(chunk))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(blast, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@asynccontextmanager
async def echo() -> AsyncIterator[int]:
    """An upstream that echoes until its client goes: its port."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


# --- the byte budget ------------------------------------------------------------------------------------------


def test_the_byte_limit_cuts_the_connection_at_the_limit_and_refuses_the_next() -> None:
    limit = 100_000
    line = b"send\n"

    async def scenario() -> tuple[int, bytes, Recorder, int, int]:
        async with blaster(MiB) as port, proxy_for([f"{PINNED}:{port}"], network_max_bytes=limit) as harness:
            reader, writer, head = await harness.connect_tunnel(f"{PINNED}:{port}")
            assert status_of(head) == 200
            writer.write(line)
            received = len(await read_all(reader))
            writer.close()
            await harness.events.until(lambda: harness.events.byte_limits == 1 and len(harness.events.closed) == 1)
            reader, writer, refused = await harness.connect_tunnel(f"{PINNED}:{port}")
            writer.close()
            total = harness.egress.bytes_sent + harness.egress.bytes_received
            return received, refused + await read_all(reader), harness.events, total, \
                harness.egress.connections

    received, refused, events, total, connections = run(scenario())
    assert received == limit - len(line)
    assert total == limit
    assert events.byte_limits == 1
    (closed,) = events.closed
    assert closed.ended_by == "byte limit"
    assert (closed.bytes_sent, closed.bytes_received) == (len(line), limit - len(line))
    assert status_of(refused) == 429 and b"network byte limit" in refused
    assert events.attempts[1].outcome == "denied" and "byte limit" in events.attempts[1].reason
    assert connections == 1


# --- open connections and their rate -------------------------------------------------------------------------


def test_connections_max_bounds_the_open_tunnels() -> None:
    settings = dataclasses.replace(SETTINGS, connections_max=2, connections_per_second=1000)

    async def scenario() -> tuple[list[int], bytes, int, Recorder]:
        async with echo() as port, proxy_for([f"{PINNED}:{port}"], settings=settings) as harness:
            target = f"{PINNED}:{port}"
            first = await harness.connect_tunnel(target)
            second = await harness.connect_tunnel(target)
            _, writer, third = await harness.connect_tunnel(target)
            writer.close()
            first[1].close()
            await harness.events.closed_event(1)
            reader, writer, fourth = await harness.connect_tunnel(target)
            writer.write(b"still echoing")
            echoed = await asyncio.wait_for(reader.readexactly(13), 5)
            writer.close()
            second[1].close()
            return [status_of(first[2]), status_of(second[2]), status_of(third), status_of(fourth)], echoed, \
                harness.egress.connections, harness.events

    statuses, echoed, connections, events = run(scenario())
    assert statuses == [200, 200, 429, 200]
    assert echoed == b"still echoing"
    assert connections == 3
    assert events.attempts[2].reason \
        == "2 connections are open, the most this execution may hold (egress connections_max = 2)"


def test_connections_per_second_is_a_token_bucket() -> None:
    settings = dataclasses.replace(SETTINGS, connections_per_second=2)

    async def scenario() -> tuple[list[int], Recorder]:
        async with echo() as port, proxy_for([f"{PINNED}:{port}"], settings=settings) as harness:
            statuses = []
            for _ in range(3):  # well within the half second a token takes to come back
                _, writer, head = await harness.connect_tunnel(f"{PINNED}:{port}")
                writer.close()
                statuses.append(status_of(head))
            return statuses, harness.events

    statuses, events = run(scenario())
    assert statuses == [200, 200, 429]
    assert events.attempts[2].reason == ("more than 2 new connections a second "
                                         "(egress connections_per_second = 2)")


def test_the_token_bucket_refills_at_its_rate() -> None:
    now = [100.0]
    quota = ExecutionQuota(connections_max=100, connections_per_second=4, network_max_bytes=None,
                           clock=lambda: now[0])
    assert [quota.open_connection() for _ in range(4)] == [None] * 4
    assert quota.open_connection() is not None
    now[0] += 0.25  # one token's worth
    assert quota.open_connection() is None
    assert quota.open_connection() is not None
    now[0] += 60  # a full bucket, no more
    assert [quota.open_connection() is None for _ in range(5)] == [True] * 4 + [False]


# --- timeouts and hostile clients ----------------------------------------------------------------------------


def test_an_idle_tunnel_is_closed() -> None:
    settings = dataclasses.replace(SETTINGS, idle_timeout_ms=300)

    async def scenario() -> tuple[bytes, ConnectionClosed]:
        async with echo() as port, proxy_for([f"{PINNED}:{port}"], settings=settings) as harness:
            reader, writer, _ = await harness.connect_tunnel(f"{PINNED}:{port}")
            writer.write(b"ping")
            echoed = await asyncio.wait_for(reader.readexactly(4), 5)
            assert await read_all(reader) == b""  # closed by the proxy, nothing more
            writer.close()
            return echoed, await harness.events.closed_event(1)

    echoed, closed = run(scenario())
    assert echoed == b"ping"
    assert closed.ended_by == "idle timeout" and closed.duration_ms >= 300


def test_slow_silent_and_garbage_clients_do_not_delay_a_transfer() -> None:
    handshake_ms = 1500
    settings = dataclasses.replace(SETTINGS, handshake_timeout_ms=handshake_ms)
    size = 16 * MiB

    async def scenario() -> dict[str, object]:
        async with blaster(size) as port, proxy_for([f"{PINNED}:{port}"], settings=settings) as harness:
            loop = asyncio.get_running_loop()
            started = loop.time()
            silent_reader, silent_writer = await harness.open()
            slow_reader, slow_writer = await harness.open()
            garbage_reader, garbage_writer = await harness.open()
            garbage_writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")
            stop = asyncio.Event()

            async def trickle() -> None:  # a slowloris: one byte of head every 50 ms
                for byte in f"GET http://{PINNED}:{port}/ HTTP/1.1\r\nX-Slow: {'a' * 1000}".encode():
                    if stop.is_set():
                        return
                    slow_writer.write(bytes([byte]))
                    try:
                        async with asyncio.timeout(0.05):
                            await stop.wait()
                    except TimeoutError:
                        pass

            trickling = asyncio.create_task(trickle())
            garbage = await read_all(garbage_reader)
            reader, writer, head = await harness.connect_tunnel(f"{PINNED}:{port}")
            writer.write(b"go\n")
            transferred = 0
            while chunk := await reader.read(MiB):
                transferred += len(chunk)
            transfer_s = loop.time() - started
            writer.close()
            slow_open_after_transfer = not slow_reader.at_eof()
            slow = await read_all(slow_reader)
            slow_s = loop.time() - started
            silent = await read_all(silent_reader)
            stop.set()
            await trickling
            for each in (slow_writer, silent_writer, garbage_writer):
                each.close()
            return {"garbage": garbage, "head": head, "transferred": transferred, "transfer_s": transfer_s,
                    "slow": slow, "slow_s": slow_s, "silent": silent, "slow_open": slow_open_after_transfer,
                    "attempts": len(harness.events.attempts)}

    outcome = run(scenario())
    assert status_of(outcome["garbage"]) == 400  # type: ignore[arg-type]
    assert outcome["transferred"] == size
    assert outcome["slow_open"], "the transfer finished while the slowloris was still being waited for"
    assert outcome["transfer_s"] < handshake_ms / 1000  # type: ignore[operator]
    assert status_of(outcome["slow"]) == 408  # type: ignore[arg-type]
    assert outcome["slow_s"] >= handshake_ms / 1000  # type: ignore[operator]
    assert outcome["silent"] == b""  # nothing said, nothing answered: just closed
    assert outcome["attempts"] == 1  # only the transfer named a target


def test_a_head_over_max_head_bytes_is_a_431() -> None:
    async def scenario() -> bytes:
        async with proxy_for([PINNED]) as harness:
            reader, writer = await harness.open()
            writer.write(b"GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\nX-Big: "
                         + b"a" * (SETTINGS.max_head_bytes + 1024) + b"\r\n\r\n")
            response = await read_all(reader)
            writer.close()
            return response

    response = run(scenario())
    assert status_of(response) == 431
    assert b"larger than 32768 bytes" in body_of(response)


def test_a_flood_of_silent_clients_holds_at_most_connections_max_sockets() -> None:
    settings = dataclasses.replace(SETTINGS, connections_max=4, handshake_timeout_ms=60_000)

    async def scenario() -> tuple[int, bytes]:
        async with echo() as port, proxy_for([f"{PINNED}:{port}"], settings=settings) as harness:
            silent = [await harness.open() for _ in range(4)]
            # the fifth waits in the kernel's backlog: not accepted while four are handshaking
            reader, writer = await harness.open()
            writer.write(f"CONNECT {PINNED}:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            waiting = asyncio.ensure_future(read_head(reader))
            done, _ = await asyncio.wait({waiting}, timeout=0.3)
            queued = len(done)
            silent[0][1].close()  # one leaves: the fifth is accepted and served
            head = await waiting
            writer.close()
            for _, each in silent[1:]:
                each.close()
            return queued, head

    queued, head = run(scenario())
    assert queued == 0
    assert status_of(head) == 200


# --- closing an execution ------------------------------------------------------------------------------------


def test_close_aborts_open_tunnels_and_reports_them() -> None:
    async def scenario() -> tuple[bytes, ConnectionClosed, list[ConnectAttempt], bool]:
        async with echo() as port, proxy_for([f"{PINNED}:{port}"]) as harness:
            reader, writer, _head = await harness.connect_tunnel(f"{PINNED}:{port}")
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            silent = await harness.open()  # still handshaking
            just_connected = [await harness.open() for _ in range(5)]  # maybe not even accepted yet
            await harness.egress.close()
            for each_reader, each_writer in just_connected:
                assert await read_all(each_reader) == b""
                each_writer.close()
            closed = list(harness.events.closed)  # reported before close() returned
            assert len(closed) == 1
            rest = await read_all(reader)
            assert await read_all(silent[0]) == b""
            writer.close()
            silent[1].close()
            await harness.egress.close()  # idempotent
            try:
                socket.create_connection(("127.0.0.1", harness.port), timeout=2).close()
                listening = True
            except ConnectionRefusedError:
                listening = False
            return rest, closed[0], harness.events.attempts, listening

    rest, closed, attempts, listening = run(scenario())
    assert rest == b""
    assert closed.ended_by == "execution ended" and (closed.bytes_sent, closed.bytes_received) == (4, 4)
    assert len(attempts) == 1
    assert not listening


def test_close_during_a_decision_reports_a_failed_attempt() -> None:
    asked = asyncio.Event()

    async def slow_dns(host: str, port: int) -> list[IPv4Address | IPv6Address]:
        asked.set()
        await asyncio.Event().wait()  # never answers
        return []

    async def scenario() -> list[ConnectAttempt]:
        async with proxy_for(["*.slow.test"], resolver=slow_dns) as harness:
            reader, writer = await harness.open()
            writer.write(b"CONNECT a.slow.test:443 HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(asked.wait(), 5)
            await harness.egress.close()
            assert await read_all(reader) == b""
            writer.close()
            return harness.events.attempts

    attempts = run(scenario())
    assert [(a.outcome, a.reason) for a in attempts] == [("failed", "execution ended")]


def test_hooks_that_raise_do_not_break_the_proxy() -> None:
    class Raising:
        calls = 0

        def connect(self, event: ConnectAttempt) -> None:
            Raising.calls += 1
            raise RuntimeError("the audit log is gone")

        def closed(self, event: ConnectionClosed) -> None:
            Raising.calls += 1
            raise RuntimeError("the audit log is gone")

        def byte_limit(self) -> None:
            Raising.calls += 1
            raise RuntimeError("the audit log is gone")

    async def scenario() -> list[bytes]:
        echoed = []
        async with echo() as port, proxy_for([f"{PINNED}:{port}"], hooks=Raising(), network_max_bytes=40) as harness:
            for _ in range(2):
                reader, writer, head = await harness.connect_tunnel(f"{PINNED}:{port}")
                assert status_of(head) == 200
                writer.write(b"0123456789")
                echoed.append(await asyncio.wait_for(reader.readexactly(10), 5))
                writer.close()
                await reader.read()
            assert harness.egress.bytes_sent + harness.egress.bytes_received == 40
        return echoed

    assert run(scenario()) == [b"0123456789"] * 2
    assert Raising.calls == 5  # two connects, two closed, one byte limit
