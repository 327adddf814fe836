#!/usr/bin/env python3
"""What one core of a sandboxd host carries, for sizing a fleet: executions per second, and executions held
at once.

    sudo .venv/bin/python bench/fleet_sizing.py [--executions N] [--hold-s S] [--callers C ...]

One real ``sandboxd`` (raw commands, full isolation, its audit log on disk, the warm pool off so every call
builds its sandbox) on this machine, called over its Unix socket:

1. **throughput** — ``/bin/true`` from 4 callers per core, N executions: executions/s, divided by the cores
   (the machine is saturated: the daemon, the spawner and the sandboxes share them);
2. **concurrency** — C callers each running ``/bin/sleep S`` in a loop for a while, for each C given: how many
   executions are in flight on average (Little's law: completed/s * mean latency) and how much each call's
   latency exceeds S. Below saturation in-flight grows with C and the overhead stays near the setup cost;
   past it the overhead climbs. The most in flight with the p50 overhead under half a second, per core, is
   the concurrency one core sustains for calls that hold their sandbox S seconds while using no CPU.

Printed: the figures, the memory each held execution costs (the machine's used memory while C executions
are held, against before), and the fleet they imply for 50,000 concurrent requests. Needs root.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from sandboxd.cli.client import SandboxClient, SandboxdError

BIN = Path(sys.executable).parent
TARGET_CONCURRENT = 50_000
OVERHEAD_BUDGET_S = 0.5  # a held call may start this much later than it would on an idle host


class Daemon:
    def __init__(self, max_concurrent: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sandboxd-sizing-", dir="/var/tmp"))
        self.socket = self.root / "sandboxd.sock"
        config = self.root / "sandboxd.toml"
        config.write_text(f"[daemon]\nmax_concurrent_executions = {max_concurrent}\n"
                          "[sandbox.pool]\nsize = 0\n"
                          "[sandbox.limits]\nwall_time = \"600s\"\npids = 16\n"
                          f'[audit]\npath = "{self.root / "audit" / "audit.log"}"\n'
                          '[roles.admin]\ntools = ["*"]\ncommands = true\nadmin = true\n')
        self.process = subprocess.Popen(
            [str(BIN / "sandboxd"), "--config", str(config), "--socket", str(self.socket), "--state-dir",
             str(self.root / "state"), "--instance", f"sizing-{uuid.uuid4().hex[:8]}", "--log-level", "WARNING"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"sandboxd exited {self.process.returncode}")
            try:
                with SandboxClient(self.socket) as client:
                    if client.health() == "SERVING":
                        return
            except SandboxdError:
                pass
            time.sleep(0.05)  # (polling the start of a process we do not control)
        raise SystemExit("the daemon did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)
        shutil.rmtree(self.root, ignore_errors=True)


def throughput(daemon: Daemon, executions: int, callers: int) -> float:
    """Executions of /bin/true per second."""
    def caller(count: int) -> None:
        with SandboxClient(daemon.socket) as client:
            for _ in range(count):
                outcome = client.run_command(["/bin/true"])
                if outcome.status_name != "OK":
                    raise SystemExit(f"/bin/true ended {outcome.status_name}: {outcome.result.message}")

    started = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(caller, [executions // callers] * callers))
    return (executions // callers * callers) / (time.perf_counter() - started)


def concurrency(daemon: Daemon, callers: int, hold_s: float, window_s: float) -> dict[str, float]:
    """``callers`` loops of ``sleep hold_s`` for ``window_s``: completed/s, in flight, latency overhead, memory."""
    latencies: list[float] = []
    stop = threading.Event()
    used_before = psutil.virtual_memory().used
    used_held: list[int] = []

    def caller() -> None:
        with SandboxClient(daemon.socket) as client:
            while not stop.is_set():
                t0 = time.perf_counter()
                outcome = client.run_command(["/bin/sleep", str(hold_s)])
                if outcome.status_name != "OK":
                    raise SystemExit(f"sleep ended {outcome.status_name}: {outcome.result.message}")
                latencies.append(time.perf_counter() - t0)

    with ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(caller) for _ in range(callers)]
        time.sleep(window_s / 2)  # the measurement window itself
        used_held.append(psutil.virtual_memory().used)
        time.sleep(window_s / 2)
        stop.set()
        for future in futures:
            future.result()
    ordered = sorted(latencies)
    per_s = len(ordered) / (window_s + statistics.mean(ordered))  # the last round finishes after the window
    mean_s = statistics.mean(ordered)
    return {"per_s": per_s, "in_flight": per_s * mean_s, "p50_over_s": statistics.median(ordered) - hold_s,
            "p99_over_s": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] - hold_s,
            "mib_each": (used_held[0] - used_before) / callers / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=800)
    parser.add_argument("--hold-s", type=float, default=2.0)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--callers", type=int, nargs="+", default=[16, 32, 64, 96])
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    cores = os.cpu_count() or 1
    daemon = Daemon(max_concurrent=max(args.callers) + 8)
    try:
        throughput(daemon, 40, cores)  # warm up: imports, page cache, the first cgroups
        rate = throughput(daemon, args.executions, 4 * cores)
        print(f"throughput: {rate:.1f} executions/s of /bin/true on {cores} cores = {rate / cores:.1f} per core "
              f"({cores / rate * 1000:.1f} core-ms per execution: daemon, spawner, sandbox set-up and tear-down, "
              "audit)")
        print(f"concurrency, calls holding their sandbox {args.hold_s:g} s (sleep):")
        print(f"{'callers':>8} {'done/s':>8} {'in flight':>9} {'p50 over':>9} {'p99 over':>9} {'MiB each':>9}")
        sustained = 0.0
        for callers in args.callers:
            r = concurrency(daemon, callers, args.hold_s, args.window_s)
            print(f"{callers:>8} {r['per_s']:>8.1f} {r['in_flight']:>9.1f} {r['p50_over_s']:>8.3f}s "
                  f"{r['p99_over_s']:>8.3f}s {r['mib_each']:>9.1f}")
            if r["p50_over_s"] <= OVERHEAD_BUDGET_S:
                sustained = max(sustained, r["in_flight"])
        per_core = sustained / cores
        print(f"sustained: {sustained:.0f} executions in flight with p50 overhead <= {OVERHEAD_BUDGET_S} s "
              f"= {per_core:.1f} per core (calls of {args.hold_s:g} s)")
        if per_core:
            print(f"{TARGET_CONCURRENT} concurrent such requests: {math.ceil(TARGET_CONCURRENT / per_core)} cores "
                  f"by concurrency; they start {TARGET_CONCURRENT / args.hold_s:.0f} executions/s = "
                  f"{math.ceil(TARGET_CONCURRENT / args.hold_s / (rate / cores))} cores by throughput")
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
