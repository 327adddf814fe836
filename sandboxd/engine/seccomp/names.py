"""Names a seccomp profile may use for architectures and syscalls, and what libseccomp makes of them.

Docker profiles name architectures three ways: ``SCMP_ARCH_*`` (``architectures``, ``archMap``), Go's
``GOARCH`` (``includes.arches``: ``amd64``, ``arm64``, ``386`` …) and libseccomp's short names (``x32``,
``x86``). All three map here to one libseccomp token (``AUDIT_ARCH_*`` value), so they compare equal.
"""

from __future__ import annotations

import pyseccomp

_EM_SH = 42
_EM_LOONGARCH = 258
_AUDIT_ARCH_64BIT = 0x80000000
_AUDIT_ARCH_LE = 0x40000000

# Tokens for architectures pyseccomp's ``Arch`` lacks. libseccomp 2.5 cannot filter them, but Docker's
# default profile lists loongarch64 in its archMap, so the name must be known (it is only ever used on a
# loongarch64 host).
_ARCH_LOONGARCH64 = _EM_LOONGARCH | _AUDIT_ARCH_64BIT | _AUDIT_ARCH_LE
_ARCH_SH = _EM_SH | _AUDIT_ARCH_LE
_ARCH_SHEB = _EM_SH

_A = pyseccomp.Arch
# libseccomp short name -> token; "SCMP_ARCH_" + name.upper() is the same arch.
_SHORT_NAMES: dict[str, int] = {
    "x86": _A.X86,
    "x86_64": _A.X86_64,
    "x32": _A.X32,
    "arm": _A.ARM,
    "aarch64": _A.AARCH64,
    "mips": _A.MIPS,
    "mips64": _A.MIPS64,
    "mips64n32": _A.MIPS64N32,
    "mipsel": _A.MIPSEL,
    "mipsel64": _A.MIPSEL64,
    "mipsel64n32": _A.MIPSEL64N32,
    "parisc": _A.PARISC,
    "parisc64": _A.PARISC64,
    "ppc": _A.PPC,
    "ppc64": _A.PPC64,
    "ppc64le": _A.PPC64LE,
    "s390": _A.S390,
    "s390x": _A.S390X,
    "riscv64": _A.RISCV64,
    "loongarch64": _ARCH_LOONGARCH64,
    "sh": _ARCH_SH,
    "sheb": _ARCH_SHEB,
}

# Go's GOARCH values where they differ from libseccomp's short names.
_GO_NAMES: dict[str, int] = {
    "386": _A.X86,
    "amd64": _A.X86_64,
    "arm64": _A.AARCH64,
    "mipsle": _A.MIPSEL,
    "mips64le": _A.MIPSEL64,
    "mips64p32": _A.MIPS64N32,
    "mips64p32le": _A.MIPSEL64N32,
    "loong64": _ARCH_LOONGARCH64,
}

ARCH_TOKENS: dict[str, int] = {
    **_SHORT_NAMES,
    **_GO_NAMES,
    **{"SCMP_ARCH_" + name.upper(): token for name, token in _SHORT_NAMES.items()},
}

# Architectures whose syscall tables libseccomp has; a name it resolves on any of them is a real syscall.
_RESOLVABLE_ARCHES: tuple[int, ...] = tuple(
    token for token in _SHORT_NAMES.values() if token not in (_ARCH_LOONGARCH64, _ARCH_SH, _ARCH_SHEB)
)

# Real Linux syscalls newer than the syscall table of the libseccomp we link (2.5.4 on Debian 12), with
# the kernel release that added them. Docker's default profile allows them, so refusing them as unknown
# would refuse that profile; libseccomp cannot compile a rule for them, so such a rule is skipped at load
# when skipping is fail-closed (see seccomp.py), exactly as Docker skips names libseccomp cannot resolve.
# A newer libseccomp resolves them itself and this table is then never consulted for them.
NEWER_THAN_LIBSECCOMP: dict[str, str] = {
    "riscv_hwprobe": "6.4 (riscv64 only)",
    "statmount": "6.8",
    "listmount": "6.8",
    "lsm_get_self_attr": "6.8",
    "lsm_set_self_attr": "6.8",
    "lsm_list_modules": "6.8",
    "mseal": "6.10",
    "uretprobe": "6.11 (x86_64 only)",
    "setxattrat": "6.13",
    "getxattrat": "6.13",
    "listxattrat": "6.13",
    "removexattrat": "6.13",
    "open_tree_attr": "6.15",
    "file_getattr": "6.17",
    "file_setattr": "6.17",
}

# libseccomp's answer for a name it does not know on an arch (__NR_SCMP_ERROR). Other negative numbers
# are its pseudo-syscalls: names real on another arch, which it drops from filters for arches without them.
_NR_SCMP_ERROR = -1


def arch_token(name: str) -> int | None:
    """The libseccomp token for an architecture name in any of the three spellings, None if unknown."""
    return ARCH_TOKENS.get(name)


def native_arch() -> int:
    return int(pyseccomp.system_arch())


def arch_display_name(token: int) -> str:
    for name, value in _SHORT_NAMES.items():
        if value == token:
            return name
    return hex(token)


def native_syscall_number(name: str) -> int | None:
    """The number libseccomp uses for ``name`` when adding a rule on the native arch (a real number or
    a negative pseudo-syscall number), or None when libseccomp cannot express it at all."""
    nr = int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))
    return None if nr == _NR_SCMP_ERROR else nr


def is_libseccomp_syscall(name: str) -> bool:
    """Whether libseccomp knows ``name`` as a syscall on at least one architecture."""
    return any(int(pyseccomp.resolve_syscall(arch, name)) != _NR_SCMP_ERROR for arch in _RESOLVABLE_ARCHES)


def syscall_name(nr: int) -> str:
    """The name of native syscall ``nr`` (as reported in a SIGSYS siginfo), ``"syscall_<nr>"`` if unknown."""
    try:
        name: bytes = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, nr)
        return name.decode()
    except ValueError:
        return f"syscall_{nr}"


_X32_SYSCALL_BIT = 0x40000000


def describe_kill(arch: int, nr: int) -> tuple[str, str]:
    """``(abi, name)`` of syscall ``nr`` made through ``arch`` (an ``AUDIT_ARCH_*`` as ptrace reports it),
    named from that ABI's own table: i386's 310 is ``unshare``, not x86_64's ``process_vm_readv``."""
    token = arch
    if arch == _A.X86_64 and nr & _X32_SYSCALL_BIT:
        token = _A.X32
    abi = arch_display_name(token)
    for candidate in (nr, nr & ~_X32_SYSCALL_BIT):
        try:
            name: bytes = pyseccomp.resolve_syscall(token, candidate)
            return abi, name.decode()
        except ValueError:
            continue
    return abi, f"syscall_{nr}"
