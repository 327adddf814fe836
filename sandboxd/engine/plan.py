"""Turn an :class:`~sandboxd.engine.spec.ExecutionSpec` into the child's :class:`~sandboxd.engine.child.plan.JailPlan`:
the generated /etc, the rlimits, the mounts. One hop from spec to syscall arguments, done in the daemon."""

from __future__ import annotations

import math
from collections.abc import Sequence

from sandboxd.base.limits import Limits
from sandboxd.engine.child.launch import DEFAULT_PATH
from sandboxd.engine.child.plan import Bind, JailPlan, RootPlan
from sandboxd.engine.config import EngineConfig
from sandboxd.engine.spec import BindMount, ExecutionSpec


def _etc_files(spec: ExecutionSpec, uid: int, shared_gid: int) -> dict[str, str]:
    home = str(spec.workdir)
    passwd = ["root:x:0:0:root:/root:/usr/sbin/nologin",
              f"sandbox:x:{uid}:{uid}:sandbox:{home}:/usr/sbin/nologin",
              "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"]
    group = ["root:x:0:", f"sandbox:x:{uid}:", f"sandboxes:x:{shared_gid}:sandbox", "nogroup:x:65534:"]
    return {
        "passwd": "\n".join(passwd) + "\n",
        "group": "\n".join(group) + "\n",
        "hostname": spec.hostname + "\n",
        "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{spec.hostname}\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        "resolv.conf": "",
    }


def rlimits(limits: Limits) -> dict[str, tuple[int, int]]:
    """Per-process limits. CPU seconds are rounded up; the cgroup's CPU accounting enforces the exact
    milliseconds for the whole tree, RLIMIT_CPU is the backstop for one process."""
    result = {"core": (0, 0)}
    if limits.cpu_time_ms is not None:
        cpu_s = max(1, math.ceil(limits.cpu_time_ms / 1000))
        result["cpu"] = (cpu_s, cpu_s + 1)
    if limits.file_size_max_bytes is not None:
        result["fsize"] = (limits.file_size_max_bytes, limits.file_size_max_bytes)
    if limits.open_files_max is not None:
        result["nofile"] = (limits.open_files_max, limits.open_files_max)
    return result


def bind_order(binds: Sequence[BindMount]) -> list[BindMount]:
    """The order binds are mounted in, parents before children — and the index a stage ``bind N`` names."""
    return sorted(binds, key=lambda bind: len(bind.target.parts))


def build_plan(config: EngineConfig, spec: ExecutionSpec, execution_id: str,
               cgroup_procs: tuple[str, ...], uid: int, *, join_pid: int = 0) -> JailPlan:
    """The child's plan; ``uid`` is the execution's own (and its gid), from ``config.sandbox_ids``;
    ``join_pid``: a call in the session that process keeps (its root plan then goes unused)."""
    shared_gid = config.sandbox_ids.shared_gid
    env = dict(spec.env)
    env.setdefault("PATH", DEFAULT_PATH)
    root = RootPlan(
        mountpoint=str(config.root_mountpoint),
        system_binds=config.system_binds,
        etc_binds=config.etc_binds,
        etc_files=_etc_files(spec, uid, shared_gid),
        # parents before children, so a bind inside another lands on it, not under it
        binds=tuple(Bind(str(b.source), str(b.target), b.writable) for b in bind_order(spec.binds)),
        workdir=str(spec.workdir),
        workdir_source=None if spec.workdir_source is None else str(spec.workdir_source),
        tmpfs_size_bytes=spec.limits.tmpfs_size_bytes,
        uid=uid,
        gid=uid,
    )
    return JailPlan(execution_id=execution_id, argv=spec.argv, env=env, cgroup_procs=cgroup_procs,
                    hostname=spec.hostname, root=root, rlimits=rlimits(spec.limits),
                    seccomp_bpf=spec.seccomp_bpf, supplementary_gids=(shared_gid,), join_pid=join_pid)
