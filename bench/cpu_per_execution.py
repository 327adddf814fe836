"""CPU per execution, not time: all of the machine's CPU (``/proc/stat``) spent on N executions of
``/bin/true`` on 2 parallel loops, through a real daemon (pool off, then on) and through bubblewrap, in one run
— and, for sandboxd, whose it was: the daemon's threads, the spawner with every sandbox it reaped, this
process's client threads, and the rest (the kernel's own threads: a namespace's teardown, the journal's commit
of an fsync). The pooled daemon is asked over gRPC, then over its framed socket. Throughput on a saturated
machine is its cores divided by this figure: it says what a build or an execution costs, where latency only
says how long one waits. Needs root.

    sudo .venv/bin/python bench/cpu_per_execution.py --runs 600
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from daemon_harness import UNMETERED_POLICY, make_daemon, running
from execute_latency import LOOPS, bwrap_once, sandboxd_once, throughput_per_s

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SPAWNER_COMM = "sandboxd-spawn"


def machine_cpu_s() -> float:
    """Busy CPU of the whole machine since boot: everything but idle and iowait."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS_PER_S


def process_cpu_s(pid: int, *, reaped_children: bool) -> float:
    """A process's user + system CPU (all its threads), with that of the children it has waited for."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS_PER_S


def spawner_of(daemon_pid: int) -> int:
    for task in os.listdir(f"/proc/{daemon_pid}/task"):
        for child in Path(f"/proc/{daemon_pid}/task/{task}/children").read_text().split():
            if Path(f"/proc/{child}/comm").read_text().strip() == SPAWNER_COMM:
                return int(child)
    raise RuntimeError(f"daemon {daemon_pid} has no {SPAWNER_COMM} child")


def measure_sandboxd(runs: int, pool: int, *, framed: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, \
            running(make_daemon(Path(tmp), extra=UNMETERED_POLICY, pool_size=pool, framed=framed)) as daemon:
        assert daemon.process is not None
        clients = [daemon.framed_client() if framed else daemon.client() for _ in range(LOOPS)]
        try:
            for _ in range(10):
                clients[0].run_command(["/bin/true"])
            daemon_pid, spawner_pid = daemon.process.pid, spawner_of(daemon.process.pid)
            before = (machine_cpu_s(), process_cpu_s(daemon_pid, reaped_children=False),
                      process_cpu_s(spawner_pid, reaped_children=True), process_cpu_s(os.getpid(),
                                                                                      reaped_children=False))
            turn = itertools.count()
            per_s = throughput_per_s(lambda: sandboxd_once(clients[next(turn) % LOOPS]), runs)
            after = (machine_cpu_s(), process_cpu_s(daemon_pid, reaped_children=False),
                     process_cpu_s(spawner_pid, reaped_children=True), process_cpu_s(os.getpid(),
                                                                                     reaped_children=False))
        finally:
            for client in clients:
                client.close()
    machine_ms, daemon_ms, sandboxes_ms, client_ms = ((b - a) * 1000 / runs for a, b in zip(before, after,
                                                                                               strict=True))
    return {"exec/s": per_s, "machine": machine_ms, "daemon": daemon_ms, "spawner + sandboxes": sandboxes_ms,
            "client": client_ms, "the rest": machine_ms - daemon_ms - sandboxes_ms - client_ms}


def measure_bwrap(runs: int) -> dict[str, float]:
    before = machine_cpu_s(), process_cpu_s(os.getpid(), reaped_children=True)
    per_s = throughput_per_s(bwrap_once, runs)
    after = machine_cpu_s(), process_cpu_s(os.getpid(), reaped_children=True)
    machine_ms, own_ms = ((b - a) * 1000 / runs for a, b in zip(before, after, strict=True))
    return {"exec/s": per_s, "machine": machine_ms, "bwrap + its caller": own_ms,
            "the rest": machine_ms - own_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--pool", type=int, default=4, help="sandboxes built ahead per kind in the pooled run")
    args = parser.parse_args()
    if shutil.which("bwrap") is None:
        raise SystemExit("bwrap is not installed: apt-get install bubblewrap (bash .ci/setup does)")
    print(f"/bin/true, {args.runs} executions on {LOOPS} loops: CPU ms per execution, bwrap's measured just before")
    for name, pool, framed in (("sandboxd", 0, False), (f"pooled ({args.pool})", args.pool, False),
                               ("pooled, framed", args.pool, True)):
        reference = measure_bwrap(args.runs)
        ours = measure_sandboxd(args.runs, pool, framed=framed)
        for runner, figures in (("bwrap", reference), (name, ours)):
            parts = ", ".join(f"{key} {value:.2f}" for key, value in figures.items()
                              if key not in ("exec/s", "machine"))
            ratio = f"ratio {ours['machine'] / reference['machine']:.2f}" if figures is ours else " " * 10
            print(f"  {runner:14} {figures['machine']:6.2f} ms  {figures['exec/s']:6.1f}/s  {ratio}   {parts}")

if __name__ == "__main__":
    main()
