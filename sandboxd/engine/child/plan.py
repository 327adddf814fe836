"""What the daemon sends the spawner for one execution — everything the child path needs, and nothing it must
compute after the fork — and its form on the wire, as the waiter reads it (``native/plan.h``):
NUL-terminated strings and decimal numbers in a fixed order, each list after its length, the two binary parts
(what to launch and the seccomp filter) after their size in bytes — so the native side parses nothing but
counts."""

from __future__ import annotations

import resource
from dataclasses import dataclass

from sandboxd.engine.child.launch import encode_launch, nul_terminated

PLAN_MAGIC = "sandboxd-plan/2"  # native/plan.h: a spawner and a waiter of different versions never meet
LAUNCH_NOW, GATED, GATED_FILTERED = 0, 1, 2  # native/launch.h's enum launch_mode: the plan's "gated" field
_RLIMITS = {"cpu": resource.RLIMIT_CPU, "fsize": resource.RLIMIT_FSIZE, "nofile": resource.RLIMIT_NOFILE,
            "core": resource.RLIMIT_CORE}
_RLIM_INFINITY = (1 << 64) - 1


@dataclass(frozen=True)
class Bind:
    source: str
    target: str
    writable: bool


@dataclass(frozen=True)
class RootPlan:
    """The sandbox's root (``native/rootfs.c``): a tmpfs on ``mountpoint``, an empty host directory, in the
    sandbox's mount namespace only."""

    mountpoint: str
    system_binds: tuple[str, ...]
    etc_binds: tuple[str, ...]
    etc_files: dict[str, str]  # generated /etc files: name -> content
    binds: tuple[Bind, ...]
    workdir: str
    workdir_source: str | None
    tmpfs_size_bytes: int
    uid: int
    gid: int


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
    supplementary_gids: tuple[int, ...] = ()
    # A call in a session: the host pid of a process of the session (the spawner passes its pidfd), whose
    # namespaces and root the call joins instead of building its own. 0: a sandbox of its own.
    join_pid: int = 0
    # A pooled sandbox: built ahead, its handler-to-be waits at the gate (an fd the spawner passes) for the
    # argv and environment of the execution that takes it (``native/launch.c``) — with its seccomp filter
    # installed before the gate when ``seccomp_before_gate`` (the filter always allows what the launch does
    # after it: ``seccomp/constant.py``), else after.
    gated: bool = False
    seccomp_before_gate: bool = False
    # A sandbox alone in its cgroup: once everything in it has ended, its waiter reads these accounting files
    # (their contents go in its report) and then removes these directories, before it reports the exit.
    cgroup_final_reads: tuple[str, ...] = ()
    cgroup_removal: tuple[str, ...] = ()
    # ... and when its waiter makes it too: these directories, then these (limit file, value) writes, before
    # anything of the sandbox exists (``native/cgroup.c``; :class:`~sandboxd.engine.cgroups.CgroupCreation`).
    cgroup_create: tuple[str, ...] = ()
    cgroup_writes: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        """The plan as the waiter reads it; ValueError naming a string that holds a NUL byte."""
        root = self.root
        fields: list[str | int] = [
            PLAN_MAGIC, self.hostname, self.join_pid, self._launch_mode(), root.uid, root.gid,
            *_counted(self.supplementary_gids), *_counted(self.cgroup_procs), *_counted(self.cgroup_final_reads),
            *_counted(self.cgroup_removal), *_counted(self.cgroup_create), len(self.cgroup_writes)]
        for path, value in self.cgroup_writes:
            fields += [path, value]
        fields.append(len(self.rlimits))
        for name, (soft, hard) in self.rlimits.items():
            fields += [_RLIMITS[name], _rlim(soft), _rlim(hard)]
        fields += [root.mountpoint, root.tmpfs_size_bytes, root.workdir, root.workdir_source or "",
                   *_counted(root.system_binds), *_counted(root.etc_binds), len(root.etc_files)]
        for name, content in root.etc_files.items():
            fields += [name, content]
        fields.append(len(root.binds))
        for bind in root.binds:
            fields += [bind.source, bind.target, int(bind.writable)]
        head = nul_terminated([str(field) for field in fields], "")
        launch = encode_launch(self.argv, self.env)
        return b"".join((head, _blob(launch), _blob(self.seccomp_bpf)))

    def _launch_mode(self) -> int:
        if not self.gated:
            return LAUNCH_NOW
        return GATED_FILTERED if self.seccomp_before_gate else GATED


def _counted(items: tuple[str, ...] | tuple[int, ...]) -> list[str | int]:
    return [len(items), *items]


def _rlim(value: int) -> int:
    return _RLIM_INFINITY if value < 0 else value


def _blob(data: bytes) -> bytes:
    return str(len(data)).encode() + b"\0" + data

