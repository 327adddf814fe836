"""``Execute`` of ``/bin/true`` through a real daemon against bubblewrap, side by side in one run: latency
alternating request by request (p50, p99), then executions per second on 2 parallel loops of each — for a
daemon that builds each sandbox on the request (pool off) and one whose warm pool builds them ahead
(``--pool N`` per kind; with ``--pace-ms`` between requests, the pool has time to refill as it would between
an agent's calls) — the pooled one asked over gRPC, then over its framed socket (``[daemon] framed_socket``:
the same messages without HTTP/2).

sandboxd runs it as a raw command under full isolation — every namespace, a fresh root, a cgroup leaf with
limits, seccomp, a uid of its own, the audit fsynced before the Result — over the Unix socket with the
synchronous Python client. bubblewrap runs ``--unshare-all --die-with-parent --ro-bind / / --proc /proc --dev
/dev --tmpfs /tmp /bin/true`` (no cgroup, no seccomp, no audit: the reference does less). Ratios below 1 for
latency and above 1 for throughput mean sandboxd is faster. Needs root.

    sudo .venv/bin/python bench/execute_latency.py --runs 300 [--pool 4] [--pace-ms 30]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from daemon_harness import UNMETERED_POLICY, make_daemon, running

from sandboxd.cli.client import SandboxClient

BWRAP = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
         "--dev", "/dev", "--tmpfs", "/tmp", "/bin/true"]
LOOPS = 2


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def bwrap_once() -> float:
    t0 = time.perf_counter()
    subprocess.run(BWRAP, check=True)
    return (time.perf_counter() - t0) * 1000


def sandboxd_once(client: SandboxClient) -> float:
    t0 = time.perf_counter()
    outcome = client.run_command(["/bin/true"])
    elapsed_ms = (time.perf_counter() - t0) * 1000
    assert outcome.status_name == "OK", outcome.result
    return elapsed_ms


def throughput_per_s(run_one: object, runs: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(LOOPS) as pool:
        list(pool.map(lambda _: run_one(), range(runs)))  # type: ignore[operator]
    return runs / (time.perf_counter() - t0)


def measure(runs: int, pool: int, pace_ms: float, *,
            framed: bool = False) -> tuple[list[float], list[float], float, float]:
    """Alternating latencies (sandboxd, bwrap) and both throughputs, with a daemon of ``pool`` per kind;
    ``framed``: Execute through its framed socket instead of gRPC."""
    ours_ms: list[float] = []
    ref_ms: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, \
            running(make_daemon(Path(tmp), extra=UNMETERED_POLICY, pool_size=pool, framed=framed)) as daemon:
        clients = [daemon.framed_client() if framed else daemon.client() for _ in range(LOOPS)]
        try:
            for _ in range(10):  # warm both paths
                sandboxd_once(clients[0])
                bwrap_once()
            for _ in range(runs):
                time.sleep(pace_ms / 1000)
                ours_ms.append(sandboxd_once(clients[0]))
                ref_ms.append(bwrap_once())
            turn = iter(range(10**9))
            ours_per_s = throughput_per_s(lambda: sandboxd_once(clients[next(turn) % LOOPS]), runs)
            ref_per_s = throughput_per_s(bwrap_once, runs)
        finally:
            for client in clients:
                client.close()
    return ours_ms, ref_ms, ours_per_s, ref_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--pool", type=int, default=4, help="sandboxes built ahead per kind in the pooled run")
    parser.add_argument("--pace-ms", type=float, default=0.0, help="pause before each alternating pair")
    args = parser.parse_args()
    if shutil.which("bwrap") is None:
        raise SystemExit("bwrap is not installed: apt-get install bubblewrap (bash .ci/setup does)")
    print(f"/bin/true, {args.runs} executions each, alternating (pace {args.pace_ms:g} ms); then {LOOPS} parallel "
          "loops")
    print(f"  {'':16} {'p50 ms':>8} {'p99 ms':>8} {'exec/s':>8}   {'p50 ratio':>9} {'exec/s ratio':>12} "
          f"{'p99/p50':>7}")
    rows: list[tuple[str, float, float, float]] = []
    for name, pool, framed in (("sandboxd", 0, False), (f"pooled ({args.pool})", args.pool, False),
                               ("pooled, framed", args.pool, True)):
        ours_ms, ref_ms, ours_per_s, ref_per_s = measure(args.runs, pool, args.pace_ms, framed=framed)
        ours_p50, ref_p50 = statistics.median(ours_ms), statistics.median(ref_ms)
        rows.append((name, ours_p50 / ref_p50, ours_per_s / ref_per_s, p99(ours_ms) / ours_p50))
        print(f"  {'bwrap':16} {ref_p50:8.2f} {p99(ref_ms):8.2f} {ref_per_s:8.1f}")
        print(f"  {name:16} {ours_p50:8.2f} {p99(ours_ms):8.2f} {ours_per_s:8.1f}   {rows[-1][1]:9.2f} "
              f"{rows[-1][2]:12.2f} {rows[-1][3]:7.2f}")
    print_targets(rows)


# The speed issue's targets for Execute, each a ratio taken in the same run: (what, its column, met when)
TARGETS = (("p50 <= 0.5x bwrap's", 1, lambda ratio: ratio <= 0.5),
           ("exec/s >= 1.0x bwrap's (2 loops)", 2, lambda ratio: ratio >= 1.0),
           ("p99 <= 2x its own p50", 3, lambda ratio: ratio <= 2.0))


def print_targets(rows: list[tuple[str, float, float, float]]) -> None:
    """Each target, and the rows of this run that meet it; all three met by one row is the issue's bar."""
    print("targets (this run):")
    for what, column, met in TARGETS:
        meeting = [name for name, *ratios in rows if met(ratios[column - 1])]
        print(f"  {what:34} {', '.join(meeting) if meeting else 'not met'}")
    whole = [name for name, *ratios in rows if all(met(ratios[column - 1]) for _, column, met in TARGETS)]
    print(f"  {'all three in one row':34} {', '.join(whole) if whole else 'not met'}")


if __name__ == "__main__":
    main()
