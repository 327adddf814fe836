"""The warm pool: sandboxes built ahead, each used once. What one execution leaves — files in /tmp and /work,
processes, SysV IPC, an abstract socket — is not seen by the next one of the same pool; a spec of another key
is built fresh (a miss); a pool released unused leaves nothing behind (the fixture checks cgroups, mounts and
processes after each test); a pooled execution gets the argv and environment of its own request."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from daemon_harness import sandbox_processes  # tests/integration is on sys.path

from sandboxd.base.limits import Limits
from sandboxd.engine.executor import Executor
from sandboxd.engine.result import Status
from sandboxd.engine.spec import ExecutionSpec

from .conftest import Engine, Run

READY_TIMEOUT_S = 30.0

LEAVE_TRACES = r"""
import os, socket, subprocess
open('/tmp/trace', 'w').write('first')
open('/work/trace', 'w').write('first')
subprocess.run(['/usr/bin/ipcmk', '-M', '4096'], check=True, stdout=subprocess.DEVNULL)
subprocess.run(['/usr/bin/ipcmk', '-Q'], check=True, stdout=subprocess.DEVNULL)
listener = socket.socket(socket.AF_UNIX)
listener.bind('\0sandboxd-pool-trace')
listener.listen()
subprocess.Popen(['/bin/sleep', '1000'])  # left running: the cgroup's kill ends it
print(os.getuid(), open('/proc/sys/kernel/hostname').read().strip())
"""

LOOK_FOR_TRACES = r"""
import json, os, socket, subprocess
found = {"tmp": os.path.exists('/tmp/trace'), "work": os.path.exists('/work/trace')}
found["ipc"] = subprocess.run(['/usr/bin/ipcs', '-m', '-q'], check=True, capture_output=True, text=True).stdout
found["pids"] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
probe = socket.socket(socket.AF_UNIX)
probe.bind('\0sandboxd-pool-trace')  # refused (EADDRINUSE) if the first one's were still there
found["uid"] = os.getuid()
found["argv_env"] = [os.environ.get("ONLY_MINE"), os.environ.get("FIRST_ONLY")]
print(json.dumps(found))
"""


async def _ready(executor: Executor, count: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while executor.pool_stats().ready < count:
        assert executor.pool_stats().failed == 0, "the pool could not build a sandbox"
        assert time.monotonic() < deadline, "the pool built no sandbox in time"
        await asyncio.sleep(0.01)


def _pooled(engine: Engine, first: ExecutionSpec, second: ExecutionSpec) -> tuple[Run, Run, int]:
    async def body(executor: Executor) -> tuple[Run, Run, int]:
        executor.configure_pool([first], per_spec=2, total=2)
        await _ready(executor, 2)
        one = await engine._fresh_or_pooled(executor, first, None, None)
        two = await engine._fresh_or_pooled(executor, second, None, None)
        return one, two, executor.pool_stats().hits

    return asyncio.run(engine._with_executor(body))


def test_nothing_of_one_execution_is_seen_by_the_next(engine: Engine) -> None:
    limits = Limits(wall_time_ms=20_000, pids_max=32)
    first = engine.spec("/usr/bin/python3", "-c", LEAVE_TRACES, limits=limits,
                        env={"FIRST_ONLY": "1"})
    second = engine.spec("/usr/bin/python3", "-c", LOOK_FOR_TRACES, limits=limits,
                         env={"ONLY_MINE": "yes"})
    one, two, hits = _pooled(engine, first, second)
    assert one.result.status is Status.OK, (one.result, one.stderr)
    assert two.result.status is Status.OK, (two.result, two.stderr)
    assert hits == 2, "both ran in sandboxes of the pool"
    found = json.loads(two.stdout)
    assert found["tmp"] is False and found["work"] is False
    assert "0x" not in found["ipc"], found["ipc"]  # no shared memory segment, no message queue
    assert len(found["pids"]) <= 3, found["pids"]  # its init, itself, ipcs' parent at most: no sleep 1000
    assert found["argv_env"] == ["yes", None]  # the environment of its own request, nothing of the first
    assert str(found["uid"]) != one.stdout.split()[0]  # a uid of its own


def test_a_spec_of_another_key_is_built_fresh(engine: Engine) -> None:
    pooled = engine.spec("/bin/true")
    other = engine.spec("/bin/true", limits=Limits(wall_time_ms=20_000, memory_max_bytes=64 << 20))

    async def body(executor: Executor) -> tuple[Status, Status, int, int]:
        executor.configure_pool([pooled], per_spec=1, total=1)
        await _ready(executor, 1)
        missed = await engine._fresh_or_pooled(executor, other, None, None)
        hit = await engine._fresh_or_pooled(executor, pooled, None, None)
        stats = executor.pool_stats()
        return missed.result.status, hit.result.status, stats.hits, stats.misses

    missed, hit, hits, misses = asyncio.run(engine._with_executor(body))
    assert (missed, hit, hits) == (Status.OK, Status.OK, 1)
    assert misses == 0  # another key is not this pool's miss: it has no pool at all


def test_a_pool_refills_and_releases_what_it_no_longer_wants(engine: Engine) -> None:
    spec = engine.spec("/bin/echo", "pooled")

    async def body(executor: Executor) -> tuple[list[bytes], int, int]:
        executor.configure_pool([spec], per_spec=1, total=1)
        outputs = []
        for _ in range(3):  # each run takes the ready one; the next waits for the refill
            await _ready(executor, 1)
            outputs.append((await engine._fresh_or_pooled(executor, spec, None, None)).stdout)
        await _ready(executor, 1)
        executor.configure_pool([], per_spec=1, total=1)  # released: its sandbox goes, unused
        deadline = time.monotonic() + READY_TIMEOUT_S
        while executor.pool_stats().ready or len(executor.running()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        return outputs, executor.pool_stats().hits, executor.pool_stats().built

    outputs, hits, built = asyncio.run(engine._with_executor(body))
    assert outputs == [b"pooled\n"] * 3
    assert hits == 3 and built == 4


def test_a_pooled_handler_runs_at_the_priority_of_a_fresh_one(engine: Engine) -> None:
    """The pool builds at the lowest CPU priority (a build never takes the CPU from a running request); what
    runs the tool does not keep it: the handler and its init are at niceness 0, as in a fresh sandbox."""
    spec = engine.spec("/bin/sh", "-c", "/usr/bin/nice; cut -d' ' -f19 /proc/1/stat")

    async def body(executor: Executor) -> tuple[Run, Run, int]:
        executor.configure_pool([spec], per_spec=1, total=1)
        await _ready(executor, 1)
        pooled = await engine._fresh_or_pooled(executor, spec, None, None)
        executor.configure_pool([], per_spec=1, total=1)
        fresh = await engine._fresh_or_pooled(executor, spec, None, None)
        return pooled, fresh, executor.pool_stats().hits

    pooled, fresh, hits = asyncio.run(engine._with_executor(body))
    assert hits == 1
    assert pooled.result.status is Status.OK, (pooled.result, pooled.stderr)
    assert pooled.stdout == fresh.stdout == b"0\n0\n"  # the handler's niceness, then its init's


DENY_FACCESSAT = {"defaultAction": "SCMP_ACT_ALLOW",
                  "syscalls": [{"names": ["faccessat", "faccessat2"], "action": "SCMP_ACT_ERRNO"}]}


def _at_gate(engine: Engine) -> list[int]:
    """Pids of this engine's handlers-to-be waiting at their gate (named "pooled" there)."""
    return [pid for pid in sandbox_processes(engine.config.sandbox_ids)
            if Path(f"/proc/{pid}/comm").read_text().strip() == "pooled"]


