"""The resource limits of one execution, with their units in their names.

Shared vocabulary: a request asks for them, a tool and a role cap them (the policy), the engine enforces them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sandboxd.base.echo import quote
from sandboxd.base.errors import InvalidSpec

_I64_MAX = 2**63 - 1
# What the kernel can take for each limit (an unlimited ceiling must not let a request reach setup with a
# value setrlimit or the cgroup would refuse): rlimits are signed 64-bit here, RLIMIT_NOFILE is capped by
# fs.nr_open (2^20 by default), pids by PID_MAX_LIMIT (2^22).
MAXIMUMS: dict[str, int] = {
    "memory_max_bytes": _I64_MAX,
    "cpu_time_ms": _I64_MAX // 1000,
    "cpu_share_percent": 100 * 1024,
    "wall_time_ms": _I64_MAX // 1000,
    "output_max_bytes": _I64_MAX,
    "pids_max": 1 << 22,
    "file_size_max_bytes": _I64_MAX,
    "open_files_max": 1 << 20,
    "tmpfs_size_bytes": _I64_MAX,
    "network_max_bytes": _I64_MAX,
}
MIN_OPEN_FILES = 4


@dataclass(frozen=True)
class Limits:
    """Resource limits of one execution. ``None`` means "no limit of this kind".

    ``pids_max`` counts the handler's processes and threads; the sandbox's init (pid 1) is not one of them."""

    memory_max_bytes: int | None = 256 * 1024 * 1024
    cpu_time_ms: int | None = 10_000
    cpu_share_percent: int | None = 100
    wall_time_ms: int | None = 30_000
    output_max_bytes: int | None = 1024 * 1024
    pids_max: int | None = 64
    file_size_max_bytes: int | None = 64 * 1024 * 1024
    open_files_max: int | None = 256
    tmpfs_size_bytes: int = 64 * 1024 * 1024
    network_max_bytes: int | None = 64 * 1024 * 1024  # through the egress proxy, sent + received

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise InvalidSpec(f"limit {name} must be a positive integer, got {quote(value)}")
            if value is not None and value > MAXIMUMS[name]:
                raise InvalidSpec(f"limit {name} must be at most {MAXIMUMS[name]}, got {value}")
        if self.open_files_max is not None and self.open_files_max < MIN_OPEN_FILES:
            raise InvalidSpec(f"limit open_files_max must be at least {MIN_OPEN_FILES} (stdin, stdout, stderr and "
                              f"one more), got {self.open_files_max}")


LIMIT_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(Limits))
