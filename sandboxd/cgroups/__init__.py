"""Per-execution cgroups: one :class:`Backend` (v2 or v1) chosen once by :func:`detect_backend`."""

from sandboxd.cgroups.base import Backend, CgroupLimits, CgroupStats, ExecCgroup
from sandboxd.cgroups.detect import detect_backend

__all__ = ["Backend", "CgroupLimits", "CgroupStats", "ExecCgroup", "detect_backend"]
