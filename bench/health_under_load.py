"""Health latency while many executions run: start a daemon, launch N `sleep` executions through it, and
time `grpc.health.v1` checks while they run. Prints p50 / p99 / max, how many executions ran, and the peak
resident memory of the daemon and its spawner (the processes that serve them all; each sandbox's own
processes are the sandbox's) sampled while they run.

    sudo .venv/bin/python bench/health_under_load.py --executions 500 --checks 400
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from daemon_harness import UNMETERED_POLICY, make_daemon, running

from sandboxd.cli.client import SandboxClient


def serving_processes(daemon_pid: int) -> list[psutil.Process]:
    """The daemon and its spawner (its child named ``sandboxd-spawn``)."""
    daemon = psutil.Process(daemon_pid)
    spawners = [child for child in daemon.children() if child.name() == "sandboxd-spawn"]
    if not spawners:
        raise SystemExit("the daemon has no spawner")
    return [daemon, spawners[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=500)
    parser.add_argument("--checks", type=int, default=400)
    parser.add_argument("--sleep-s", type=int, default=20,
                        help="how long each execution holds its sandbox: long enough for all to be running at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running(make_daemon(
            Path(tmp), max_concurrent_executions=args.executions + 10,
            limits={"wall_time": "120s", "open_files": 64}, extra=UNMETERED_POLICY)) as daemon:
        statuses: list[str] = []
        failures: list[str] = []

        def one() -> None:
            with SandboxClient(daemon.socket) as client:
                outcome = client.run_command(["/bin/sleep", str(args.sleep_s)])
                statuses.append(outcome.status_name)
                if outcome.status_name != "OK":
                    failures.append(outcome.result.message)

        threads = [threading.Thread(target=one) for _ in range(args.executions)]
        for thread in threads:
            thread.start()
        latencies_ms: list[float] = []
        with SandboxClient(daemon.socket) as client:
            while client.info().running_executions < args.executions * 0.9 and any(t.is_alive() for t in threads):
                time.sleep(0.05)
            running_now = client.info().running_executions
            serving = serving_processes(daemon.process.pid)
            peak_rss = 0
            for _ in range(args.checks):
                t0 = time.perf_counter()
                client.health()
                latencies_ms.append((time.perf_counter() - t0) * 1000)
                peak_rss = max(peak_rss, sum(process.memory_info().rss for process in serving))
                time.sleep(0.005)
        for thread in threads:
            thread.join()
    latencies_ms.sort()
    p99 = latencies_ms[int(len(latencies_ms) * 0.99) - 1]
    print(f"{args.executions} executions ({running_now} running while measured; "
          f"{statuses.count('OK')} ended OK, others: {sorted(set(statuses) - {'OK'})})")
    for message in sorted(set(failures))[:3]:
        print("  not OK:", message)
    print(f"health p50 {statistics.median(latencies_ms):.1f} ms  p99 {p99:.1f} ms  max {latencies_ms[-1]:.1f} ms")
    print(f"daemon + spawner resident memory, peak while they ran: {peak_rss / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
