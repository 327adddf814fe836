"""The sandbox's two processes and their steps, in order, each naming its stage.

Pid 1 (then the init): pdeathsig → rootfs + pivot_root (:mod:`rootfs`, /proc masked) → wait until in the
cgroup → unshare(cgroup) → loopback up → hostname → audit login uid → fork the handler → drop its own
privileges → close the error pipe → :func:`init.serve`. A pooled sandbox is built at niceness 19 (a build
ahead never takes the CPU from a running request) and back at 0 before the handler is forked.

Pid 2 (the handler-to-be): pdeathsig → signals to default, mask empty → stdio on 0-2 and nothing else →
rlimits (on the final descriptors) → bounding set → groups, gid, uid → capabilities → no_new_privs → umask →
chdir → [a pooled sandbox: wait at the gate for the argv and environment of the execution that takes it] →
find the handler → seccomp (last: nothing of ours runs under the filter) → execve.

Any failure is reported on the error pipe (:mod:`report`) and the process exits 127: there is no "continue
anyway" path. The error pipe reaches EOF only once both have closed it — the init after its own privileges
are gone, the handler by ``execve`` — so "started" means the whole sandbox stands.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
from typing import NoReturn

import prctl

from sandboxd.engine.child import creds, fds, init, net
from sandboxd.engine.child import syscalls as sc
from sandboxd.engine.child.plan import DEFAULT_PATH, JailPlan
from sandboxd.engine.child.report import SetupError, enter, report
from sandboxd.engine.child.rootfs import build_and_pivot
from sandboxd.engine.seccomp.install import install_bpf

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
                report_fd: int, gate: int = -1) -> NoReturn:
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
            run_handler(plan, stdio, errpipe, gate)
        for fd in stdio:
            os.close(fd)
        os.write(report_fd, b"forked\n")
        step("init privileges")
        creds.drop_bounding_set()
        creds.become(plan.root.uid, plan.root.gid, plan.supplementary_gids)
        creds.clear_capabilities()
        prctl.set_no_new_privs(1)
        prctl.set_dumpable(False)
        os.close(errpipe)
        step.errpipe = -1
        sc.close_all_except({report_fd})
    except BaseException as e:  # anything at all must be reported, never run on
        step.failed(e)
    else:
        init.serve(handler_pid, report_fd)
    if handler_pid > 0:
        try:
            os.kill(handler_pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(127)


def run_call(plan: JailPlan, stdio: tuple[int, int, int], errpipe: int, joined: int) -> NoReturn:
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
    run_handler(plan, stdio, errpipe)


def run_handler(plan: JailPlan, stdio: tuple[int, int, int], errpipe: int, gate: int = -1) -> NoReturn:
    """Pid 2: drop everything, then become the handler. Never returns. ``gate``: a pooled sandbox's."""
    step = _Steps(errpipe)
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        step("signals")
        creds.reset_signals()
        step("stdio")
        step.errpipe = fds.install_stdio(stdio, errpipe, gate)
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
        if plan.gated:
            step("pooled")
            plan = _through_gate(plan)
        step("find handler")
        path = _resolve(plan.argv[0], plan.env.get("PATH", DEFAULT_PATH))
        step("seccomp")
        install_bpf(plan.seccomp_bpf)  # last before execve: nothing of ours runs under the filter
        step.stage = "execve"
        os.execve(path, plan.argv, plan.env)
    except BaseException as e:  # anything at all must be reported, never run on
        step.failed(e)
    os._exit(127)


GATE_MAX_BYTES = 1 << 20


def _through_gate(plan: JailPlan) -> JailPlan:
    """Wait at the gate for ``{"argv": [...], "env": {...}}`` and the gate's end; EOF alone means the pool let
    this sandbox go unused."""
    data = b""
    while chunk := os.read(fds.GATE_FD, 65536):
        data += chunk
        if len(data) > GATE_MAX_BYTES:
            raise SetupError("pooled", errno.E2BIG, "pooled: the execution's argv and environment are too large")
    os.close(fds.GATE_FD)
    if not data:
        raise SetupError("pooled", 0, "pooled: the sandbox was released unused")
    taken = json.loads(data)
    return dataclasses.replace(plan, argv=tuple(str(a) for a in taken["argv"]),
                               env={str(k): str(v) for k, v in taken["env"].items()})


def _resolve(program: str, search_path: str) -> str:
    if "/" in program:
        candidates = [program]
    else:
        candidates = [os.path.join(d, program) for d in search_path.split(":") if d]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    where = program if "/" in program else f"{program} (searched PATH={search_path})"
    raise SetupError("find handler", errno.ENOENT, f"handler not found or not executable: {where}")
