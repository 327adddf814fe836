"""What the daemon sends the spawner for one execution — everything the child path needs, and nothing it must
compute after the fork — and its form on the wire (one JSON object)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandboxd.engine.child.rootfs import Bind, RootPlan

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


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
    # argv and environment of the execution that takes it (see :func:`sequence.run_handler`).
    gated: bool = False

    def to_wire(self) -> dict[str, Any]:
        root = vars(self.root) | {"binds": [[b.source, b.target, b.writable] for b in self.root.binds]}
        return {"execution_id": self.execution_id, "argv": list(self.argv), "env": self.env,
                "cgroup_procs": list(self.cgroup_procs), "hostname": self.hostname, "root": root,
                "rlimits": self.rlimits, "seccomp_bpf": self.seccomp_bpf.hex(),
                "supplementary_gids": list(self.supplementary_gids), "join_pid": self.join_pid,
                "gated": self.gated}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> JailPlan:
        root = dict(d["root"])
        root["binds"] = tuple(Bind(s, t, bool(w)) for s, t, w in root["binds"])
        root["system_binds"] = tuple(root["system_binds"])
        root["etc_binds"] = tuple(root["etc_binds"])
        return cls(execution_id=str(d["execution_id"]), argv=tuple(d["argv"]), env=dict(d["env"]),
                   cgroup_procs=tuple(d["cgroup_procs"]), hostname=str(d["hostname"]),
                   root=RootPlan(**root), rlimits={k: (int(v[0]), int(v[1])) for k, v in d["rlimits"].items()},
                   seccomp_bpf=bytes.fromhex(d["seccomp_bpf"]),
                   supplementary_gids=tuple(int(g) for g in d["supplementary_gids"]),
                   join_pid=int(d.get("join_pid", 0)), gated=bool(d.get("gated", False)))
