#!/usr/bin/env python3
"""What the egress proxy costs a connection: throughput of one large transfer and the latency it adds to
connect + first byte, through a CONNECT tunnel against the same transfer straight over loopback, same process.

    .venv/bin/python bench/egress_throughput.py [--size-mib N] [--runs N] [--connects N]

The proxy runs on this process's event loop, as in the daemon; the upstream server and the client are
threads with blocking sockets (they leave the loop to the proxy). Transfer runs alternate direct / proxied,
so drift on the host (CPU frequency, other load) hits both alike. Printed: MB/s per run and the medians
with their ratio (proxied / direct: 1.0 would be free), then p50/p99 of connect + first byte and the
milliseconds the proxy adds. No root needed; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import threading
import time
from ipaddress import IPv4Address

from sandboxd.egress.allowlist import Allowlist
from sandboxd.egress.events import ConnectAttempt, ConnectionClosed, ExecutionRules
from sandboxd.egress.proxy import EgressProxy
from sandboxd.egress.settings import EgressSettings

NAME = "bench.example.test"
CHUNK_BYTES = 1024 * 1024


class QuietHooks:
    def connect(self, event: ConnectAttempt) -> None:
        pass

    def closed(self, event: ConnectionClosed) -> None:
        pass

    def byte_limit(self) -> None:
        pass


class Upstream:
    """Per connection: read one line; "send N\\n" → N bytes then close, "ping\\n" → one byte then close."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    @staticmethod
    def _serve(sock: socket.socket) -> None:
        with sock:
            line = sock.makefile("rb").readline()
            if line.startswith(b"send "):
                left = int(line.split()[1])
                payload = memoryview(bytes(CHUNK_BYTES))
                while left > 0:
                    sent = sock.send(payload[:min(left, CHUNK_BYTES)])
                    left -= sent
            else:
                sock.sendall(b"!")
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)  # until the client closes: the close is the client's, as a browser's would be


def open_to(port: int, proxy: bool, target_port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if proxy:
        sock.sendall(f"CONNECT {NAME}:{target_port} HTTP/1.1\r\nHost: {NAME}:{target_port}\r\n\r\n".encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            byte = sock.recv(1)
            if not byte:
                raise RuntimeError(f"the proxy closed the connection: {head!r}")
            head += byte
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the proxy refused: {head!r}")
    return sock


def transfer(port: int, proxy: bool, target_port: int, size_bytes: int) -> float:
    """Seconds to receive size_bytes."""
    buffer = bytearray(CHUNK_BYTES)
    with open_to(port, proxy, target_port) as sock:
        started = time.perf_counter()
        sock.sendall(f"send {size_bytes}\n".encode())
        received = 0
        while (count := sock.recv_into(buffer)) > 0:
            received += count
        elapsed = time.perf_counter() - started
    if received != size_bytes:
        raise RuntimeError(f"received {received} of {size_bytes} bytes")
    return elapsed


def first_byte(port: int, proxy: bool, target_port: int) -> float:
    """Seconds from connect to the first byte of the answer (the CONNECT exchange included)."""
    started = time.perf_counter()
    with open_to(port, proxy, target_port) as sock:
        sock.sendall(b"ping\n")
        if sock.recv(1) != b"!":
            raise RuntimeError("no answer")
        return time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def bench(size_bytes: int, runs: int, connects: int) -> None:
    upstream = Upstream()
    settings = EgressSettings(resolve={NAME: (IPv4Address("127.0.0.1"),)}, connections_per_second=1_000_000,
                              connections_max=64)
    proxy = EgressProxy(settings)
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    proxy_port = listener.getsockname()[1]
    egress = proxy.attach(listener, ExecutionRules(Allowlist.parse([f"{NAME}:{upstream.port}"])), QuietHooks())
    try:
        mib = size_bytes / (1024 * 1024)
        print(f"one transfer of {mib:.0f} MiB upstream -> client, {runs} runs each, alternating\n")
        print("{:>4} {:>14} {:>14}".format("run", "direct MB/s", "proxied MB/s"))
        direct: list[float] = []
        proxied: list[float] = []
        await asyncio.to_thread(transfer, upstream.port, False, upstream.port, 16 * 1024 * 1024)  # warm up
        await asyncio.to_thread(transfer, proxy_port, True, upstream.port, 16 * 1024 * 1024)
        for run in range(1, runs + 1):
            direct.append(size_bytes / 1e6 / await asyncio.to_thread(transfer, upstream.port, False, upstream.port,
                                                                     size_bytes))
            proxied.append(size_bytes / 1e6 / await asyncio.to_thread(transfer, proxy_port, True, upstream.port,
                                                                      size_bytes))
            print(f"{run:>4} {direct[-1]:>14.0f} {proxied[-1]:>14.0f}")
        ratio = statistics.median(proxied) / statistics.median(direct)
        print(f"{'p50':>4} {statistics.median(direct):>14.0f} {statistics.median(proxied):>14.0f}"
              f"   ratio {ratio:.2f}")

        print(f"\nconnect + first byte, {connects} connections each, alternating\n")
        latencies: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(connects):
            for through_proxy in (False, True):
                port = proxy_port if through_proxy else upstream.port
                latencies[through_proxy].append(await asyncio.to_thread(first_byte, port, through_proxy,
                                                                        upstream.port))
        print("{:>8} {:>9} {:>9}".format("", "p50 ms", "p99 ms"))
        for through_proxy, name in ((False, "direct"), (True, "proxied")):
            values = latencies[through_proxy]
            print(f"{name:>8} {percentile(values, 0.5) * 1000:>9.3f} {percentile(values, 0.99) * 1000:>9.3f}")
        added_p50 = percentile(latencies[True], 0.5) - percentile(latencies[False], 0.5)
        added_p99 = percentile(latencies[True], 0.99) - percentile(latencies[False], 0.99)
        print(f"{'added':>8} {added_p50 * 1000:>9.3f} {added_p99 * 1000:>9.3f}")
        print(f"\nthrough the proxy: {egress.connections} connections, {egress.bytes_received / 1e6:.0f} MB received")
    finally:
        await egress.close()
        await proxy.close()
        upstream.listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512, help="size of each transfer")
    parser.add_argument("--runs", type=int, default=5, help="transfers per path")
    parser.add_argument("--connects", type=int, default=500, help="connections per path for the latency")
    args = parser.parse_args()
    asyncio.run(bench(args.size_mib * 1024 * 1024, args.runs, args.connects))


if __name__ == "__main__":
    main()
