"""cgroup v1 backend (legacy and hybrid hosts), built on cgroupspy's Node and controller classes.

Layout, in each of the memory, cpu, cpuacct, pids and freezer hierarchies (one directory when co-mounted,
e.g. ``cpu,cpuacct``)::

    <own cgroup in that hierarchy>/sandboxd-<instance>/     made by prepare(); the daemon writes nothing above
        exec-<id>/                                          one leaf per execution, limits written here
        exec-<sid>/                                         a session (limits over everything below)
            exec-keeper/                                    its own sandbox: init and keeper
            exec-<id>/                                      one per call in the session

How cgroupspy is used, and where it is not:

* Paths come from a chain of :class:`_Node` (a cgroupspy ``Node``): the chain starts at our own cgroup's
  absolute directory (derived from the injected root), so there is no ``cgroupspy.trees.Tree`` — that walks
  the whole hierarchy on construction, which we must not do per execution.
* Control files are read and written through cgroupspy controllers and their typed file descriptors
  (``mem.limit_in_bytes = n``), but every controller here mixes in :class:`_SafeIO`, which replaces
  cgroupspy's ``open()`` (follows symlinks, ``"w"`` creates missing files) with ``fsutil``'s O_NOFOLLOW,
  no-create I/O whose errors name the file and the value. The accounting at an execution's end is the
  exception: it is read from a list of files (``final_reads``), the same files the sandbox's waiter reads
  before it removes the cgroup, and parsed by ``stats_from``.
* cgroupspy has no pids or freezer controller; :class:`_Pids` and :class:`_Freezer` add them.
* Directories are made and removed with ``fsutil`` rather than ``Node.create_cgroup``/``delete_cgroup``:
  those build plain ``Node``s (KeyError for pids/freezer, which are not in ``Node.CONTROLLERS``),
  ``create_cgroup`` swallows EEXIST (a leaf that exists already must fail closed), and neither retries EBUSY.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from cgroupspy.controllers import Controller, CpuAcctController, CpuController, MemoryController
from cgroupspy.interfaces import BaseFileInterface
from cgroupspy.nodes import Node

from sandboxd.base.errors import CgroupError
from sandboxd.engine.cgroups import fsutil, procs
from sandboxd.engine.cgroups.base import CgroupCreation, CgroupLimits, CgroupStats, CgroupUsage

CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")  # also the order the child joins them in
CFS_PERIOD_USEC = 100_000
_MEMSW = "memory.memsw.limit_in_bytes"
_NSEC_PER_USEC = 1000


class _SafeIO:
    """Replaces cgroupspy's Controller.get_property/set_property with fsutil's safe I/O."""

    node: _Node  # set by cgroupspy's Controller.__init__

    def _path(self, filename: str | bytes) -> bytes:
        return os.path.join(self.node.full_path, os.fsencode(filename))

    def get_property(self, filename: str | bytes) -> str:
        return fsutil.read_text(self._path(filename)).strip()

    def set_property(self, filename: str | bytes, value: object) -> None:
        fsutil.write_text(self._path(filename), str(value))

    def exists(self, filename: str) -> bool:
        return os.path.lexists(self._path(filename))


class _MaxFile(BaseFileInterface):  # type: ignore[misc]
    """An integer or the word ``max`` (None)."""

    def sanitize_get(self, value: str) -> int | None:
        return None if value.strip() == "max" else int(value)

    def sanitize_set(self, value: int | None) -> str:
        return "max" if value is None else str(int(value))


class _Memory(_SafeIO, MemoryController):  # type: ignore[misc]
    pass


class _Cpu(_SafeIO, CpuController):  # type: ignore[misc]
    pass


class _CpuAcct(_SafeIO, CpuAcctController):  # type: ignore[misc]
    pass


class _Pids(_SafeIO, Controller):  # type: ignore[misc]
    max = _MaxFile("pids.max")


class _Freezer(_SafeIO, Controller):  # type: ignore[misc]
    state = BaseFileInterface("freezer.state")


class _Node(Node):  # type: ignore[misc]
    """A cgroupspy Node whose controller type is given, not guessed from the mount directory's name
    (``cpu,cpuacct`` is one directory holding two controllers)."""

    CONTROLLERS: ClassVar[dict[bytes, type]] = {
        b"memory": _Memory,
        b"cpu": _Cpu,
        b"cpuacct": _CpuAcct,
        b"pids": _Pids,
        b"freezer": _Freezer,
    }

    def __init__(self, name: str | bytes, parent: _Node | None = None, controller_type: str = "") -> None:
        self._given_type = controller_type.encode() if controller_type else None
        super().__init__(name, parent)

    def _get_controller_type(self) -> bytes | None:
        if self._given_type is not None:
            return self._given_type
        return self.parent.controller_type if self.parent else None

    @functools.cached_property
    def full_path(self) -> bytes:  # cgroupspy's walks up the parents on every file's access: spelled once
        path: bytes = os.path.join(self.parent.full_path, self.name) if self.parent else self.name
        return path

    @functools.cached_property
    def dir(self) -> str:
        return os.fsdecode(self.full_path)


def _ctl(node: _Node) -> Any:
    return node.controller


class V1ExecCgroup:
    """One execution's leaf in every hierarchy; the child joins each (``procs_files``)."""

    oom_group_emulated = True  # v1 OOM-kills one task; the executor kills the group when oom_kill_count rises

    def __init__(self, name: str, parents: Mapping[str, _Node], dir_ops: fsutil.DirOps) -> None:
        """``parents``: the node in each hierarchy that the leaf ``name`` is (to be) made below."""
        self._name = name
        self._parents = parents
        self._dir_ops = dir_ops

    @functools.cached_property
    def _leaves(self) -> dict[str, _Node]:  # cgroupspy's nodes, for its controllers: made when first asked
        return {c: _Node(self._name, parent=self._parents[c]) for c in CONTROLLERS}

    @functools.cached_property
    def _dir_of(self) -> dict[str, str]:  # each hierarchy's leaf directory, spelled from its parent's, once
        return {c: os.path.join(self._parents[c].dir, self._name) for c in CONTROLLERS}

    @property
    def name(self) -> str:
        return self._name

    @functools.cached_property
    def _dirs(self) -> tuple[str, ...]:  # spelled once: a Node's path is a walk up its parents
        return tuple(dict.fromkeys(self._dir_of.values()))  # co-mounted: one dir

    @functools.cached_property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(os.path.join(d, "cgroup.procs") for d in self._dirs)

    @functools.cached_property
    def final_reads(self) -> tuple[str, ...]:
        memory, acct = self._dir_of["memory"], self._dir_of["cpuacct"]
        return (os.path.join(memory, "memory.max_usage_in_bytes"), os.path.join(memory, "memory.oom_control"),
                os.path.join(acct, "cpuacct.usage_user"), os.path.join(acct, "cpuacct.usage_sys"),
                os.path.join(acct, "cpuacct.stat"))

    def stats(self) -> CgroupStats:
        return self.stats_from([fsutil.read_bytes_or_none(path) for path in self.final_reads])

    def stats_from(self, contents: Sequence[bytes | None]) -> CgroupStats:
        reads = self.final_reads
        user, system = contents[2:4] if len(contents) == len(reads) else (None, None)
        if user is not None and system is not None:
            user_usec = int(user) // _NSEC_PER_USEC
            system_usec = int(system) // _NSEC_PER_USEC
        else:  # kernels before 4.16: clock ticks
            ticks = fsutil.parse_keyed(fsutil.content_of(reads, contents, 4).decode())
            usec_per_tick = 1_000_000 // os.sysconf("SC_CLK_TCK")
            user_usec = ticks.get("user", 0) * usec_per_tick
            system_usec = ticks.get("system", 0) * usec_per_tick
        return CgroupStats(
            memory_peak_bytes=int(fsutil.content_of(reads, contents, 0)),
            oom_kill_count=fsutil.oom_kills(fsutil.content_of(reads, contents, 1)),
            cpu_user_usec=user_usec,
            cpu_system_usec=system_usec,
        )

    @property
    def removal_dirs(self) -> tuple[str, ...]:
        return self._dirs

    def exists(self) -> bool:
        return all(os.path.isdir(d) for d in self._dirs)  # one missing: its waiter is removing it

    def usage(self) -> CgroupUsage:
        mem, acct = _ctl(self._leaves["memory"]), _ctl(self._leaves["cpuacct"])
        usage_nsec = int(acct.get_property("cpuacct.usage"))
        return CgroupUsage(usage_nsec // _NSEC_PER_USEC, fsutil.oom_kills(mem.get_property("memory.oom_control")))

    def pids(self) -> list[int]:
        """Its processes and those of the cgroups below it (a session's calls), in every hierarchy."""
        found: set[int] = set()
        for d in self._dirs:
            if os.path.isdir(d):
                found.update(fsutil.pids_below(d))
        return sorted(found)

    def child(self, name: str) -> V1ExecCgroup:
        return V1ExecCgroup(name, self._leaves, self._dir_ops)

    def kill(self) -> None:
        freezer = _ctl(self._leaves["freezer"])
        if not os.path.isdir(self._dir_of["freezer"]):
            # not normally reached: the freezer leaf is made with the rest
            procs.sigkill_each(self.pids(), self.name, proc=self._dir_ops.proc)
            return

        def freeze() -> None:
            freezer.state = "FROZEN"

        def thaw() -> None:
            freezer.state = "THAWED"

        try:
            procs.freeze_kill_thaw(freeze, lambda: freezer.state == "FROZEN", thaw, self.pids, self.name,
                                   proc=self._dir_ops.proc)
        except CgroupError:
            if os.path.isdir(self._dir_of["freezer"]):
                raise
            # removed meanwhile (an empty leaf's release, racing a kill at shutdown): nothing left to kill

    def remove_if_empty(self) -> bool:
        # An execution's cgroup is usually empty by now — its init's end took every process of its pid namespace
        # along, and an empty cgroup stays empty (only we move tasks in): one rmdir per hierarchy, nothing read.
        return all(fsutil.remove_dir_if_empty(self._dir_ops, d) for d in self._dirs)

    def remove(self) -> None:
        # Tasks left, or a session's calls below: the freeze-kill-thaw first, then the leaves deepest first.
        if self.remove_if_empty():
            return
        if self.pids():
            self.kill()  # the freezer freezes the cgroups below too
        for d in self._dirs:
            for nested in fsutil.nested_leaves(d):
                fsutil.remove_dir(self._dir_ops, nested)
            fsutil.remove_dir(self._dir_ops, d)


class V1Backend:
    """Leaves ``exec-<id>`` below ``<own cgroup>/sandboxd-<instance>`` in each v1 hierarchy."""

    name = "v1"

    def __init__(
        self,
        own_dirs: Mapping[str, Path],
        instance: str = "default",
        *,
        swaps_path: Path = Path("/proc/swaps"),
        dir_ops: fsutil.DirOps | None = None,
    ) -> None:
        """``own_dirs``: controller name → absolute directory of our own cgroup in its hierarchy."""
        missing = [c for c in CONTROLLERS if c not in own_dirs]
        if missing:
            raise CgroupError(f"cgroup v1 backend needs hierarchies for {', '.join(missing)}")
        fsutil.check_instance_name(instance)
        self._instance = instance
        self._swaps_path = swaps_path
        self._dir_ops = dir_ops or fsutil.DirOps()
        self._bases = {
            c: _Node(f"sandboxd-{instance}", parent=_Node(os.fsencode(own_dirs[c]), controller_type=c))
            for c in CONTROLLERS
        }

    @property
    def base(self) -> str:
        return ", ".join(self._base_dirs())

    def _base_dirs(self) -> list[str]:
        return list(dict.fromkeys(self._bases[c].dir for c in CONTROLLERS))

    def prepare(self) -> None:
        for d in self._base_dirs():
            fsutil.make_dir(self._dir_ops, d, exist_ok=True)

    def _exec_cgroup(self, name: str) -> V1ExecCgroup:
        return V1ExecCgroup(name, self._bases, self._dir_ops)

    def create(self, execution_id: str, limits: CgroupLimits, *, parent: object = None,
               holds_children: bool = False) -> V1ExecCgroup:
        """A leaf below the base, or below ``parent`` (a session's cgroup; v1 limits are hierarchical, so
        ``holds_children`` asks nothing more here)."""
        if parent is not None and not isinstance(parent, V1ExecCgroup):
            raise CgroupError(f"a v1 cgroup cannot be made below {parent!r}")
        name = fsutil.leaf_name(execution_id)
        cg = self._exec_cgroup(name) if parent is None else parent.child(name)
        made: list[str] = []
        try:
            for d in cg._dirs:
                fsutil.make_dir(self._dir_ops, d, exist_ok=False)
                made.append(d)
            for path, value in self._limit_writes(cg, limits, made=True):
                fsutil.write_text(path, value)
        except CgroupError:
            fsutil.remove_quietly(self._dir_ops, made)
            raise
        except BaseException as e:  # cgroupspy's parsers raise ValueError on odd content
            fsutil.remove_quietly(self._dir_ops, made)
            if isinstance(e, Exception):
                raise CgroupError(f"cannot set up cgroup {cg.name}: {e!r}") from e
            raise
        return cg

    def plan_leaf(self, execution_id: str, limits: CgroupLimits) -> tuple[V1ExecCgroup, CgroupCreation]:
        cg = self._exec_cgroup(fsutil.leaf_name(execution_id))
        return cg, CgroupCreation(cg._dirs, tuple(self._limit_writes(cg, limits, made=False)))

    def _limit_writes(self, cg: V1ExecCgroup, limits: CgroupLimits, *, made: bool) -> list[tuple[str, str]]:
        """The limit files to write, in order, with their values; ``made``: the leaf exists (read what the
        order of the memory writes depends on from it), else it is yet to be made (a new leaf is unlimited)."""
        writes: list[tuple[str, str]] = []
        dir_of = cg._dir_of
        if limits.memory_max_bytes is not None:
            writes += self._memory_writes(cg, limits.memory_max_bytes, made=made)
        if limits.cpu_share_percent is not None:
            if limits.cpu_share_percent <= 0:
                raise CgroupError(f"cpu share must be > 0 %, not {limits.cpu_share_percent}")
            cpu = dir_of["cpu"]
            writes += [(os.path.join(cpu, "cpu.cfs_period_us"), str(CFS_PERIOD_USEC)),
                       (os.path.join(cpu, "cpu.cfs_quota_us"), str(CFS_PERIOD_USEC * limits.cpu_share_percent // 100))]
        if limits.pids_max is not None:
            if limits.pids_max <= 0:
                raise CgroupError(f"pids limit must be > 0, not {limits.pids_max}")
            writes.append((os.path.join(dir_of["pids"], "pids.max"), str(limits.pids_max)))
        return writes

    def _memory_writes(self, cg: V1ExecCgroup, limit_bytes: int, *, made: bool) -> list[tuple[str, str]]:
        if limit_bytes <= 0:
            raise CgroupError(f"memory limit must be > 0 bytes, not {limit_bytes}")
        memory = cg._dir_of["memory"]
        limit = (os.path.join(memory, "memory.limit_in_bytes"), str(limit_bytes))
        memsw = (os.path.join(memory, _MEMSW), str(limit_bytes))
        # A leaf has the file when its parent has it (swap accounting is the memory controller's, machine-wide).
        if not os.path.lexists(memsw[0] if made else os.path.join(cg._parents["memory"].dir, _MEMSW)):
            if fsutil.swap_active(self._swaps_path):
                raise CgroupError(
                    "swap is on but memory.memsw.limit_in_bytes is missing, so a memory limit could be "
                    f"escaped through swap; {fsutil.SWAP_ESCAPE_REMEDY}"
                )
            return [limit]
        # The kernel keeps memsw >= limit at every step: lower the limit first, raise memsw first.
        current = _ctl(cg._leaves["memory"]).limit_in_bytes if made else None  # a leaf not made yet: unlimited
        return [memsw, limit] if current is not None and limit_bytes > current else [limit, memsw]

    def stale_leaves(self) -> list[str]:
        names: set[str] = set()
        for d in self._base_dirs():
            names.update(fsutil.list_leaves(d))
        return sorted(names)

    def remove_leaf(self, name: str) -> None:
        fsutil.check_leaf_name(name)
        self._exec_cgroup(name).remove()

    def remove_base(self) -> bool:
        """Remove ``sandboxd-<instance>`` in each hierarchy when empty; True when none is left. Idempotent."""
        return all([fsutil.remove_dir_if_empty(self._dir_ops, d) for d in self._base_dirs()])
