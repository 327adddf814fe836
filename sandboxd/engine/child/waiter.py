"""The spawner's direct child for one execution: makes the namespaces, puts the sandbox in its cgroup, and
watches it until its init has ended.

::

    spawner ──fork──▶ waiter (host pid ns, outside the execution's cgroup; traces the sandbox)
                        │ close what the spawner held ; unshare(pid, mount, net, ipc, uts) ; mounts rprivate
                        │ ; moves pid 1 into the cgroup ; becomes ``sandbox-watch`` (:mod:`helpers`)
                        └─fork──▶ pid 1: builds the sandbox (:mod:`sequence`), then runs its init
                                    │         (``sandbox-init``, :mod:`helpers`)
                                    └─fork──▶ pid 2: the handler (through ``sandbox-exec``)

The waiter stays outside the cgroup on purpose: killing the cgroup (timeouts, ``memory.oom.group``) must not
take the one process that reports the outcome with it. On v2 it forks pid 1 straight into the leaf (``clone3``
with ``CLONE_INTO_CGROUP``); on v1 (or a kernel without it) it moves pid 1 into the cgroup while pid 1 builds
its root — the first cgroup migration after a quiet spell waits out an RCU grace period (~5-15 ms), so the two
overlap. Pid 1 blocks on the waiter's ack before it creates its cgroup namespace and before anything of the
tool runs: nothing the tool does escapes accounting.

The waiter seizes pid 1 with ``PTRACE_O_TRACEFORK|VFORK|CLONE`` before that ack, so every process and thread of the
sandbox is traced from its birth, and with ``PTRACE_O_TRACEEXIT``, so each one's exit stops where its registers can
still be read. Then it runs ``sandbox-watch`` in its own place (``native/watch.c``): still the tracer and the
parent, without an interpreter for the sandbox's lifetime. A seccomp kill of any of them — the handler, a
grandchild, a second thread — is recorded with the process, the ABI (i386 and x32 too) and the syscall number. The
killed thread is the one the kernel marked ``SECCOMP_MODE_DEAD`` (``Seccomp: 3`` in its status); kernels without
that mark are read by ``syscall_rollback``'s trace (``rax == orig_rax``). Every other stop is resumed as it would
have gone untraced. If ptrace is refused (Yama, an LSM), nothing is traced and the executor falls back to the
kernel's audit record for the handler.

Report on the status pipe: ``pid P`` (the handler's host pid) once it exists, then ``seccomp TGID ARCH NR``
per killed process (at most ``KILLS_REPORTED``, the handler's first; ``seccomp-more N`` counts the rest), and
last ``exit W U S R T`` — the handler's wait status (as its init saw it), the CPU and peak memory of the whole
sandbox, and T = 1 when it was traced (so "no seccomp line" means "no seccomp kill").
"""

from __future__ import annotations

import os
import signal
from typing import NoReturn

import prctl

from sandboxd.engine.child import syscalls as sc
from sandboxd.engine.child.helpers import WATCH_NAME, Helpers, run_helper
from sandboxd.engine.child.plan import JailPlan
from sandboxd.engine.child.report import report
from sandboxd.engine.child.sequence import run_call, run_sandbox
from sandboxd.engine.hostcheck import NOT_A_MOUNT_POINT, root_is_mount_point

NAMESPACES = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWNET | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS
TRACE_OPTIONS = (sc.PTRACE_O_TRACEFORK | sc.PTRACE_O_TRACEVFORK | sc.PTRACE_O_TRACECLONE | sc.PTRACE_O_TRACEEXIT
                 | sc.PTRACE_O_EXITKILL)
# Kills named one by one in the report (the handler's first, whatever its place); the rest are counted. A
# tool that forks doomed processes in a loop must not grow the report, or the watch, without bound. The watch
# (native/watch.c) names this many.
KILLS_REPORTED = 32


def run_waiter(plan: JailPlan, stdio: tuple[int, int, int], errpipe: int, status_pipe: int,
               spawner_pid: int, helpers: Helpers, join: int = -1, gate: int = -1) -> NoReturn:
    """The spawner's direct child. Never returns. ``join``: a network namespace made beforehand
    (:mod:`sandboxd.engine.netns`) to join instead of a fresh one — or, for a call in a session
    (``plan.join_pid``), a pidfd of the session's process, whose namespaces and root the call joins."""
    stage = "waiter"
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != spawner_pid:  # the spawner died before pdeathsig was armed
            os._exit(1)
        stage = "close inherited descriptors"
        sc.close_all_except({*stdio, errpipe, status_pipe, join, gate, *helpers.fds()} - {-1})
        netns = join
        if plan.join_pid:
            _call_waiter(plan, stdio, errpipe, status_pipe, join, helpers)
        if netns >= 0:
            stage = "join network namespace"
            sc.setns(netns, sc.CLONE_NEWNET)
            os.close(netns)
        stage = "unshare namespaces"
        sc.unshare(NAMESPACES if netns < 0 else NAMESPACES & ~sc.CLONE_NEWNET)
        stage = "make mounts private"
        try:
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)  # nothing we mount propagates to the host
        except OSError as e:
            if e.errno == 22 and not root_is_mount_point():
                raise OSError(e.errno, NOT_A_MOUNT_POINT) from e
            raise
        stage = "open cgroup"
        # Opened now: pid 1's pivot_root moves the root of this process too (same mount namespace), after
        # which "/proc" is the sandbox's. The host's /proc stays reachable through proc_fd.
        procs_fds = [os.open(p, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC) for p in plan.cgroup_procs]
        leaf_fd = open_v2_leaf(plan.cgroup_procs)
        proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        stage = "fork pid 1"
        joined_r, joined_w = os.pipe2(os.O_CLOEXEC)
        init_r, init_w = os.pipe2(os.O_CLOEXEC)
        pid, procs_fds = _fork_into(leaf_fd, procs_fds)
    except OSError as e:
        report(errpipe, stage, e.errno or 0, f"{stage}: {e.strerror or e}")
        os._exit(127)
    if pid == 0:
        for fd in (status_pipe, joined_w, init_r, proc_fd, *procs_fds):
            os.close(fd)
        run_sandbox(plan, stdio, errpipe, joined_r, init_w, helpers, gate)
    for fd in (joined_r, init_w, *stdio, *((gate,) if gate >= 0 else ())):
        os.close(fd)
    traced = _seize_and_place(pid, procs_fds, joined_w, errpipe)
    _watch(helpers, pid, traced, errpipe, status_pipe, proc_fd, init_r)


