"""Which syscalls a compiled filter allows whatever their arguments: the kernel's own test.

``kernel/seccomp.c``'s ``seccomp_is_const_allow`` decides, when a filter is installed, which syscall numbers
need not run the filter at all: it emulates the program with only ``nr`` and ``arch`` known, and gives up —
"not constant" — at the first instruction that reads anything else (an argument, the instruction pointer) or
that it does not model. This is the same emulation in Python, for the same purpose the other way round: to
know, before a sandbox is built, that the filter lets every syscall of a short piece of our own code through,
so that piece may run under it (``native/launch.c``, a pooled sandbox's launch after its gate).

Only what the kernel's emulation models is followed: ``ld [nr]``, ``ld [arch]``, ``and #k``, the jumps on a
constant, ``ret #k``. Anything else answers False: never a guess that allows.
"""

from __future__ import annotations

import functools
import struct

from sandboxd.engine.seccomp import names as seccomp_names

SECCOMP_RET_ALLOW = 0x7FFF_0000
_NR_OFFSET, _ARCH_OFFSET = 0, 4  # struct seccomp_data {int nr; __u32 arch; __u64 instruction_pointer; ...}
_LD_W_ABS, _ALU_AND_K, _RET_K = 0x20, 0x54, 0x06
_JA, _JEQ_K, _JGT_K, _JGE_K, _JSET_K = 0x05, 0x15, 0x25, 0x35, 0x45
_U32 = 0xFFFF_FFFF

# Every syscall of a pooled sandbox's launch from its gate to the handler's execve (native/launch.c: read the
# gate to its end and close it, find the handler with newfstatat and faccessat, execve — or write the failure
# to the error pipe and exit_group). Nothing else: no allocation, no prctl, no signal handler.
LAUNCH_AFTER_GATE = ("read", "close", "newfstatat", "faccessat", "execve", "write", "exit_group")


def always_allows(bpf: bytes, arch: int, nr: int) -> bool:
    """Whether the filter returns SECCOMP_RET_ALLOW for syscall ``nr`` of ``arch`` (an AUDIT_ARCH value,
    libseccomp's token) whatever its arguments and wherever it is called from."""
    program = list(struct.iter_unpack("<HBBI", bpf))
    a, pc = 0, 0
    for _ in range(len(program)):  # every jump is forward: no program runs longer than it is
        if not 0 <= pc < len(program):
            return False
        code, jt, jf, k = program[pc]
        pc += 1
        if code == _LD_W_ABS and k == _NR_OFFSET:
            a = nr & _U32
        elif code == _LD_W_ABS and k == _ARCH_OFFSET:
            a = arch & _U32
        elif code == _ALU_AND_K:
            a &= k
        elif code == _JA:
            pc += k
        elif code in (_JEQ_K, _JGT_K, _JGE_K, _JSET_K):
            taken = {_JEQ_K: a == k, _JGT_K: a > k, _JGE_K: a >= k, _JSET_K: a & k != 0}[code]
            pc += jt if taken else jf
        elif code == _RET_K:
            return bool(k == SECCOMP_RET_ALLOW)
        else:
            return False  # reads an argument or the instruction pointer, or is not modelled: not constant
    return False


@functools.lru_cache(maxsize=64)
def allows_launch_after_gate(bpf: bytes) -> bool:
    """Whether a pooled sandbox may install this filter before its gate: it always allows, on the native arch,
    every syscall the launch makes after the gate (``LAUNCH_AFTER_GATE``). False also when one of them has no
    number here."""
    arch = seccomp_names.native_arch()
    numbers = [seccomp_names.native_syscall_number(name) for name in LAUNCH_AFTER_GATE]
    return all(nr is not None and nr >= 0 and always_allows(bpf, arch, nr) for nr in numbers)
