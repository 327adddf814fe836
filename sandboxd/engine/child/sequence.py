"""Pid 1 of the new pid namespace, the handler-to-be: its steps in order, each naming its stage.

rootfs + pivot_root → wait until in the cgroup → unshare(cgroup) → loopback up → hostname → rlimits → drop
bounding set → setgroups/setresgid/setresuid → clear caps → no_new_privs → chdir → stdio, close other fds →
find the handler → seccomp (last: nothing of ours runs under the filter) → execve.

Any failure is reported on the error pipe (:mod:`sandboxd.engine.child.report`) and the process exits 127:
there is no "continue anyway" path.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import NoReturn

import prctl

from sandboxd.engine.child import creds, fds, net
from sandboxd.engine.child import syscalls as sc
from sandboxd.engine.child.plan import DEFAULT_PATH, JailPlan
from sandboxd.engine.child.report import SetupError, report
from sandboxd.engine.child.rootfs import build_and_pivot
from sandboxd.engine.seccomp.install import install_bpf


def run_init(plan: JailPlan, stdio: tuple[int, int, int], errpipe: int, joined: int) -> NoReturn:
    """Pid 1 of the new pid namespace: set up, then become the handler. Never returns."""
    stage = "pdeathsig"
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        build_and_pivot(plan.root)
        stage = "join cgroup"
        if os.read(joined, 1) != b"1":  # the waiter reports why on the error pipe
            raise SetupError(stage, errno.EIO, "join cgroup: the sandbox could not be put in its cgroup")
        os.close(joined)
        stage = "unshare cgroup namespace"
        sc.unshare(sc.CLONE_NEWCGROUP)  # after joining, so the leaf is the namespace's root
        stage = "loopback"
        net.loopback_up()
        stage = "hostname"
        sc.sethostname(plan.hostname)
        stage = "rlimits"
        creds.set_rlimits(plan.rlimits)
        stage = "bounding set"
        creds.drop_bounding_set()
        stage = "ids"
        creds.become(plan.root.uid, plan.root.gid)
        stage = "capabilities"
        creds.clear_capabilities()
        stage = "no_new_privs"
        prctl.set_no_new_privs(1)
        stage = "chdir"
        os.chdir(plan.root.workdir)
        stage = "stdio"
        errpipe = fds.install_stdio(stdio, errpipe)
        stage = "find handler"
        path = _resolve(plan.argv[0], plan.env.get("PATH", DEFAULT_PATH))
        stage = "seccomp"
        install_bpf(plan.seccomp_bpf)  # last before execve: nothing of ours runs under the filter
        stage = "execve"
        os.execve(path, plan.argv, plan.env)
    except SetupError as e:
        report(errpipe, e.stage, e.errno, str(e))
    except OSError as e:
        report(errpipe, stage, e.errno or 0, f"{stage}: {e.strerror or e}")
    except BaseException as e:  # anything at all must be reported, never run on
        report(errpipe, stage, 0, f"{stage}: {e!r}")
    os._exit(127)


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
