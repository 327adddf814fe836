"""One execution's state while the engine runs it, and what is read from its cgroup and its processes.

:class:`Run` is shared by an execution's stream, its monitor, ``cancel`` and the accounting sweep;
:class:`SessionSandbox` is a sandbox that outlives its calls; :class:`RunningExecution` is what
:meth:`~sandboxd.engine.executor.Executor.running` lists.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sandboxd.base.errors import CgroupError
from sandboxd.engine.cgroups import CgroupCreation, CgroupStats, CgroupUsage, ExecCgroup
from sandboxd.engine.child.program import INIT_NAME
from sandboxd.engine.plan import bind_order
from sandboxd.engine.relay import OwnedFd
from sandboxd.engine.result import SeccompViolation, Status
from sandboxd.engine.seccomp.names import describe_kill
from sandboxd.engine.spec import ExecutionSpec

log = logging.getLogger(__name__)

_EMPTY_STATS = CgroupStats(0, 0, 0, 0)


@dataclass(frozen=True)
class RunningExecution:
    execution_id: str
    tool: str
    labels: Mapping[str, str]
    started_at: float  # unix seconds
    pid: int
    cpu_usec: int
    memory_peak_bytes: int


@dataclass
class SessionSandbox:
    """A sandbox that outlives its calls (a session): built once by an execution that keeps it (see
    :meth:`Executor.execute`'s ``opens_session``); each call joins its namespaces and root through a pidfd of
    its keeper, runs as its uid, in a cgroup below the session's — whose limits cover them all."""

    session_id: str  # the execution id of its keeper
    uid: int
    cgroup: ExecCgroup
    pid: int  # host pid of the keeper (pid 2 of the session's pid namespace)
    pidfd: int  # the keeper's execution's own (closed by its release, once the session is unlisted)


class Run:
    """Mutable state of one execution, shared by its stream, its monitor and ``cancel``."""

    def __init__(self, execution_id: str, spec: ExecutionSpec, cgroup: ExecCgroup, cancel: asyncio.Event,
                 uid: int, *, procs_files: tuple[str, ...] | None = None,
                 session: SessionSandbox | None = None, creation: CgroupCreation | None = None) -> None:
        self.execution_id = execution_id
        self.uid = uid
        self.procs_files = cgroup.procs_files if procs_files is None else procs_files  # where the sandbox joins
        # How its waiter makes its cgroup (None: the daemon made it); cgroup_not_made once its waiter failed to,
        # having removed what it made: nothing of that name is the execution's to remove.
        self.creation = creation
        self.cgroup_not_made = False
        self.session = session  # the session it is a call in
        self.cancel = cancel  # set by whoever cancels (Executor.cancel, or the caller's own token)
        self.spec = spec
        self.cgroup = cgroup
        self.started_at = time.time()
        self.pid = 0
        self.pidfd: OwnedFd | None = None  # the handler's, from its Started to the release: signals reach it alone
        self.kill_reason: Status | None = None
        self.kill_message: str | None = None  # why, when the status alone does not say
        self.kills: list[asyncio.Future[None]] = []  # kills under way in worker threads: the release waits
        self.stdout_bytes = 0
        self.stderr_bytes = 0
        self.output_truncated = False

    def kill_aside(self, reason: Status) -> asyncio.Future[None]:
        """Kill in a worker thread (a v1 kill polls the freezer); the release waits for it before removing the
        cgroup, even when whoever asked was cancelled meanwhile."""
        future = asyncio.ensure_future(asyncio.to_thread(self.kill, reason))
        self.kills.append(future)
        return future

    def kill(self, reason: Status) -> None:
        """Kill the whole cgroup; the first reason is the one reported."""
        if self.kill_reason is None:
            self.kill_reason = reason
        try:
            self.cgroup.kill()
        except CgroupError as e:  # remove() kills again and retries; say so loudly
            log.error("execution %s: kill failed: %s", self.execution_id, e)

    @property
    def alone_in_cgroup(self) -> bool:
        """Its sandbox is all its cgroup holds (not a session's, nor a call in one): its waiter reads the
        accounting and removes the cgroup once the sandbox has ended."""
        return self.session is None and self.procs_files == self.cgroup.procs_files

    def stats(self, final_reads: Sequence[bytes | None] = ()) -> CgroupStats:
        """The cgroup's accounting: from what its waiter read at the end when it did, else read now."""
        if self.cgroup_not_made:
            return _EMPTY_STATS
        try:
            return self.cgroup.stats_from(final_reads) if final_reads else self.cgroup.stats()
        except CgroupError as e:
            if self.cgroup.exists():  # else its waiter removed it: nothing of it is left to account for
                log.warning("execution %s: cannot read accounting: %s", self.execution_id, e)
            return _EMPTY_STATS


def open_pidfd(pid: int, execution_id: str) -> OwnedFd | None:
    """A pidfd of the handler, opened as soon as it is reported started (:meth:`Executor.signal` checks that
    it still names a process of the execution before each signal)."""
    try:
        return OwnedFd(os.pidfd_open(pid))
    except ProcessLookupError:  # it has already ended (a quick one): nothing left to signal
        return None
    except OSError as e:  # no descriptor left (EMFILE): it runs, but cannot be signalled
        log.warning("execution %s: no pidfd for handler pid %d: %s", execution_id, pid, e.strerror or e)
        return None


def read_usage(runs: list[Run]) -> list[CgroupUsage | CgroupError]:
    results: list[CgroupUsage | CgroupError] = []
    for run in runs:
        try:
            results.append(run.cgroup.usage())
        except CgroupError as e:
            results.append(e)
    return results


def cgroup_pids_max(pids_max: int | None) -> int | None:
    """The leaf's ``pids.max``: the handler's processes plus the sandbox's init, which is ours, not the tool's."""
    return None if pids_max is None else pids_max + 1


def violation(pid: int, arch: int, nr: int) -> SeccompViolation:
    abi, name = describe_kill(arch, nr)
    return SeccompViolation(pid, abi, nr, name)


def hung_stage(pids: Sequence[int], spec: ExecutionSpec) -> str:
    """The setup stage a hung sandbox is in, from the ``comm`` its processes named it by (the handler-to-be's
    when it exists: it is the later one); a bind is named with its source and target."""
    stages = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
                stages.append(f.read().strip())
        except OSError:
            continue
    stages = [stage for stage in stages if stage != INIT_NAME]
    if not stages:
        return "spawn"
    stage = stages[-1]
    match = re.match(r"bind (\d+)", stage)
    binds = bind_order(spec.binds)
    if match and int(match.group(1)) < len(binds):
        bind = binds[int(match.group(1))]
        return f"bind {match.group(1)}: {bind.source} -> {bind.target}"
    return stage
