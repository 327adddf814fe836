"""The one cgroup interface the executor sees; v1 and v2 implement it, chosen once by detection.

Every path is derived from an injected root (``/sys/fs/cgroup`` in production, a temp dir in unit tests).
A backend only ever creates, writes and removes cgroups *below the daemon's own cgroup*, inside a
directory it owns (``base``); it never writes to a cgroup it did not create.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CgroupLimits:
    memory_max_bytes: int | None
    cpu_share_percent: int | None  # 100 = one full CPU; 25 = a quarter of one
    pids_max: int | None


@dataclass(frozen=True)
class CgroupCreation:
    """How an execution's leaf is made where it is made by the sandbox's waiter (``native/cgroup.c``), not by
    the daemon: these directories, in order (none may exist yet), then these limit files written, in order,
    each value in one write; any failure removes what was made and nothing runs."""

    dirs: tuple[str, ...]
    writes: tuple[tuple[str, str], ...]  # (absolute path of a control file in one of ``dirs``, value)


@dataclass(frozen=True)
class CgroupStats:
    memory_peak_bytes: int
    oom_kill_count: int
    cpu_user_usec: int
    cpu_system_usec: int

    @property
    def cpu_usec(self) -> int:
        return self.cpu_user_usec + self.cpu_system_usec


@dataclass(frozen=True)
class CgroupUsage:
    cpu_usec: int  # user + system
    oom_kill_count: int


class ExecCgroup(Protocol):
    """The cgroup(s) of one execution: one leaf on v2, one leaf per controller hierarchy on v1."""

    @property
    def name(self) -> str:
        """The leaf's name, e.g. ``exec-1a2b``."""

    @property
    def procs_files(self) -> tuple[str, ...]:
        """Absolute ``cgroup.procs`` paths the child writes its own pid into, in order, to join."""

    @property
    def oom_group_emulated(self) -> bool:
        """True when the kernel kills only one process on OOM (v1), so the caller must kill the group."""

    def stats(self) -> CgroupStats:
        """Its accounting, read now: :meth:`stats_from` the contents of :attr:`final_reads`."""

    @property
    def final_reads(self) -> tuple[str, ...]:
        """The absolute paths of the files its accounting is read from. The sandbox's waiter reads them once
        everything in the cgroup has ended, then removes :attr:`removal_dirs` (``native/watch.c``)."""

    def stats_from(self, contents: Sequence[bytes | None]) -> CgroupStats:
        """The accounting those files' contents (in order; None: not read) give; CgroupError naming the file
        when one it needs is missing."""

    @property
    def removal_dirs(self) -> tuple[str, ...]:
        """Its directories, in the order an empty one is removed (one per hierarchy on v1)."""

    def exists(self) -> bool:
        """Whether all of it is still there: its waiter removes it once its sandbox has ended, a directory at a
        time on v1 — one missing means it is going, and nothing in it runs any more."""

    def usage(self) -> CgroupUsage:
        """What a running execution's limits are checked against, often: fewer files than :meth:`stats`."""

    def pids(self) -> list[int]:
        """Pids in the leaf and the cgroups below it (host pid namespace)."""

    def kill(self) -> None:
        """SIGKILL every process in the leaf and below it, race-free against forks (cgroup.kill /
        freeze+kill+thaw)."""

    def remove(self) -> None:
        """Kill what is left, then rmdir (the cgroups below it first) with EBUSY retry and backoff.
        Idempotent."""

    def remove_if_empty(self) -> bool:
        """One rmdir of each of its directories, nothing read, nothing waited for: True when it is gone, False
        when something is left in it (processes, cgroups below) for :meth:`remove`. Quick enough for the event
        loop: an execution's cgroup is usually empty once its init has ended."""

    def child(self, name: str) -> ExecCgroup:
        """The cgroup ``name`` below this one (a session's keeper or call), as an object; nothing is made."""


class Backend(Protocol):
    """Creates and removes execution cgroups below the daemon's own cgroup."""

    @property
    def name(self) -> str:
        """``"v2"`` or ``"v1"``."""

    @property
    def base(self) -> str:
        """Human-readable location of the directory holding this daemon's leaves."""

    def prepare(self) -> None:
        """Once at start: make the base usable (v2: move self to <own>/supervisor, enable controllers).

        Raises :class:`~sandboxd.base.errors.CgroupError` with the remedy when the cgroup is not delegated.
        """

    def create(self, execution_id: str, limits: CgroupLimits, *, parent: object = None,
               holds_children: bool = False) -> ExecCgroup:
        """Create the leaf ``exec-<execution_id>`` (below ``parent``, a session's cgroup, when given) and write
        its limits; ``holds_children``: a session's, with cgroups below it. Fails closed: on any write error
        the leaf is removed and :class:`~sandboxd.base.errors.CgroupError` names the file and value."""

    def plan_leaf(self, execution_id: str, limits: CgroupLimits) -> tuple[ExecCgroup, CgroupCreation]:
        """The leaf ``exec-<execution_id>`` below the base as an object, and how to make it with its limits —
        nothing is made here (the sandbox's waiter makes it: :class:`CgroupCreation`). The limits are checked
        as :meth:`create` checks them: :class:`~sandboxd.base.errors.CgroupError` for one that cannot hold."""

    def stale_leaves(self) -> list[str]:
        """Names of ``exec-*`` leaves left below the base by an earlier instance."""

    def remove_leaf(self, name: str) -> None:
        """Kill and remove a (stale) leaf by name."""

    def remove_base(self) -> bool:
        """At shutdown: remove the base directories this backend made, only when they hold no leaf.
        Idempotent; True when nothing of ours is left (v2: the base is our own cgroup and stays)."""
