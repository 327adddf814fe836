"""Settings of the execution engine that are fixed for a daemon's life (not per execution)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sandboxd.engine.ids import DEFAULT_SANDBOX_IDS, IdRange

# System directories bound read-only into every sandbox when they exist on the host. Symlinks among them
# (merged-/usr hosts: /bin -> usr/bin) are recreated as symlinks, not bound.
DEFAULT_SYSTEM_BINDS: tuple[str, ...] = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")

# The few host /etc entries a handler needs (dynamic linker cache, time zone, alternatives symlinks).
# Never /etc/shadow, /etc/gshadow, /etc/sudoers, ssh keys …: passwd/group/hosts are generated, not bound.
DEFAULT_ETC_BINDS: tuple[str, ...] = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/mime.types",
    "/etc/ssl/certs",
)


@dataclass(frozen=True)
class EngineConfig:
    state_dir: Path = Path("/run/sandboxd")
    instance: str = "default"  # names this daemon's cgroup directory on v1 hosts; unique per daemon
    cgroup_root: Path = Path("/sys/fs/cgroup")
    # each running execution gets a uid (and gid) of its own from here; the first id is the shared group
    sandbox_ids: IdRange = DEFAULT_SANDBOX_IDS
    # how long a sandbox may take from fork to execve before it ends SETUP_FAILED naming the stage it hung in
    setup_timeout_ms: int = 60_000
    system_binds: tuple[str, ...] = DEFAULT_SYSTEM_BINDS
    etc_binds: tuple[str, ...] = DEFAULT_ETC_BINDS

    @property
    def root_mountpoint(self) -> Path:
        """An empty directory every sandbox mounts its private tmpfs root on, inside its own mount
        namespace: nothing is ever created below it on the host, so nothing is left after a crash."""
        return self.state_dir / "root"
