"""The resource limits of one execution, with their units in their names.

Shared vocabulary: a request asks for them, a tool and a role cap them (the policy), the engine enforces them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sandboxd.base.errors import InvalidSpec


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

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise InvalidSpec(f"limit {name} must be a positive integer, got {value!r}")
        if self.cpu_share_percent is not None and self.cpu_share_percent > 100 * 1024:
            raise InvalidSpec(f"limit cpu_share_percent is absurd: {self.cpu_share_percent}")


LIMIT_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(Limits))
