"""Per-execution cgroups: one :class:`Backend` (v2 or v1) chosen once by :func:`detect_backend`."""

from sandboxd.engine.cgroups.base import (
    Backend,
    CgroupCreation,
    CgroupLimits,
    CgroupStats,
    CgroupUsage,
    ExecCgroup,
)
from sandboxd.engine.cgroups.detect import detect_backend

__all__ = ["Backend", "CgroupCreation", "CgroupLimits", "CgroupStats", "CgroupUsage", "ExecCgroup", "detect_backend"]
