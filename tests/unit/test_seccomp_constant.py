"""Which syscalls a filter always allows (the kernel's seccomp_is_const_allow, in Python): what decides whether
a pooled sandbox may install its filter before its gate. A guess that allows would let the launch run into the
filter, so everything the emulation cannot follow answers "not always"."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from sandboxd.engine.seccomp import names
from sandboxd.engine.seccomp.constant import (
    LAUNCH_AFTER_GATE,
    SECCOMP_RET_ALLOW,
    allows_launch_after_gate,
    always_allows,
)
from sandboxd.engine.seccomp.profile import ProfileCache

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO_ROOT / "sandboxd" / "data" / "seccomp-profiles").glob("*.json"))
ARCH = names.native_arch()
SECCOMP_RET_KILL_PROCESS = 0x8000_0000
SECCOMP_RET_ERRNO_EPERM = 0x0005_0001


def nr(name: str) -> int:
    number = names.native_syscall_number(name)
    assert number is not None and number >= 0
    return number


def program(*instructions: tuple[int, int, int, int]) -> bytes:
    return b"".join(struct.pack("<HBBI", *instruction) for instruction in instructions)


def only_allowing(allowed: int, *, read_argument: bool = False) -> bytes:
    """arch check; syscall `allowed` allowed (after looking at its first argument if `read_argument`); the rest
    killed."""
    return program(
        (0x20, 0, 0, 4),  # ld [arch]
        (0x15, 1, 0, ARCH),  # jeq ARCH
        (0x06, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (0x20, 0, 0, 16 if read_argument else 0),  # ld [args[0]] or ld [nr]
        (0x15, 0, 1, allowed if not read_argument else 0),  # jeq
        (0x06, 0, 0, SECCOMP_RET_ALLOW),
        (0x06, 0, 0, SECCOMP_RET_KILL_PROCESS),
    )


def profile_bpf(tmp_path: Path, document: dict[str, object]) -> bytes:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(document))
    return ProfileCache().get(path).bpf


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_profile_lets_a_pooled_sandbox_install_it_before_its_gate(path: Path) -> None:
    bpf = ProfileCache().get(path).bpf
    assert allows_launch_after_gate(bpf)
    assert not always_allows(bpf, ARCH, nr("mount")) and not always_allows(bpf, ARCH, nr("ptrace"))


def test_a_syscall_allowed_by_number_alone_is_always_allowed() -> None:
    bpf = only_allowing(nr("read"))
    assert always_allows(bpf, ARCH, nr("read"))
    assert not always_allows(bpf, ARCH, nr("write"))  # killed
    assert not always_allows(bpf, ARCH ^ 1, nr("read"))  # another arch: killed


def test_a_syscall_allowed_after_a_look_at_its_arguments_is_not() -> None:
    assert not always_allows(only_allowing(nr("read"), read_argument=True), ARCH, nr("read"))


def test_an_instruction_the_emulation_does_not_follow_answers_no() -> None:
    load_x = (0x01, 0, 0, 0)  # ldx #0: never in the kernel's constant test
    assert not always_allows(program(load_x, (0x06, 0, 0, SECCOMP_RET_ALLOW)), ARCH, nr("read"))
    assert not always_allows(program((0x05, 0, 0, 7)), ARCH, nr("read"))  # a jump out of the program


def test_a_filter_refusing_one_launch_syscall_keeps_its_install_after_the_gate(tmp_path: Path) -> None:
    for name in LAUNCH_AFTER_GATE:
        bpf = profile_bpf(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW",
                                     "syscalls": [{"names": [name], "action": "SCMP_ACT_ERRNO"}]})
        assert not allows_launch_after_gate(bpf), name
    everything = profile_bpf(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW",
                                        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]})
    assert allows_launch_after_gate(everything)
    masked = profile_bpf(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["write"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 99, "op": "SCMP_CMP_EQ"}]}]})
    assert not allows_launch_after_gate(masked)  # write is allowed for most descriptors, not for every one
