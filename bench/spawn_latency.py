#!/usr/bin/env python3
"""Per-execution latency and throughput of sandboxd's engine against bubblewrap, side by side, same run.

    .venv/bin/python bench/spawn_latency.py [--runs N]

Both run ``/bin/true`` under full isolation: sandboxd with its default seccomp profile, a fresh cgroup with
limits, pid/mount/net/ipc/uts/cgroup namespaces and a fresh read-only root; bubblewrap with
``--unshare-all --die-with-parent --ro-bind / / --proc /proc --dev /dev --tmpfs /tmp`` (no cgroup, no seccomp:
the reference does less work). Latency is measured from the request to the final result / process exit.
Printed: p50/p99 latency and executions per second at 1 and 2 parallel loops, and sandboxd/bwrap ratios
(latency ratio < 1 and throughput ratio > 1 mean sandboxd is faster) — sandboxd building each sandbox on the
request ("sandboxd") and taking one its warm pool built ahead ("pooled", refilled behind it). Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandboxd.base.limits import Limits
from sandboxd.engine.config import EngineConfig
from sandboxd.engine.executor import Executor
from sandboxd.engine.result import Result, Status
from sandboxd.engine.seccomp.profile import ProfileCache
from sandboxd.engine.spec import ExecutionSpec

REPO = Path(__file__).resolve().parents[1]
POOL_SIZE = 4  # sandboxes built ahead in the "pooled" rows
BWRAP = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
         "--dev", "/dev", "--tmpfs", "/tmp", "/bin/true"]


def summarize(latencies_s: list[float], elapsed_s: float) -> dict[str, float]:
    ordered = sorted(latencies_s)
    return {"p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
            "per_s": len(ordered) / elapsed_s}


async def bench_sandboxd(runs: int, loops: int, bpf: bytes, state: Path, *, pool: int = 0,
                         pace_s: float = 0.0) -> dict[str, float]:
    """``pool``: sandboxes the warm pool keeps built ahead (0: each execution builds its own)."""
    executor = await Executor.create(EngineConfig(state_dir=state, instance=f"bench-{uuid.uuid4().hex[:8]}"))
    spec = ExecutionSpec(argv=("/bin/true",), seccomp_bpf=bpf, limits=Limits())
    executor.configure_pool([spec], per_spec=pool, total=pool)
    latencies: list[float] = []

    async def loop(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(pace_s)
            t0 = time.perf_counter()
            result = None
            async for event in executor.execute(spec):
                result = event
            assert isinstance(result, Result) and result.status is Status.OK, result
            latencies.append(time.perf_counter() - t0)

    try:
        await loop(5)  # warm up
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(runs // loops) for _ in range(loops)))
        return summarize(latencies, time.perf_counter() - t0)
    finally:
        await executor.close()


def bench_bwrap(runs: int, loops: int, pace_s: float = 0.0) -> dict[str, float]:
    def one() -> float:
        time.sleep(pace_s)
        t0 = time.perf_counter()
        subprocess.run(BWRAP, check=True)
        return time.perf_counter() - t0

    for _ in range(5):
        one()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(loops) as pool:
        latencies = list(pool.map(lambda _: one(), range(runs // loops * loops)))
    return summarize(latencies, time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="executions per configuration")
    parser.add_argument("--pace-ms", type=float, default=0.0,
                        help="a pause before each execution (requests arriving apart, as an agent's do: the pool "
                             "refills between them); throughput then counts the pauses")
    args = parser.parse_args()
    pace_s = args.pace_ms / 1000
    if shutil.which("bwrap") is None:
        raise SystemExit("bwrap is not installed: apt-get install bubblewrap (bash .ci/setup does)")
    bpf = ProfileCache().get(REPO / "seccomp-profiles" / "default.json").bpf
    print(f"/bin/true, {args.runs} executions per row, {args.pace_ms:g} ms apart\n")
    header = ("loops", "runner", "p50 ms", "p99 ms", "exec/s", "p50 ratio", "exec/s ratio")
    print("{:>5} {:>9} {:>8} {:>8} {:>8}   {:>9} {:>12}".format(*header))
    with tempfile.TemporaryDirectory(prefix="sandboxd-bench-") as tmp:
        for loops in (1, 2):
            ours = asyncio.run(bench_sandboxd(args.runs, loops, bpf, Path(tmp) / f"state{loops}", pace_s=pace_s))
            pooled = asyncio.run(bench_sandboxd(args.runs, loops, bpf, Path(tmp) / f"pool{loops}", pool=POOL_SIZE,
                                                pace_s=pace_s))
            ref = bench_bwrap(args.runs, loops, pace_s)
            for name, row in (("bwrap", ref), ("sandboxd", ours), ("pooled", pooled)):
                ratios = ""
                if name != "bwrap":
                    ratios = f"   {row['p50_ms'] / ref['p50_ms']:>9.2f} {row['per_s'] / ref['per_s']:>12.2f}"
                print(f"{loops:>5} {name:>9} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['per_s']:>8.1f}{ratios}")


if __name__ == "__main__":
    main()
