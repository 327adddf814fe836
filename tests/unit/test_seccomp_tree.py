"""The binary-tree layout of a compiled filter decides every syscall exactly as the linear one does.

libseccomp lays a large filter out as a binary tree over syscall numbers (``SCMP_FLTATR_CTL_OPTIMIZE = 2``,
as runc does for eight rules or more): the kernel's per-syscall cache is built in fewer steps each time a
sandbox installs it, and each syscall the handler makes walks O(log n) instructions instead of O(n). The
layout must change nothing else. Here both programs run in a small classic-BPF interpreter over every
syscall number of every architecture the filter names, with argument values at and around the profiles' own.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pyseccomp
import pytest

from sandboxd.engine.seccomp.profile import Profile, ProfileCache, compile_bpf, load_profile

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO_ROOT / "sandboxd" / "data" / "seccomp-profiles").glob("*.json"))
MOBY = REPO_ROOT / ".." / "shared" / "data" / "seccomp" / "moby-default.json"
X32_BIT = 0x4000_0000
SYSCALL_NUMBERS = 1024  # above every arch's highest

# classic BPF, the subset a seccomp filter can hold (linux/filter.h)
LD_W_ABS, LD_MEM, LDX_MEM, ST, STX = 0x20, 0x60, 0x61, 0x02, 0x03
ALU_AND_K, ALU_OR_K, TAX, TXA = 0x54, 0x44, 0x07, 0x87
JA, JEQ_K, JGT_K, JGE_K, JSET_K = 0x05, 0x15, 0x25, 0x35, 0x45
RET_K, RET_A = 0x06, 0x16


def run(program: list[tuple[int, int, int, int]], data: bytes) -> int:
    """What the filter returns for the ``struct seccomp_data`` in ``data``."""
    a = x = pc = 0
    memory = [0] * 16
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == LD_W_ABS:
            a = struct.unpack_from("<I", data, k)[0]
        elif code == LD_MEM:
            a = memory[k]
        elif code == LDX_MEM:
            x = memory[k]
        elif code == ST:
            memory[k] = a
        elif code == STX:
            memory[k] = x
        elif code == ALU_AND_K:
            a &= k
        elif code == ALU_OR_K:
            a |= k
        elif code == TAX:
            x = a
        elif code == TXA:
            a = x
        elif code == JA:
            pc += k
        elif code in (JEQ_K, JGT_K, JGE_K, JSET_K):
            taken = {JEQ_K: a == k, JGT_K: a > k, JGE_K: a >= k, JSET_K: a & k != 0}[code]
            pc += jt if taken else jf
        elif code == RET_K:
            return k
        elif code == RET_A:
            return a
        else:
            raise AssertionError(f"instruction {code:#x} at {pc - 1} is not interpreted here")


def instructions(bpf: bytes) -> list[tuple[int, int, int, int]]:
    return list(struct.iter_unpack("<HBBI", bpf))


def argument_values(profile: Profile) -> list[int]:
    """The values the profile compares arguments with, each ±1, and a few of every width."""
    values = {0, 1, 2, 0xFFFF_FFFF, 0x1_0000_0000, 0xFFFF_FFFF_FFFF_FFFF}
    for rule in profile.rules:
        for conditions in rule.condition_sets():
            for condition in conditions:
                for value in (condition.value, condition.value_two):
                    values.update({value, (value + 1) % 2**64, (value - 1) % 2**64})
    return sorted(values)


def cases(profile: Profile) -> list[bytes]:
    arches = [profile.arch, *profile.arches]
    values = argument_values(profile)
    rng = random.Random(profile.path.name)
    found = []
    for arch in arches:
        numbers = list(range(SYSCALL_NUMBERS))
        if arch == pyseccomp.Arch.X86_64:
            numbers += [X32_BIT + nr for nr in range(SYSCALL_NUMBERS)]
        for nr in numbers:
            for _ in range(3):
                args = [rng.choice(values) for _ in range(6)]
                found.append(struct.pack("<iIQ6Q", nr, arch, 0, *args))
    return found


@pytest.mark.parametrize("path", [*SHIPPED, MOBY], ids=lambda path: path.name)
def test_the_tree_decides_every_syscall_as_the_linear_filter(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path} is absent (Docker's profiles are third-party test data)")
    profile = load_profile(path)
    linear = instructions(compile_bpf(profile, binary_tree=False))
    tree = instructions(compile_bpf(profile, binary_tree=True))
    assert tree != linear
    decisions = set()
    for data in cases(profile):
        decision = run(linear, data)
        assert run(tree, data) == decision, struct.unpack("<iIQ6Q", data)
        decisions.add(decision)
    assert len(decisions) >= 2  # allowed and refused both met: the cases reach the rules


def test_a_large_profile_is_laid_out_as_a_tree_and_a_small_one_is_not(tmp_path: Path) -> None:
    default = ProfileCache().get(SHIPPED[0]).bpf
    assert default == compile_bpf(load_profile(SHIPPED[0]), binary_tree=True)
    small = tmp_path / "small.json"
    small.write_text('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "write", "exit"], '
                     '"action": "SCMP_ACT_ALLOW"}]}')
    assert ProfileCache().get(small).bpf == compile_bpf(load_profile(small), binary_tree=False)