def _seccomp_mode(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Seccomp:"))


def test_a_pooled_sandbox_waits_under_its_filter_only_when_the_filter_allows_what_follows_the_gate(
        engine: Engine, tmp_path: Path) -> None:
    """The filter's install (the kernel builds its per-syscall cache then: ~0.5 ms for a large filter) moves to
    the build, ahead of the request, when the filter always allows the launch's syscalls after the gate; a filter
    that does not (here: faccessat, which finding the handler uses, refused) is installed after it, as for a
    fresh sandbox, so the launch never runs into it. Either way the handler runs under its filter."""
    denying = tmp_path / "deny-faccessat.json"
    denying.write_text(json.dumps(DENY_FACCESSAT))
    script = "grep '^Seccomp:' /proc/self/status"

    async def at_gate_then_run(spec: ExecutionSpec) -> tuple[list[str], Run]:
        async def body(executor: Executor) -> tuple[list[str], Run]:
            executor.configure_pool([spec], per_spec=1, total=1)
            await _ready(executor, 1)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not _at_gate(engine):  # built: its handler-to-be reached the gate
                assert time.monotonic() < deadline, "no handler-to-be reached its gate"
                await asyncio.sleep(0.01)
            modes = [_seccomp_mode(pid) for pid in _at_gate(engine)]
            return modes, await engine._fresh_or_pooled(executor, spec, None, None)

        return await engine._with_executor(body)

    allowing_modes, allowing = asyncio.run(at_gate_then_run(engine.spec("/bin/sh", "-c", script)))
    denying_modes, denied = asyncio.run(at_gate_then_run(engine.spec("/bin/sh", "-c", script, profile=denying)))
    assert allowing_modes == ["2"], "the default profile's filter was not installed before the gate"
    assert denying_modes == ["0"], "a filter refusing the launch's faccessat was installed before the gate"
    for run in (allowing, denied):
        assert run.result.status is Status.OK, (run.result, run.stderr)
        assert run.stdout == b"Seccomp:\t2\n"
