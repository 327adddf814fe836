"""Child side of one execution, in the order the kernel needs. Runs only in processes forked by the spawner.

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

import errno
import fcntl
import os
import resource
import signal
import socket
import struct
from dataclasses import dataclass
from typing import Any, NoReturn

import prctl

from sandboxd import syscalls as sc
from sandboxd.rootfs import Bind, RootPlan, SetupError, build_and_pivot
from sandboxd.seccomp_install import install_bpf

NAMESPACES = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWNET | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_RLIMITS = {"cpu": resource.RLIMIT_CPU, "fsize": resource.RLIMIT_FSIZE, "nofile": resource.RLIMIT_NOFILE,
            "core": resource.RLIMIT_CORE}
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_WALL = 0x40000000
# Signals a traced pid 1 may receive and keep running with (or, SIGSYS, die of through the exit stop).
_PASS_THROUGH_SIGNALS = frozenset({signal.SIGSYS, signal.SIGCHLD, signal.SIGWINCH, signal.SIGURG,
                                   signal.SIGCONT})

with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as _f:
    CAP_LAST_CAP = int(_f.read())


@dataclass(frozen=True)
class JailPlan:
    execution_id: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cgroup_procs: tuple[str, ...]
    hostname: str
    root: RootPlan
    rlimits: dict[str, tuple[int, int]]
    seccomp_bpf: bytes

    def to_wire(self) -> dict[str, Any]:
        root = vars(self.root) | {"binds": [[b.source, b.target, b.writable] for b in self.root.binds]}
        return {"execution_id": self.execution_id, "argv": list(self.argv), "env": self.env,
                "cgroup_procs": list(self.cgroup_procs), "hostname": self.hostname, "root": root,
                "rlimits": self.rlimits, "seccomp_bpf": self.seccomp_bpf.hex()}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> JailPlan:
        root = dict(d["root"])
        root["binds"] = tuple(Bind(s, t, bool(w)) for s, t, w in root["binds"])
        root["system_binds"] = tuple(root["system_binds"])
        root["etc_binds"] = tuple(root["etc_binds"])
        return cls(execution_id=str(d["execution_id"]), argv=tuple(d["argv"]), env=dict(d["env"]),
                   cgroup_procs=tuple(d["cgroup_procs"]), hostname=str(d["hostname"]),
                   root=RootPlan(**root), rlimits={k: (int(v[0]), int(v[1])) for k, v in d["rlimits"].items()},
                   seccomp_bpf=bytes.fromhex(d["seccomp_bpf"]))


def _report(errpipe: int, stage: str, err: int, message: str) -> None:
    try:
        os.write(errpipe, f"{stage}\0{err}\0{message}".encode(errors="replace")[:4000])
    except OSError:
        pass


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
        _report(errpipe, stage, e.errno or 0, f"{stage}: {e.strerror or e}")
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
        _report(errpipe, "join cgroup", e.errno or 0, f"join cgroup: {e.strerror or e}")
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
        _loopback_up()
        stage = "hostname"
        sc.sethostname(plan.hostname)
        stage = "rlimits"
        for name, (soft, hard) in plan.rlimits.items():
            resource.setrlimit(_RLIMITS[name], (soft, hard))
        stage = "bounding set"
        for cap in range(CAP_LAST_CAP + 1):
            prctl.capbset_drop(cap)
        stage = "ids"
        os.setgroups([])
        os.setresgid(plan.root.gid, plan.root.gid, plan.root.gid)
        os.setresuid(plan.root.uid, plan.root.uid, plan.root.uid)
        stage = "capabilities"
        sc.clear_all_capabilities()
        stage = "no_new_privs"
        prctl.set_no_new_privs(1)
        stage = "chdir"
        os.chdir(plan.root.workdir)
        stage = "stdio"
        errpipe = _install_stdio(stdio, errpipe)
        stage = "find handler"
        path = _resolve(plan.argv[0], plan.env.get("PATH", DEFAULT_PATH))
        stage = "seccomp"
        install_bpf(plan.seccomp_bpf)  # last before execve: nothing of ours runs under the filter
        stage = "execve"
        os.execve(path, plan.argv, plan.env)
    except SetupError as e:
        _report(errpipe, e.stage, e.errno, str(e))
    except OSError as e:
        _report(errpipe, stage, e.errno or 0, f"{stage}: {e.strerror or e}")
    except BaseException as e:  # anything at all must be reported, never run on
        _report(errpipe, stage, 0, f"{stage}: {e!r}")
    os._exit(127)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack("16sh22x", b"lo", 0))
        flags = struct.unpack("16sh22x", ifreq)[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))


def _install_stdio(stdio: tuple[int, int, int], errpipe: int) -> int:
    """Put the execution's pipes on 0, 1, 2 and the error pipe on 3 (close-on-exec); close the rest."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (*stdio, errpipe)]
    for target, fd in enumerate(high[:3]):
        os.dup2(fd, target, inheritable=True)
    os.dup2(high[3], 3, inheritable=False)
    sc.close_range_from(4)
    return 3


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
