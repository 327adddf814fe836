#!/usr/bin/env python3
"""What the durable audit trail costs an execution: the same daemon, its audit log on disk vs. on tmpfs.

    .venv/bin/python bench/audit_latency.py [--runs N] [--disk-dir DIR]

Two real ``sandboxd`` processes run ``/bin/true`` as a raw command through gRPC (the Unix socket's
``local-admin``): one writes its audit log on a disk filesystem (``--disk-dir``, default /var/tmp, where
fsync reaches the device), the reference on /dev/shm (tmpfs: fsync returns at once). Everything else is equal,
so the difference is what waiting for the fsync of an execution's records before its Result costs. Printed:
p50/p99 request→Result latency and executions per second at 1 and 4 parallel callers, and disk/tmpfs ratios,
plus the records written and the fsyncs they took (from the daemon's metrics: group commit at work). Needs root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandboxd.cli.client import SandboxClient, SandboxdError

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Daemon:
    def __init__(self, audit_dir: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sandboxd-bench-"))
        self.socket = self.root / "sandboxd.sock"
        self.audit_dir = audit_dir
        config = self.root / "sandboxd.toml"
        self.metrics_port = _free_port()
        config.write_text("[daemon]\nmax_concurrent_executions = 64\n"
                          f'metrics_listen = "127.0.0.1:{self.metrics_port}"\n'
                          f'[audit]\npath = "{audit_dir / "audit.log"}"\n'
                          # the shipped admin role's 1000/min would throttle the benchmark itself
                          '[roles.admin]\ntools = ["*"]\ncommands = true\nadmin = true\n')
        self.process = subprocess.Popen(
            [str(BIN / "sandboxd"), "--config", str(config), "--socket", str(self.socket), "--state-dir",
             str(self.root / "state"), "--instance", f"bench-{uuid.uuid4().hex[:8]}", "--log-level", "WARNING"],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with SandboxClient(self.socket) as client:
                    if client.health() == "SERVING":
                        return
            except SandboxdError:
                time.sleep(0.05)
        raise SystemExit("the daemon did not start")

    def records(self) -> int:
        return sum(1 for path in self.audit_dir.glob("audit.log*") for _ in path.open("rb"))

    def fsyncs(self) -> int:
        """The audit log's fsyncs so far, from the daemon's own metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("sandboxd_audit_fsync_seconds_count "):
                    return int(float(line.split()[1]))
        raise SystemExit("no sandboxd_audit_fsync_seconds_count in the metrics")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.audit_dir, ignore_errors=True)


def run(daemon: Daemon, runs: int, callers: int) -> dict[str, float]:
    latencies: list[float] = []

    def caller(count: int) -> None:
        with SandboxClient(daemon.socket) as client:
            for _ in range(count):
                t0 = time.perf_counter()
                outcome = client.run_command(["/bin/true"])
                latencies.append(time.perf_counter() - t0)
                assert outcome.status_name == "OK", outcome.result
    started = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(caller, [runs // callers] * callers))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
            "per_s": len(ordered) / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--disk-dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    disk = Daemon(Path(tempfile.mkdtemp(prefix="audit-disk-", dir=args.disk_dir)))
    tmpfs = Daemon(Path(tempfile.mkdtemp(prefix="audit-tmpfs-", dir="/dev/shm")))
    try:
        run(disk, 20, 1), run(tmpfs, 20, 1)  # warm both: first cgroup moves, page cache, imports
        print(f"{'callers':>7} {'audit log':>9} {'p50 ms':>8} {'p99 ms':>8} {'exec/s':>8}   "
              f"{'p50 ratio':>9} {'exec/s ratio':>12}")
        for callers in (1, 4):
            results = {}
            for name, daemon in (("tmpfs", tmpfs), ("disk", disk)):  # alternated, same machine state
                results[name] = run(daemon, args.runs, callers)
                r = results[name]
                print(f"{callers:>7} {name:>9} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['per_s']:>8.1f}", end="")
                if name == "disk":
                    ref = results["tmpfs"]
                    print(f"   {r['p50_ms'] / ref['p50_ms']:>9.2f} {r['per_s'] / ref['per_s']:>12.2f}", end="")
                print()
        records, fsyncs = disk.records(), disk.fsyncs()
        print(f"disk log: {records} records in {fsyncs} fsyncs ({records / max(fsyncs, 1):.1f} records per fsync; "
              "4 records per execution: request, decision, started, finished)")
    finally:
        disk.stop()
        tmpfs.stop()


if __name__ == "__main__":
    main()
