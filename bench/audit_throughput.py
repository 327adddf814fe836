#!/usr/bin/env python3
"""Audit append→durable throughput and latency: group commit against one write+fsync per record, same run.

    .venv/bin/python bench/audit_throughput.py [--records N] [--dir DIR]

Both write the same hash-chained ``execution.finished``-sized records to a file in DIR (default: a temporary
directory on the file system of /var/log, where the daemon's log lives). "group" is :class:`AuditLog`:
W asyncio tasks each append a record and await ``wait_durable`` before the next, as the daemon's requests do;
its writer thread commits whatever is queued with one write and one fsync. "naive" is W threads each
chaining a record, then write() + fsync() it, under one lock (the chain must stay in order). Latency is from
append to durable. Printed per W: records/s, p50/p99 latency, records per fsync, and group/naive ratios
(throughput ratio > 1 and latency ratio < 1 mean group commit wins).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sandboxd.audit.record import ZERO_HASH, AuditRecord
from sandboxd.audit.writer import AuditLog

WRITERS = (1, 8, 64)
DETAILS: dict[str, Any] = {
    "outcome": "OK", "message": "", "exit_code": 0, "signal": 0, "cpu_user_usec": 12_345, "cpu_system_usec": 6_789,
    "wall_time_ms": 42, "memory_peak_bytes": 12_582_912, "stdout_bytes": 1024, "stderr_bytes": 0,
    "output_truncated": False, "setup_stage": "",
}
FIELDS = {"principal": "svc-ci", "tool": "file_processor", "execution_id": "4f0c2a9e8d7b", "request_id": "req-1"}


def summarize(latencies_s: list[float], elapsed_s: float, fsyncs: int) -> dict[str, float]:
    ordered = sorted(latencies_s)
    return {"per_s": len(ordered) / elapsed_s, "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
            "per_fsync": len(ordered) / fsyncs}


async def bench_group(path: Path, records: int, writers: int) -> dict[str, float]:
    fsyncs: list[float] = []
    log = AuditLog.open(path, hmac_key=None, rotate_bytes=1 << 40, retention_days=None, on_fsync=fsyncs.append)
    latencies: list[float] = []

    async def writer(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            record = log.append("execution.finished", details=DETAILS, **FIELDS)
            await log.wait_durable(record.seq)
            latencies.append(time.perf_counter() - started)

    try:
        await writer(20)  # warm up
        latencies.clear()
        fsyncs.clear()
        started = time.perf_counter()
        await asyncio.gather(*(writer(records // writers) for _ in range(writers)))
        return summarize(latencies, time.perf_counter() - started, len(fsyncs))
    finally:
        log.close()


def bench_naive(path: Path, records: int, writers: int) -> dict[str, float]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    lock = threading.Lock()
    last = [AuditRecord.create(seq=1, unix_time_s=time.time(), event="bench.started", prev=ZERO_HASH, key=None)]
    os.write(fd, last[0].to_line().encode())

    def one() -> float:
        started = time.perf_counter()
        with lock:
            record = AuditRecord.create(seq=last[0].seq + 1, unix_time_s=time.time(), event="execution.finished",
                                        prev=last[0].hash, key=None, details=DETAILS, **FIELDS)
            os.write(fd, record.to_line().encode())
            os.fsync(fd)
            last[0] = record
        return time.perf_counter() - started

    try:
        for _ in range(20):
            one()
        count = records // writers * writers
        started = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            latencies = list(pool.map(lambda _: one(), range(count)))
        return summarize(latencies, time.perf_counter() - started, count)
    finally:
        os.close(fd)


def default_parent() -> Path:
    """A writable directory on /var/log's file system (fsync cost depends on the file system and disk)."""
    target = os.stat("/var/log").st_dev if os.path.isdir("/var/log") else None
    for candidate in ("/var/log", "/var/tmp", tempfile.gettempdir()):
        if os.access(candidate, os.W_OK) and (target is None or os.stat(candidate).st_dev == target):
            return Path(candidate)
    print("note: no writable directory on /var/log's file system; using", tempfile.gettempdir())
    return Path(tempfile.gettempdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records per row")
    parser.add_argument("--dir", type=Path, help="where to write (default: on /var/log's file system)")
    args = parser.parse_args()
    parent = args.dir if args.dir is not None else default_parent()
    with tempfile.TemporaryDirectory(prefix="sandboxd-audit-bench-", dir=parent) as tmp:
        print(f"{args.records} records per row, append→durable, in {tmp}\n")
        header = ("writers", "mode", "records/s", "p50 ms", "p99 ms", "rec/fsync", "rec/s ratio", "p50 ratio")
        print("{:>7} {:>6} {:>10} {:>8} {:>8} {:>10}   {:>11} {:>9}".format(*header))
        for writers in WRITERS:
            naive = bench_naive(Path(tmp) / f"naive-{writers}.log", args.records, writers)
            group = asyncio.run(bench_group(Path(tmp) / f"group-{writers}" / "audit.log", args.records, writers))
            for name, row in (("naive", naive), ("group", group)):
                ratios = ""
                if name == "group":
                    ratios = f"   {row['per_s'] / naive['per_s']:>11.2f} {row['p50_ms'] / naive['p50_ms']:>9.2f}"
                print(f"{writers:>7} {name:>6} {row['per_s']:>10.0f} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} "
                      f"{row['per_fsync']:>10.1f}{ratios}")


if __name__ == "__main__":
    main()
