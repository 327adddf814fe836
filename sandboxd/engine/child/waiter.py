"""The spawner's direct child for one execution: makes the namespaces, puts pid 1 in its cgroup, reaps it.

::

    spawner ──fork──▶ waiter (host pid ns, outside the execution's cgroup; reaps pid 1, reports its status
                        │         and, through a PTRACE_O_TRACEEXIT stop, the syscall a seccomp kill was for)
                        │ unshare(pid, mount, net, ipc, uts) ; mounts rprivate ; moves pid 1 into the cgroup
                        └─fork──▶ pid 1 (the handler-to-be):
                                  rootfs + pivot_root → wait until in the cgroup → unshare(cgroup) → loopback up
                                  → hostname
                                  → rlimits → drop bounding set → setgroups/setresgid/setresuid → clear caps
                                  → no_new_privs → stdio, close other fds → seccomp → execve

The waiter stays outside the cgroup on purpose: killing the cgroup (timeouts, ``memory.oom.group``) must not take
the one process that reports the handler's wait status with it. The waiter moves pid 1 into the cgroup while pid 1
builds its root — the first cgroup migration after a quiet spell waits out an RCU grace period (~5-15 ms, measured
in bench/), so the two overlap — and pid 1 blocks on the waiter's ack before it creates its cgroup namespace and
before anything of the tool runs: nothing the tool does escapes accounting.

Every step that fails raises :class:`SetupError`; the report ``stage\\0errno\\0message`` goes to a close-on-exec
pipe and the process exits 127. EOF on that pipe with nothing read means ``execve`` succeeded. Nothing runs
half-sandboxed: there is no "continue anyway" path.
"""


from __future__ import annotations

import os
import resource
import signal
from typing import NoReturn

import prctl

from sandboxd.engine.child import syscalls as sc
from sandboxd.engine.child.plan import JailPlan
from sandboxd.engine.child.report import report
from sandboxd.engine.child.sequence import run_init

NAMESPACES = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWNET | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS
_WALL = 0x40000000
# Signals a traced pid 1 may receive and keep running with (or, SIGSYS, die of through the exit stop).
_PASS_THROUGH_SIGNALS = frozenset({signal.SIGSYS, signal.SIGCHLD, signal.SIGWINCH, signal.SIGURG,
                                   signal.SIGCONT})


def run_waiter(plan: JailPlan, stdio: tuple[int, int, int], errpipe: int, status_pipe: int,
               spawner_pid: int) -> NoReturn:
    """The spawner's direct child. Never returns."""
    stage = "waiter"
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != spawner_pid:  # the spawner died before pdeathsig was armed
            os._exit(1)
        stage = "unshare namespaces"
        sc.unshare(NAMESPACES)
        stage = "make mounts private"
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)  # nothing we mount propagates to the host
        stage = "open cgroup"
        # Opened now: pid 1's pivot_root moves the root of this process too (same mount namespace).
        procs_fds = [os.open(p, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC) for p in plan.cgroup_procs]
        stage = "fork pid 1"
        joined_r, joined_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
    except OSError as e:
        report(errpipe, stage, e.errno or 0, f"{stage}: {e.strerror or e}")
        os._exit(127)
    if pid == 0:
        for fd in (status_pipe, joined_w, *procs_fds):
            os.close(fd)
        run_init(plan, stdio, errpipe, joined_r)
    os.close(joined_r)
    for fd in stdio:
        os.close(fd)
    try:
        for fd in procs_fds:
            os.write(fd, str(pid).encode())
        os.write(joined_w, b"1")
    except OSError as e:
        report(errpipe, "join cgroup", e.errno or 0, f"join cgroup: {e.strerror or e}")
        os.kill(pid, signal.SIGKILL)
    for fd in (joined_w, errpipe, *procs_fds):
        os.close(fd)
    os.write(status_pipe, f"pid {pid}\n".encode())
    status, usage, syscall_nr = _reap(pid)
    os.write(status_pipe, (f"exit {status} {int(usage.ru_utime * 1e6)} {int(usage.ru_stime * 1e6)} "
                           f"{usage.ru_maxrss * 1024} {syscall_nr}\n").encode())
    os._exit(0)


def _reap(pid: int) -> tuple[int, resource.struct_rusage, int]:
    """Wait for pid 1 and, if a seccomp filter killed it, learn which syscall did it (-1 otherwise).

    The number is in the dying process's registers only: the waiter seizes pid 1 with PTRACE_O_TRACEEXIT and
    reads ``orig_rax`` at the exit stop. Other stops are resumed untouched (harmless signals re-injected, group
    stops listened); any other delivered signal detaches the tracer first, because the kernel keeps a traced
    namespace init immune to forced fatal signals. If ptrace is refused (Yama, LSM), the executor falls
    back to the kernel's audit record.
    """
    syscall_nr = -1
    try:
        sc.ptrace_seize(pid, sc.PTRACE_O_TRACEEXIT | sc.PTRACE_O_EXITKILL)
    except OSError:
        pass
    while True:
        _, status, usage = os.wait4(pid, _WALL)
        if not os.WIFSTOPPED(status):
            return status, usage, syscall_nr
        event, sig = status >> 16, os.WSTOPSIG(status)
        try:
            if event == sc.PTRACE_EVENT_EXIT:
                exit_status = sc.ptrace_event_message(pid)
                if os.WIFSIGNALED(exit_status) and os.WTERMSIG(exit_status) == signal.SIGSYS:
                    syscall_nr = sc.ptrace_syscall_nr(pid)
                sc.ptrace_cont(pid, 0)
            elif event == sc.PTRACE_EVENT_STOP:
                sc.ptrace_listen(pid)
            elif sig in _PASS_THROUGH_SIGNALS:
                sc.ptrace_cont(pid, sig)
            else:
                # A traced namespace init stays immune to forced fatal signals (SIGSEGV from a crash would
                # loop forever): let go and let the kernel deliver it with its normal semantics.
                sc.ptrace_detach(pid, sig)
        except OSError:  # the tracee vanished (SIGKILL) between the stop and our request
            pass
