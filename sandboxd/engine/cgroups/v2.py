"""cgroup v2 backend: the daemon's own (delegated) cgroup is the base.

Layout (the no-internal-processes rule forbids processes in a cgroup that hands controllers to children)::

    <own>/                  cgroup.subtree_control = +memory +cpu +pids   (after we left it)
        supervisor/         the daemon itself, all its threads
        exec-<id>/          one leaf per execution: memory.max, memory.swap.max, memory.oom.group,
                            cpu.max, pids.max
        exec-<sid>/         a session: its limits cover everything below; hands the controllers on
            exec-keeper/    the session's own sandbox (its init and the process that keeps it)
            exec-<id>/      one leaf per call in the session, with the call's limits

See https://docs.kernel.org/admin-guide/cgroup-v2.html ("Delegation", "No Internal Process Constraint").
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from sandboxd.base.errors import CgroupError
from sandboxd.engine.cgroups import fsutil, procs
from sandboxd.engine.cgroups.base import CgroupCreation, CgroupLimits, CgroupStats, CgroupUsage

REQUIRED_CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_USEC = 100_000
SUPERVISOR = "supervisor"
REMEDY = (
    "run sandboxd under systemd with Delegate=yes, or start it in a cgroup of its own with memory, cpu "
    "and pids available (in a container: a private cgroup namespace with /sys/fs/cgroup writable)"
)


class V2ExecCgroup:
    oom_group_emulated = False  # memory.oom.group=1: the kernel kills the whole leaf on OOM

    def __init__(self, path: Path, dir_ops: fsutil.DirOps) -> None:
        self._path = path
        self._dir_ops = dir_ops

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def path(self) -> Path:
        return self._path

    @property
    def procs_files(self) -> tuple[str, ...]:
        return (str(self._path / "cgroup.procs"),)

    def _read(self, filename: str) -> str:
        return fsutil.read_text(self._path / filename)

    def _write(self, filename: str, value: str) -> None:
        fsutil.write_text(self._path / filename, value)

    def _has(self, filename: str) -> bool:
        return os.path.lexists(self._path / filename)

    @functools.cached_property
    def final_reads(self) -> tuple[str, ...]:
        # memory.peak exists from kernel 5.19; before that the current usage is the best we have. pids.events
        # is not in the stats: read with them, how often pids.max refused a fork is on record until the end.
        return tuple(str(self._path / name) for name in ("memory.peak", "memory.current", "memory.events",
                                                          "cpu.stat", "pids.events"))

    def stats(self) -> CgroupStats:
        return self.stats_from([fsutil.read_bytes_or_none(path) for path in self.final_reads])

    def stats_from(self, contents: Sequence[bytes | None]) -> CgroupStats:
        reads = self.final_reads
        peak = contents[0] if len(contents) == len(reads) and contents[0] is not None else (
            fsutil.content_of(reads, contents, 1))
        cpu = fsutil.parse_keyed(fsutil.content_of(reads, contents, 3).decode())
        return CgroupStats(
            memory_peak_bytes=int(peak),
            oom_kill_count=fsutil.oom_kills(fsutil.content_of(reads, contents, 2)),
            cpu_user_usec=cpu.get("user_usec", 0),
            cpu_system_usec=cpu.get("system_usec", 0),
        )

    @property
    def removal_dirs(self) -> tuple[str, ...]:
        return (str(self._path),)

    def exists(self) -> bool:
        return self._path.is_dir()

    def usage(self) -> CgroupUsage:
        cpu = fsutil.parse_keyed(self._read("cpu.stat"))
        return CgroupUsage(cpu.get("usage_usec", 0), fsutil.oom_kills(self._read("memory.events")))

    def pids(self) -> list[int]:
        """Its processes and those of the cgroups below it (a session's calls)."""
        if not self._path.is_dir():
            return []
        return fsutil.pids_below(str(self._path))

    def child(self, name: str) -> V2ExecCgroup:
        return V2ExecCgroup(self._path / name, self._dir_ops)

    def kill(self) -> None:
        if not self._path.is_dir():
            return
        if self._has("cgroup.kill"):  # kernel >= 5.14: one write kills the tree, racing forks included
            try:
                self._write("cgroup.kill", "1")
            except CgroupError:
                if self._path.is_dir():
                    raise
                # removed meanwhile by its waiter, once everything in it had ended: nothing left to kill
            return
        procs.freeze_kill_thaw(
            lambda: self._write("cgroup.freeze", "1"),
            lambda: fsutil.parse_keyed(self._read("cgroup.events")).get("frozen") == 1,
            lambda: self._write("cgroup.freeze", "0"),
            self.pids,
            self.name,
            proc=self._dir_ops.proc,
        )

    def remove_if_empty(self) -> bool:
        return fsutil.remove_dir_if_empty(self._dir_ops, str(self._path))

    def remove(self) -> None:
        self.kill()
        for nested in fsutil.nested_leaves(str(self._path)):
            fsutil.remove_dir(self._dir_ops, nested)
        fsutil.remove_dir(self._dir_ops, str(self._path))


class V2Backend:
    name = "v2"

    def __init__(
        self,
        own_dir: Path,
        *,
        is_root_cgroup: bool = False,  # the host's root cgroup (not a cgroup namespace's root)
        self_pid: int | None = None,
        dir_ops: fsutil.DirOps | None = None,
        swaps_path: Path = Path("/proc/swaps"),
    ) -> None:
        """``own_dir``: absolute directory of the cgroup this process is in (from ``0::/path``)."""
        self._own = own_dir
        self._swaps_path = swaps_path
        self._is_root = is_root_cgroup
        self._pid = os.getpid() if self_pid is None else self_pid
        self._dir_ops = dir_ops or fsutil.DirOps()

    @property
    def base(self) -> str:
        return str(self._own)

    def prepare(self) -> None:
        own = self._own
        if self._is_root:
            raise CgroupError(f"sandboxd runs in the root cgroup ({own}) of the host, which it must not manage; "
                              f"{REMEDY}")
        available = fsutil.read_text(own / "cgroup.controllers").split()
        missing = [c for c in REQUIRED_CONTROLLERS if c not in available]
        if missing:
            raise CgroupError(
                f"cgroup {own} does not offer the {', '.join(missing)} controller(s) "
                f"(cgroup.controllers: {' '.join(available) or 'none'}); {REMEDY}"
            )
        others = sorted(set(fsutil.parse_pids(fsutil.read_text(own / "cgroup.procs"))) - {self._pid})
        if others:
            raise CgroupError(
                f"cgroup {own} also holds processes that are not sandboxd ({', '.join(map(str, others))}), "
                f"which sandboxd must not move; {REMEDY}"
            )
        supervisor = own / SUPERVISOR
        fsutil.make_dir(self._dir_ops, str(supervisor), exist_ok=True)
        fsutil.write_text(supervisor / "cgroup.procs", str(self._pid))  # moves all our threads too
        fsutil.write_text(own / "cgroup.subtree_control", " ".join(f"+{c}" for c in REQUIRED_CONTROLLERS))

    def create(self, execution_id: str, limits: CgroupLimits, *, parent: object = None,
               holds_children: bool = False) -> V2ExecCgroup:
        """A leaf below the base, or below ``parent`` (a session's cgroup). ``holds_children``: a session's —
        no OOM group of its own (an OOM kills the call that caused it, not the session) and the controllers
        handed on to the cgroups below it (which must exist before any process joins: no internal processes)."""
        if parent is not None and not isinstance(parent, V2ExecCgroup):
            raise CgroupError(f"a v2 cgroup cannot be made below {parent!r}")
        where = self._own if parent is None else parent.path
        cg = V2ExecCgroup(where / fsutil.leaf_name(execution_id), self._dir_ops)
        fsutil.make_dir(self._dir_ops, str(cg.path), exist_ok=False)
        try:
            for path, value in self._limit_writes(cg.path, limits, swap_max=cg._has("memory.swap.max")):
                fsutil.write_text(path, value)
            if holds_children:
                cg._write("memory.oom.group", "0")
                cg._write("cgroup.subtree_control", " ".join(f"+{c}" for c in REQUIRED_CONTROLLERS))
        except BaseException:
            fsutil.remove_quietly(self._dir_ops, [str(cg.path)])
            raise
        return cg

    def plan_leaf(self, execution_id: str, limits: CgroupLimits) -> tuple[V2ExecCgroup, CgroupCreation]:
        cg = V2ExecCgroup(self._own / fsutil.leaf_name(execution_id), self._dir_ops)
        # A leaf has memory.swap.max when its sibling, our own leaf, has it (the same controllers enabled).
        writes = self._limit_writes(cg.path, limits,
                                    swap_max=os.path.lexists(self._own / SUPERVISOR / "memory.swap.max"))
        return cg, CgroupCreation((str(cg.path),), tuple(writes))

    def _limit_writes(self, leaf: Path, limits: CgroupLimits, *, swap_max: bool) -> list[tuple[str, str]]:
        """The limit files of ``leaf`` to write, in order, with their values; ``swap_max``: it has
        memory.swap.max."""
        writes: list[tuple[str, str]] = []
        if limits.memory_max_bytes is not None:
            if limits.memory_max_bytes <= 0:
                raise CgroupError(f"memory limit must be > 0 bytes, not {limits.memory_max_bytes}")
            if not swap_max and fsutil.swap_active(self._swaps_path):
                # without swap accounting (CONFIG_MEMCG_SWAP, swapaccount=0) memory.max does not cover swap
                raise CgroupError(
                    f"swap is on but {leaf / 'memory.swap.max'} is missing, so a memory limit could be "
                    f"escaped through swap; {fsutil.SWAP_ESCAPE_REMEDY}"
                )
            writes.append((str(leaf / "memory.max"), str(limits.memory_max_bytes)))
        if swap_max:
            writes.append((str(leaf / "memory.swap.max"), "0"))
        writes.append((str(leaf / "memory.oom.group"), "1"))
        if limits.cpu_share_percent is not None:
            if limits.cpu_share_percent <= 0:
                raise CgroupError(f"cpu share must be > 0 %, not {limits.cpu_share_percent}")
            quota_usec = CPU_PERIOD_USEC * limits.cpu_share_percent // 100
            writes.append((str(leaf / "cpu.max"), f"{quota_usec} {CPU_PERIOD_USEC}"))
        if limits.pids_max is not None:
            if limits.pids_max <= 0:
                raise CgroupError(f"pids limit must be > 0, not {limits.pids_max}")
            writes.append((str(leaf / "pids.max"), str(limits.pids_max)))
        return writes

    def stale_leaves(self) -> list[str]:
        return fsutil.list_leaves(str(self._own))

    def remove_leaf(self, name: str) -> None:
        fsutil.check_leaf_name(name)
        V2ExecCgroup(self._own / name, self._dir_ops).remove()

    def remove_base(self) -> bool:
        """Nothing to remove on v2: the base is our own cgroup and we stay in ``supervisor``. Returns True
        when no leaf is left."""
        return not self.stale_leaves()
