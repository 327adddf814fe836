"""The floor of the request path: what an ``Execute`` of ``/bin/true`` costs in its transport alone — gRPC's
Python server and client, or the framed socket's — with no daemon, no policy, no audit and no sandbox, against
bubblewrap, side by side in one run.

A real daemon (pool on) runs ``/bin/true`` once and its Execute stream is recorded, message for message. A
second process of this script then serves exactly those messages, on one uvloop loop as the daemon's is, from
a bare ``grpc.aio`` server and from a bare framed one (``sandboxd.api.frames``), each on a Unix socket; the
daemon's own client (:class:`SandboxClient`, synchronous; ``framed_socket=`` for the second) asks it,
alternating request by request with bwrap, then on 2 parallel loops. Printed: p50, p99, executions per second
and all of the machine's CPU per execution (``/proc/stat``), with the ratios to bwrap's — and what the issue's
targets (``Execute`` p50 <= 0.5x bwrap's, executions per second >= 1.0x bwrap's) leave for everything the
floor leaves out: the daemon's own work and the sandbox (``spawn_latency.py`` and ``cpu_per_execution.py``
measure those). Needs root (the recorded run is a real one).

    sudo .venv/bin/python bench/request_floor.py --runs 400
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from cpu_per_execution import machine_cpu_s, measure_bwrap, process_cpu_s
from daemon_harness import UNMETERED_POLICY, make_daemon, running
from execute_latency import LOOPS, bwrap_once, p99, throughput_per_s

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2_grpc as pb_grpc
from sandboxd.api.frames import HEADER_BYTES, event_frame, status_frame
from sandboxd.cli.client import SandboxClient

COMMAND = ["/bin/true"]
SERVER_START_TIMEOUT_S = 10.0


def record_stream(pool: int) -> list[pb.ExecuteEvent]:
    """The messages of one real pooled ``Execute`` of ``/bin/true``, as the daemon sent them."""
    with tempfile.TemporaryDirectory() as tmp, \
            running(make_daemon(Path(tmp), extra=UNMETERED_POLICY, pool_size=pool)) as daemon, \
            SandboxClient(daemon.socket) as client:
        client.run_command(COMMAND)  # the second one is taken from a pool the first one's start filled
        return list(client.execute(command=COMMAND))


def write_events(path: Path, events: list[pb.ExecuteEvent]) -> None:
    with path.open("wb") as out:
        for event in events:
            data = event.SerializeToString()
            out.write(len(data).to_bytes(4, "big") + data)


def read_events(path: Path) -> Iterator[pb.ExecuteEvent]:
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        yield pb.ExecuteEvent.FromString(data[offset + 4:offset + 4 + size])
        offset += 4 + size


class Replay(pb_grpc.SandboxServicer):
    """Answers every Execute with the recorded messages, and does nothing else."""

    def __init__(self, events: list[pb.ExecuteEvent]) -> None:
        self._events = events

    async def Execute(self, request: pb.ExecuteRequest, context: object) -> AsyncIterator[pb.ExecuteEvent]:
        for event in self._events:
            yield event


async def replay_framed(events: list[pb.ExecuteEvent], reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    """Each FramedCall answered with the recorded events, one write each as the daemon sends them, and OK."""
    ok = status_frame(0, "")
    try:
        while True:
            length = int.from_bytes(await reader.readexactly(HEADER_BYTES), "big")
            pb.FramedCall.FromString(await reader.readexactly(length))
            for event in events:
                writer.write(event_frame(event))
                await writer.drain()
            writer.write(ok)
            await writer.drain()
    except asyncio.IncompleteReadError:
        writer.close()


def serve(grpc_socket: str, framed_socket: str, events_path: Path) -> None:
    """The floors' servers, in a process of their own (``--serve``), on one uvloop loop."""
    import grpc
    import uvloop

    events = list(read_events(events_path))

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_SandboxServicer_to_server(Replay(events), server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"unix:{grpc_socket}")
        await server.start()
        framed = await asyncio.start_unix_server(lambda r, w: replay_framed(events, r, w), path=framed_socket)
        async with framed:
            await server.wait_for_termination()

    uvloop.run(main())


