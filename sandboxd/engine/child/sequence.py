"""The sandbox's two processes and their steps, in order, each naming its stage.

Pid 1: pdeathsig → rootfs + pivot_root (:mod:`rootfs`, /proc masked) → wait until in the cgroup →
unshare(cgroup) → loopback up → hostname → audit login uid → fork the handler → close all but what its init
needs → run ``sandbox-init`` (:mod:`helpers`), which drops its privileges itself and becomes the init. A
pooled sandbox is built at niceness 19 (a build ahead never takes the CPU from a running request) and back at
0 before the handler is forked.

Pid 2 (the handler-to-be): pdeathsig → signals to default, mask empty → what to launch (the gate of a pooled
sandbox, else the plan's argv and environment) and the seccomp filter in memory files → stdio on 0-2, those on 3-6,
nothing else (:mod:`fds`) → rlimits (on the final descriptors) → bounding set → groups, gid, uid → capabilities →
no_new_privs → umask → chdir → run ``sandbox-exec``: [a pooled sandbox: wait at the gate for the argv and
environment of the execution that takes it] → find the handler → seccomp (last: nothing of ours runs under the
filter) → execve.

Any failure is reported on the error pipe (:mod:`report`, and ``native/report.h`` for the helpers) and the
process exits 127: there is no "continue anyway" path. The error pipe reaches EOF only once both have closed
it — the init after its own privileges are gone, the handler by ``execve`` — so "started" means the whole
sandbox stands.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import NoReturn

import prctl

from sandboxd.engine.child import creds, fds, net
from sandboxd.engine.child import syscalls as sc
from sandboxd.engine.child.helpers import EXEC_NAME, INIT_NAME, Helpers, run_helper
from sandboxd.engine.child.launch import encode_launch
from sandboxd.engine.child.plan import JailPlan
from sandboxd.engine.child.report import SetupError, enter, report
from sandboxd.engine.child.rootfs import build_and_pivot

# Files the handler creates are group-writable: in a writable bind owned by the sandboxes' shared group
# (setgid), the next execution — another uid — may change them.
HANDLER_UMASK = 0o007
BUILD_AHEAD_NICE = 19


class _Steps:
    """The step a process is at (named in its comm as it enters it) and the report of a failure in it."""

    def __init__(self, errpipe: int) -> None:
        self.errpipe = errpipe
        self.stage = "pdeathsig"

    def __call__(self, stage: str) -> None:
        self.stage = enter(stage)

    def failed(self, error: BaseException) -> None:
        if isinstance(error, SetupError):
            report(self.errpipe, error.stage, error.errno, str(error))
        elif isinstance(error, OSError):
            report(self.errpipe, self.stage, error.errno or 0, f"{self.stage}: {error.strerror or error}")
        else:
            report(self.errpipe, self.stage, 0, f"{self.stage}: {error!r}")


def run_sandbox(plan: JailPlan, stdio: tuple[int, int, int], errpipe: int, joined: int,
                report_fd: int, helpers: Helpers, gate: int = -1) -> NoReturn:
    """Pid 1 of the new pid namespace: build the sandbox, start the handler as pid 2, become its init."""
    step = _Steps(errpipe)
    handler_pid = 0
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        if plan.gated:  # built ahead: at the lowest priority, so it never takes the CPU from a running request
            os.setpriority(os.PRIO_PROCESS, 0, BUILD_AHEAD_NICE)
        build_and_pivot(plan.root)
        step("join cgroup")
        if os.read(joined, 1) != b"1":  # the waiter reports why on the error pipe
            raise SetupError(step.stage, errno.EIO, "join cgroup: the sandbox could not be put in its cgroup")
        os.close(joined)
        step("cgroup ns")
        sc.unshare(sc.CLONE_NEWCGROUP)  # after joining, so the leaf is the namespace's root
        step("loopback")
        net.loopback_up()
        step("hostname")
        sc.sethostname(plan.hostname)
        step("loginuid")
        creds.set_loginuid(plan.root.uid)
        if plan.gated:  # the init and the handler run at the priority of any execution
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        step("fork handler")
        handler_pid = os.fork()
        if handler_pid == 0:
            os.close(report_fd)
            run_handler(plan, stdio, errpipe, helpers, gate)
        for fd in stdio:
            os.close(fd)
        os.write(report_fd, b"forked\n")
        step("init privileges")
        root = plan.root
        run_helper(helpers.init_fd, [INIT_NAME, str(errpipe), str(report_fd), str(handler_pid), str(root.uid),
                                     str(root.gid), *(str(g) for g in plan.supplementary_gids)],
                   passed=(errpipe, report_fd))
    except BaseException as e:  # anything at all must be reported, never run on
        step.failed(e)
    if handler_pid > 0:
        try:
            os.kill(handler_pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(127)


def run_call(plan: JailPlan, stdio: tuple[int, int, int], errpipe: int, joined: int,
             helpers: Helpers) -> NoReturn:
    """A call in a session: the waiter's child, born in the session's namespaces and root (its init adopts
    what the call leaves behind). Once the waiter has put it in the call's cgroup, it becomes the handler
    exactly as pid 2 of a sandbox of its own does."""
    step = _Steps(errpipe)
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        step("join cgroup")
        if os.read(joined, 1) != b"1":  # the waiter reports why on the error pipe
            raise SetupError(step.stage, errno.EIO, "join cgroup: the call could not be put in its cgroup")
        os.close(joined)
        step("loginuid")
        creds.set_loginuid(plan.root.uid)
    except BaseException as e:  # anything at all must be reported, never run on
        step.failed(e)
        os._exit(127)
    run_handler(plan, stdio, errpipe, helpers)


def run_handler(plan: JailPlan, stdio: tuple[int, int, int], errpipe: int, helpers: Helpers,
                gate: int = -1) -> NoReturn:
    """Pid 2: drop everything, then become the handler. Never returns. ``gate``: a pooled sandbox's, where
    ``sandbox-exec`` waits for what to launch; without one, the plan's argv and environment are launched."""
    step = _Steps(errpipe)
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        step("signals")
        creds.reset_signals()
        step("launch")  # before the rlimits: RLIMIT_FSIZE and RLIMIT_NOFILE must not stand in its way
        launch = gate if gate >= 0 else _memfd("launch", encode_launch(plan.argv, plan.env))
        seccomp_filter = _memfd("seccomp", plan.seccomp_bpf)
        step("stdio")
        step.errpipe = fds.install_stdio(stdio, errpipe, launch, seccomp_filter, helpers.exec_fd)
        step("rlimits")
        creds.set_rlimits(plan.rlimits)
        step("bounding set")
        creds.drop_bounding_set()
        step("ids")
        creds.become(plan.root.uid, plan.root.gid, plan.supplementary_gids)
        step("capabilities")
        creds.clear_capabilities()
        step("no_new_privs")
        prctl.set_no_new_privs(1)
        os.umask(HANDLER_UMASK)
        step("chdir")
        os.chdir(plan.root.workdir)
        step(EXEC_NAME)
        os.execve(fds.EXEC_HELPER_FD, [EXEC_NAME, *(("gated",) if gate >= 0 else ())], {})
    except BaseException as e:  # anything at all must be reported, never run on
        step.failed(e)
    os._exit(127)


def _memfd(name: str, content: bytes) -> int:
    """A memory file holding ``content``, read from its start by ``sandbox-exec``."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, content)  # a memfd takes it all at once: no RLIMIT_FSIZE yet, no short write
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
