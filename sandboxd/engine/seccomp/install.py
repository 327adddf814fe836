"""Child side of seccomp: install a filter the parent compiled, as the last step before ``execve``.

Runs in a freshly forked child, so it imports nothing, compiles nothing and loads no library at call
time: everything it needs (libc handle, struct layout) is set up when the parent imports this module.
The caller must have set no_new_privs first (``prctl(PR_SET_NO_NEW_PRIVS, 1)``); without it the kernel
refuses an unprivileged filter with EACCES. See Documentation/userspace-api/seccomp_filter.rst.
"""

from __future__ import annotations

import ctypes
import os

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
# One classic-BPF instruction is a ``struct sock_filter {u16 code; u8 jt; u8 jf; u32 k;}``.
SOCK_FILTER_BYTES = 8
# BPF_MAXINSNS: the kernel's limit on one filter's length.
BPF_MAX_INSTRUCTIONS = 4096


class _SockFprog(ctypes.Structure):
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}; ctypes pads as the C ABI does.
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int


def check_bpf_length(bpf: bytes) -> int:
    """The number of instructions in ``bpf``; ValueError if it is not a whole, loadable program."""
    if not bpf or len(bpf) % SOCK_FILTER_BYTES:
        raise ValueError(f"seccomp BPF of {len(bpf)} bytes is not a non-empty array of 8-byte instructions")
    count = len(bpf) // SOCK_FILTER_BYTES
    if count > BPF_MAX_INSTRUCTIONS:
        raise ValueError(
            f"seccomp BPF has {count} instructions, the kernel accepts at most {BPF_MAX_INSTRUCTIONS}"
        )
    return count


def install_bpf(bpf: bytes) -> None:
    """Install raw seccomp BPF on the calling thread; OSError (with errno) if the kernel refuses it."""
    count = check_bpf_length(bpf)
    # The buffer and struct live on this frame until prctl returns; the kernel copies the program.
    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = _SockFprog(count, ctypes.addressof(program))
    if _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER): {os.strerror(err)}")