def _call_waiter(plan: JailPlan, stdio: tuple[int, int, int], errpipe: int, status_pipe: int,
                 pidfd: int, helpers: Helpers) -> NoReturn:
    """A call in a session: enter the session (its namespaces by its pidfd, its root by its /proc/PID/root,
    checked to be that process's through the pidfd), fork the call's handler there, put it in the call's
    cgroup, watch it as :func:`run_waiter` watches a sandbox's init."""
    stage = "open cgroup"
    try:
        procs_fds = [os.open(p, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC) for p in plan.cgroup_procs]
        leaf_fd = open_v2_leaf(plan.cgroup_procs)  # before the chroot below: these are the host's paths
        proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        stage = "join session"
        root_fd = os.open(f"/proc/{plan.join_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        signal.pidfd_send_signal(pidfd, 0)  # still alive: the pid was not reused, the root is the session's
        sc.setns(pidfd, NAMESPACES | sc.CLONE_NEWCGROUP)
        os.close(pidfd)
        os.fchdir(root_fd)
        os.chroot(".")
        os.close(root_fd)
        stage = "fork call"
        joined_r, joined_w = os.pipe2(os.O_CLOEXEC)
        pid, procs_fds = _fork_into(leaf_fd, procs_fds)
    except OSError as e:
        report(errpipe, stage, e.errno or 0, f"{stage}: {e.strerror or e}")
        os._exit(127)
    if pid == 0:
        for fd in (status_pipe, joined_w, proc_fd, *procs_fds):
            os.close(fd)
        run_call(plan, stdio, errpipe, joined_r, helpers)
    for fd in (joined_r, *stdio):
        os.close(fd)
    traced = _seize_and_place(pid, procs_fds, joined_w, errpipe)
    _watch(helpers, pid, traced, errpipe, status_pipe, proc_fd)


def open_v2_leaf(cgroup_procs: tuple[str, ...]) -> int:
    """The leaf directory to fork into on v2 (one hierarchy), or -1: v1's leaves are joined by moving."""
    if len(cgroup_procs) != 1:
        return -1
    try:
        return os.open(os.path.dirname(cgroup_procs[0]), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return -1


def _fork_into(leaf_fd: int, procs_fds: list[int]) -> tuple[int, list[int]]:
    """Fork the sandbox's first process: into its leaf when it can be born there (``leaf_fd``, v2, Linux ≥
    5.7) — then none of ``procs_fds`` is written, and they are closed — else by ``os.fork``, to be moved by
    writing them (:func:`_seize_and_place`). Returns the pid (0 in the child) and what is left to write."""
    pid = -1
    if leaf_fd >= 0:
        try:
            pid = sc.fork_into_cgroup(leaf_fd)
        except OSError:
            pid = -1  # refused (a kernel or a namespace that does not allow it): forked and moved instead
        os.close(leaf_fd)
    if pid < 0:
        return os.fork(), procs_fds
    for fd in procs_fds:
        os.close(fd)
    return pid, []


def _seize_and_place(pid: int, procs_fds: list[int], joined_w: int, errpipe: int) -> bool:
    """Trace ``pid`` from before anything of the tool runs, put it in its cgroup, let it go on (the ack it
    waits for); then close what it needed (the error pipe is closed by the watch's ``execve``). Whether it is
    traced (ptrace may be refused: Yama, an LSM)."""
    try:
        sc.ptrace_seize(pid, TRACE_OPTIONS)
        traced = True
    except OSError:
        traced = False
    try:
        for fd in procs_fds:
            os.write(fd, str(pid).encode())
        os.write(joined_w, b"1")
    except OSError as e:
        report(errpipe, "join cgroup", e.errno or 0, f"join cgroup: {e.strerror or e}")
        os.kill(pid, signal.SIGKILL)
    for fd in (joined_w, *procs_fds):
        os.close(fd)
    return traced


def _watch(helpers: Helpers, pid: int, traced: bool, errpipe: int, status_pipe: int, proc_fd: int,
           init_r: int = -1) -> NoReturn:
    """Become ``sandbox-watch`` (:mod:`helpers`), still the tracer and parent of ``pid``: it reports on the
    status pipe until ``pid`` has ended. ``init_r``: the init's report (a sandbox); -1: ``pid`` is a call's
    handler. If the watch cannot run, nothing may: ``pid`` is killed and the error pipe says why."""
    try:
        passed = (status_pipe, proc_fd, *((init_r,) if init_r >= 0 else ()))
        run_helper(helpers.watch_fd, [WATCH_NAME, str(status_pipe), str(proc_fd), str(pid), str(int(traced)),
                                      *((str(init_r),) if init_r >= 0 else ())], passed, open_until_exec=(errpipe,))
    except OSError as e:
        os.kill(pid, signal.SIGKILL)
        report(errpipe, "watch", e.errno or 0, f"watch: {WATCH_NAME}: {e.strerror or e}")
    os._exit(127)
