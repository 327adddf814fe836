"""Output streaming: megabytes per second of a handler's stdout reaching a Python client through a real daemon
— over gRPC, and over its framed socket — against the same bytes read straight from a pipe by the same Python
process, side by side in one run.

sandboxd runs ``head -c SIZE /dev/zero`` as a raw command under full isolation, over the Unix socket, with the
synchronous Python client counting the bytes of the output events; the reference runs the same command as a
plain subprocess and reads its stdout pipe. Needs root.

    sudo .venv/bin/python bench/output_throughput.py [--mib 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from daemon_harness import UNMETERED_POLICY, make_daemon, running

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.cli.client import SandboxClient

READ_BYTES = 1 << 20


def through_daemon_mb_per_s(client: SandboxClient, argv: list[str], size_bytes: int) -> float:
    received = 0
    status = ""
    t0 = time.perf_counter()
    for event in client.execute(command=argv):
        kind = event.WhichOneof("event")
        if kind == "output" and event.output.stream == pb.STDOUT:
            received += len(event.output.data)
        elif kind == "result":
            status = pb.Status.Name(event.result.status)
    elapsed_s = time.perf_counter() - t0
    if status != "OK" or received != size_bytes:
        raise SystemExit(f"sandboxd: {status}, {received} of {size_bytes} bytes")
    return size_bytes / elapsed_s / 1e6


def from_pipe_mb_per_s(argv: list[str], size_bytes: int) -> float:
    received = 0
    t0 = time.perf_counter()
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        while chunk := process.stdout.read1(READ_BYTES):
            received += len(chunk)
    elapsed_s = time.perf_counter() - t0
    if received != size_bytes:
        raise SystemExit(f"reference: {received} of {size_bytes} bytes")
    return size_bytes / elapsed_s / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="stdout of each execution, in MiB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size_bytes = args.mib << 20
    argv = ["/usr/bin/head", "-c", str(size_bytes), "/dev/zero"]
    over_grpc: list[float] = []
    over_framed: list[float] = []
    ref: list[float] = []
    limits = {"output": f"{args.mib + 1}M", "wall_time": "120s"}
    with tempfile.TemporaryDirectory() as tmp, running(make_daemon(Path(tmp), limits=limits, extra=UNMETERED_POLICY,
                                                                   framed=True)) as daemon, \
            daemon.client() as client, daemon.framed_client() as framed:
        for _ in range(args.runs):
            over_grpc.append(through_daemon_mb_per_s(client, argv, size_bytes))
            over_framed.append(through_daemon_mb_per_s(framed, argv, size_bytes))
            ref.append(from_pipe_mb_per_s(argv, size_bytes))
    ref_mb_s = statistics.median(ref)
    print(f"{args.mib} MiB of stdout, median of {args.runs} runs each")
    print(f"  {'straight from a pipe':28} {ref_mb_s:8.0f} MB/s")
    for name, runs in (("through sandboxd (gRPC)", over_grpc), ("through its framed socket", over_framed)):
        ours_mb_s = statistics.median(runs)
        print(f"  {name:28} {ours_mb_s:8.0f} MB/s   ratio {ours_mb_s / ref_mb_s:.2f}")


if __name__ == "__main__":
    main()