def start_server(grpc_socket: Path, framed_socket: Path, events_path: Path) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(grpc_socket), str(framed_socket),
                               str(events_path)])
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not (grpc_socket.exists() and framed_socket.exists()):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"the floor's server did not start (exit {server.poll()})")
        time.sleep(0.01)
    return server


def floor_once(client: SandboxClient) -> float:
    t0 = time.perf_counter()
    outcome = client.run_command(COMMAND)
    elapsed_ms = (time.perf_counter() - t0) * 1000
    assert outcome.status_name == "OK", outcome.result
    return elapsed_ms


def measure_floor(runs: int, events: list[pb.ExecuteEvent], *,
                  framed: bool) -> tuple[list[float], list[float], dict[str, float]]:
    """Alternating latencies (floor, bwrap), then the floor's executions per second and CPU on 2 loops — over
    gRPC, or (``framed``) over the framed socket."""
    floor_ms: list[float] = []
    ref_ms: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        events_path, grpc_socket, framed_socket = Path(tmp) / "events", Path(tmp) / "g.sock", Path(tmp) / "f.sock"
        write_events(events_path, events)
        server = start_server(grpc_socket, framed_socket, events_path)
        clients = [SandboxClient(grpc_socket, framed_socket=framed_socket if framed else None)
                   for _ in range(LOOPS)]
        try:
            for _ in range(10):
                floor_once(clients[0])
                bwrap_once()
            for _ in range(runs):
                floor_ms.append(floor_once(clients[0]))
                ref_ms.append(bwrap_once())
            before = machine_cpu_s(), process_cpu_s(server.pid, reaped_children=False), time.process_time()
            turn = iter(range(10**9))
            per_s = throughput_per_s(lambda: floor_once(clients[next(turn) % LOOPS]), runs)
            after = machine_cpu_s(), process_cpu_s(server.pid, reaped_children=False), time.process_time()
        finally:
            for client in clients:
                client.close()
            server.terminate()
            server.wait()
    machine_ms, server_ms, client_ms = ((b - a) * 1000 / runs for a, b in zip(before, after, strict=True))
    return floor_ms, ref_ms, {"exec/s": per_s, "machine": machine_ms, "server": server_ms, "client": client_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--serve", nargs=3, metavar=("GRPC_SOCKET", "FRAMED_SOCKET", "EVENTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], Path(args.serve[2]))
        return
    if shutil.which("bwrap") is None:
        raise SystemExit("bwrap is not installed: apt-get install bubblewrap (bash .ci/setup does)")
    events = record_stream(pool=1)
    kinds = ", ".join(event.WhichOneof("event") or "?" for event in events)
    print(f"/bin/true, {args.runs} each: a pooled Execute's {len(events)} messages ({kinds}) replayed by a bare "
          f"server, no sandbox; alternating, then {LOOPS} loops. Left: what the targets leave for the daemon's "
          "own work and the sandbox (0.5x bwrap's p50 minus the floor's; bwrap's CPU minus the floor's)")
    print(f"  {'':14} {'p50 ms':>7} {'p99 ms':>7} {'exec/s':>7} {'CPU ms':>7}   {'p50 ratio':>9} "
          f"{'exec/s ratio':>12} {'CPU ratio':>9}   {'left':>20}")
    for name, framed in (("floor, gRPC", False), ("floor, framed", True)):
        floor_ms, ref_ms, floor = measure_floor(args.runs, events, framed=framed)
        reference = measure_bwrap(args.runs)
        floor_p50, ref_p50 = statistics.median(floor_ms), statistics.median(ref_ms)
        print(f"  {'bwrap':14} {ref_p50:7.2f} {p99(ref_ms):7.2f} {reference['exec/s']:7.1f} "
              f"{reference['machine']:7.2f}")
        print(f"  {name:14} {floor_p50:7.2f} {p99(floor_ms):7.2f} {floor['exec/s']:7.1f} {floor['machine']:7.2f}   "
              f"{floor_p50 / ref_p50:9.2f} {floor['exec/s'] / reference['exec/s']:12.2f} "
              f"{floor['machine'] / reference['machine']:9.2f}   {0.5 * ref_p50 - floor_p50:5.2f} ms, "
              f"{reference['machine'] - floor['machine']:5.2f} CPU   (server {floor['server']:.2f}, client "
              f"{floor['client']:.2f} ms CPU)")


if __name__ == "__main__":
    main()
