"""What one execution is: the spec the executor runs and the limits it enforces.

Every quantity carries its unit in its name. Specs are frozen; build them once at the boundary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sandboxd.base.errors import InvalidSpec
from sandboxd.base.limits import Limits

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_WORKDIR = PurePosixPath("/work")


@dataclass(frozen=True)
class BindMount:
    """A host path made visible inside the sandbox at ``target`` (read-only unless ``writable``)."""

    source: Path
    target: PurePosixPath
    writable: bool = False

    def __post_init__(self) -> None:
        if not self.source.is_absolute():
            raise InvalidSpec(f"bind source must be absolute: {self.source}")
        _check_target(self.target)


@dataclass(frozen=True)
class ExecutionSpec:
    """Everything needed to run one handler in a sandbox.

    ``argv[0]`` is resolved inside the sandbox (absolute, or searched on the spec's ``PATH``).
    ``seccomp_bpf`` is a compiled filter (see :mod:`sandboxd.engine.seccomp.profile`); the child only installs it.
    """

    argv: tuple[str, ...]
    seccomp_bpf: bytes
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    limits: Limits = field(default_factory=Limits)
    binds: tuple[BindMount, ...] = ()
    workdir: PurePosixPath = DEFAULT_WORKDIR
    workdir_source: Path | None = None  # host dir bound read-write at ``workdir``; tmpfs when None
    hostname: str = "sandbox"
    seccomp_profile_name: str = "default"
    tool: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    # The one door out of the sandbox's network namespace: a socket listening on 127.0.0.1:PORT inside it,
    # handed to the caller as a NetworkReady event. None: loopback only, nothing listens for the sandbox.
    egress_listen_port: int | None = None

    def __post_init__(self) -> None:
        if not self.argv or not self.argv[0]:
            raise InvalidSpec("argv must name a program")
        if any("\0" in arg for arg in self.argv):
            raise InvalidSpec("argv must not contain NUL bytes")
        for key, value in self.env.items():
            if not _ENV_NAME.match(key) or "\0" in value:
                raise InvalidSpec(f"invalid environment variable {key!r}")
        if not self.seccomp_bpf:
            raise InvalidSpec("a seccomp filter is required: sandboxd never runs a handler unfiltered")
        _check_target(self.workdir)
        if self.workdir_source is not None and not self.workdir_source.is_absolute():
            raise InvalidSpec(f"workdir source must be absolute: {self.workdir_source}")
        if self.egress_listen_port is not None and not 0 < self.egress_listen_port < 65536:
            raise InvalidSpec(f"egress listen port must be 1-65535, got {self.egress_listen_port}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", self.hostname):
            raise InvalidSpec(f"invalid hostname {self.hostname!r}")


def _check_target(target: PurePosixPath) -> None:
    if not target.is_absolute() or ".." in target.parts or target == PurePosixPath("/"):
        raise InvalidSpec(f"sandbox path must be absolute, below /, without '..': {target}")
