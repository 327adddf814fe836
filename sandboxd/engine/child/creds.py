"""Credentials and process limits of the handler-to-be, in the order the kernel needs: rlimits (while still
privileged to raise hard limits), the capability bounding set, supplementary groups and ids, then every
remaining capability. Each step raises; nothing is skipped."""

from __future__ import annotations

import os
import resource

import prctl

from sandboxd.engine.child import syscalls as sc

_RLIMITS = {"cpu": resource.RLIMIT_CPU, "fsize": resource.RLIMIT_FSIZE, "nofile": resource.RLIMIT_NOFILE,
            "core": resource.RLIMIT_CORE}

with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as _f:
    CAP_LAST_CAP = int(_f.read())


def set_rlimits(rlimits: dict[str, tuple[int, int]]) -> None:
    for name, (soft, hard) in rlimits.items():
        resource.setrlimit(_RLIMITS[name], (soft, hard))


def drop_bounding_set() -> None:
    for cap in range(CAP_LAST_CAP + 1):
        prctl.capbset_drop(cap)


def become(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def clear_capabilities() -> None:
    sc.clear_all_capabilities()
