"""Seccomp profile loading, resolution and compilation (no root: nothing is installed)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pyseccomp
import pytest

from sandboxd.base.errors import ProfileError
from sandboxd.engine.seccomp import names as seccomp_names
from sandboxd.engine.seccomp.install import check_bpf_length, install_bpf
from sandboxd.engine.seccomp.profile import (
    ProfileCache,
    ResolveContext,
    compile_bpf,
    load_profile,
    parse_kernel_release,
    syscall_name,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROFILE = REPO_ROOT / "seccomp-profiles" / "default.json"
X86_64 = pyseccomp.Arch.X86_64
AARCH64 = pyseccomp.Arch.AARCH64
NO_CAPS = frozenset[str]()


def shared_seccomp_dir() -> Path:
    env = os.environ.get("SANDBOXD_SHARED_DATA")
    base = Path(env) if env else REPO_ROOT / ".." / "shared" / "data"
    directory = base / "seccomp"
    if not (directory / "moby-default.json").is_file():
        pytest.skip(f"Docker's seccomp profiles not found in {directory} (set SANDBOXD_SHARED_DATA)")
    return directory


def write(tmp_path: Path, profile: Any, name: str = "p.json") -> Path:
    path = tmp_path / name
    path.write_text(profile if isinstance(profile, str) else json.dumps(profile))
    return path


def ctx(
    arch: int = X86_64, kernel: tuple[int, int] = (6, 1), caps: frozenset[str] = NO_CAPS
) -> ResolveContext:
    return ResolveContext(arch=arch, kernel=kernel, caps=caps)


def names_of(path: Path, context: ResolveContext | None = None) -> set[str]:
    return {n for rule in load_profile(path, context or ctx()).rules for n in rule.names}


ALLOW_GETPID = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}],
}


# --- parsing ----------------------------------------------------------------------------------------------


def test_parses_actions_errno_and_args(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "comment": "unknown top-level keys are ignored, as Docker does",
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 13,
            "syscalls": [
                {"names": ["getpid", "gettid"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 2},
                {"names": ["chdir"], "action": "SCMP_ACT_ERRNO"},
                {"name": "kill", "action": "SCMP_ACT_KILL"},
                {"names": ["tkill"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["tgkill"], "action": "SCMP_ACT_KILL_THREAD"},
                {"names": ["uname"], "action": "SCMP_ACT_TRAP"},
                {"names": ["getuid"], "action": "SCMP_ACT_LOG"},
                {
                    "names": ["socket"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [
                        {"index": 0, "value": 40, "op": "SCMP_CMP_NE"},
                        {"index": 1, "value": 0xFF, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"},
                    ],
                },
            ],
        },
    )
    profile = load_profile(path, ctx())
    assert profile.name == "p"
    assert profile.path == path
    assert len(profile.digest) == 64
    assert profile.default_action == pyseccomp.ERRNO(13)
    actions = [r.action for r in profile.rules]
    assert actions == [
        pyseccomp.ALLOW,
        pyseccomp.ERRNO(2),
        pyseccomp.ERRNO(13),  # no errnoRet: the profile's defaultErrnoRet
        pyseccomp.KILL_THREAD,  # SCMP_ACT_KILL kills the thread, as in libseccomp and Docker
        pyseccomp.KILL_PROCESS,
        pyseccomp.KILL_THREAD,
        pyseccomp.TRAP,
        pyseccomp.LOG,
        pyseccomp.ALLOW,
    ]
    assert profile.rules[3].names == ("kill",)
    socket_args = profile.rules[-1].args
    assert [(a.index, a.op, a.value, a.value_two) for a in socket_args] == [
        (0, pyseccomp.NE, 40, 0),
        (1, pyseccomp.MASKED_EQ, 0xFF, 1),
    ]
    assert profile.rules[-1].condition_sets() == (socket_args,)  # distinct indexes: one AND-ed rule


def test_errno_defaults_to_eperm(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]},
    )
    profile = load_profile(path, ctx())
    assert profile.default_action == pyseccomp.ERRNO(errno.EPERM)
    assert profile.rules[0].action == pyseccomp.ERRNO(errno.EPERM)


def test_same_index_args_are_ored_like_runc(tmp_path: Path) -> None:
    args = [{"index": 0, "value": v, "valueTwo": v, "op": "SCMP_CMP_MASKED_EQ"} for v in (1, 2)]
    path = write(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["clone"], "action": "SCMP_ACT_KILL", "args": args}],
        },
    )
    rule = load_profile(path, ctx()).rules[0]
    assert rule.condition_sets() == ((rule.args[0],), (rule.args[1],))


# --- errors name the file and the rule ------------------------------------------------------------------

BAD_RULES: list[tuple[dict[str, Any], str]] = [
    ({"names": ["frobnicate"], "action": "SCMP_ACT_ALLOW"}, 'unknown syscall "frobnicate"'),
    ({"names": ["getpid"], "action": "SCMP_ACT_FROB"}, 'unknown action "SCMP_ACT_FROB"'),
    (
        {
            "names": ["getpid"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}],
        },
        'unknown op "SCMP_CMP_XX"',
    ),
    (
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["vax"]}},
        'unknown arch "vax"',
    ),
    (
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1},
        "errnoRet is only valid with SCMP_ACT_ERRNO",
    ),
    (
        {
            "names": ["getpid"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}],
        },
        "args[0]: index: 6 is out of range 0..5",
    ),
    (
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "op": "SCMP_CMP_EQ"}]},
        'missing key "value"',
    ),
    ({"names": ["getpid"], "action": 7}, "action: expected a string, got an integer"),
    (
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "new"}},
        "minKernel: expected a kernel",
    ),
]


@pytest.mark.parametrize(("rule", "message"), BAD_RULES)
def test_rule_errors_name_file_and_rule(tmp_path: Path, rule: dict[str, Any], message: str) -> None:
    path = write(
        tmp_path, {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ALLOW_GETPID["syscalls"][0], rule]}
    )
    with pytest.raises(ProfileError) as info:
        load_profile(path, ctx())
    text = str(info.value)
    assert text.startswith(f"seccomp profile {path}: syscalls[1] (names ")
    assert message in text
    assert info.value.reason == "PROFILE_INVALID"


def test_unknown_syscall_message_exact(tmp_path: Path) -> None:
    rules = [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}] * 3 + [
        {"names": ["frobnicate"], "action": "SCMP_ACT_ALLOW"}
    ]
    path = write(tmp_path, {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": rules})
    with pytest.raises(ProfileError) as info:
        load_profile(path, ctx())
    assert (
        str(info.value)
        == f'seccomp profile {path}: syscalls[3] (names ["frobnicate"]): unknown syscall "frobnicate"'
    )


def test_unknown_syscall_in_a_dropped_rule_is_still_an_error(tmp_path: Path) -> None:
    rule = {"names": ["frobnicate"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}
    path = write(tmp_path, {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule]})
    with pytest.raises(ProfileError, match=r'syscalls\[0\] \(names \["frobnicate"\]\): unknown syscall'):
        load_profile(path, ctx())


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[]", "top level: expected an object, got a list"),
        ({"syscalls": []}, 'missing key "defaultAction"'),
        ({"defaultAction": "SCMP_ACT_NOPE"}, 'defaultAction: unknown action "SCMP_ACT_NOPE"'),
        ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "1"}, "defaultErrnoRet: expected an integer"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}, "defaultErrnoRet is only valid"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {}}, "syscalls: expected a list, got an object"),
        (
            {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]},
            'syscalls[0]: missing key "names"',
        ),
        (
            {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_VAX"]},
            'architectures[0]: unknown arch "SCMP_ARCH_VAX"',
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["z80"]}],
            },
            'archMap[0].subArchitectures[0]: unknown arch "z80"',
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64"],
                "archMap": [{"architecture": "SCMP_ARCH_X86_64"}],
            },
            "both architectures and archMap",
        ),
    ],
)
def test_document_errors_name_file_and_key(tmp_path: Path, profile: Any, message: str) -> None:
    path = write(tmp_path, profile)
    with pytest.raises(ProfileError) as info:
        load_profile(path, ctx())
    assert str(info.value).startswith(f"seccomp profile {path}: ")
    assert message in str(info.value)


def test_missing_file_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"nope\.json: cannot read"):
        load_profile(tmp_path / "nope.json", ctx())


# --- syscall names libseccomp knows only elsewhere, or not yet ------------------------------------------


def test_name_of_another_arch_is_skipped_not_an_error(tmp_path: Path) -> None:
    # socketcall exists only on 32-bit arches, arm_fadvise64_64 only on arm: known, so not an error.
    path = write(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["getpid", "socketcall", "arm_fadvise64_64"], "action": "SCMP_ACT_ALLOW"}],
        },
    )
    assert len(compile_bpf(load_profile(path))) % 8 == 0


def test_newer_than_libseccomp_is_skipped_only_when_fail_closed(tmp_path: Path) -> None:
    if seccomp_names.native_syscall_number("mseal") is not None:
        pytest.skip("this libseccomp knows mseal")
    allow = write(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["getpid", "mseal"], "action": "SCMP_ACT_ALLOW"}],
        },
    )
    profile = load_profile(allow, ctx())
    assert profile.skipped_syscalls == ("mseal",)
    assert profile.rules[0].names == ("getpid",)

    # Skipping a deny rule under an allowing default would let the syscall through: refuse the profile.
    deny = write(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mseal"], "action": "SCMP_ACT_KILL_PROCESS"}],
        },
        "deny.json",
    )
    with pytest.raises(ProfileError, match=r'syscalls\[0\] \(names \["mseal"\]\): syscall "mseal" .* newer'):
        load_profile(deny, ctx())


# --- includes / excludes ----------------------------------------------------------------------------------

CONDITIONAL = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["syslog"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYSLOG"]}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["modify_ldt"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["SCMP_ARCH_X86_64"]}},
        {"names": ["sync_file_range2"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
        {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["x86_64"]}},
        {"names": ["process_vm_readv"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        {"names": ["process_vm_writev"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "6.10"}},
        {"names": ["kcmp"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5"}},
    ],
}


def test_includes_excludes_without_caps_on_amd64_kernel_6_1(tmp_path: Path) -> None:
    names = names_of(write(tmp_path, CONDITIONAL), ctx(X86_64, (6, 1)))
    assert names == {"getpid", "ptrace", "arch_prctl", "modify_ldt", "process_vm_readv"}


def test_includes_excludes_on_arm64_old_kernel_with_caps(tmp_path: Path) -> None:
    context = ctx(AARCH64, (4, 4), frozenset({"CAP_SYSLOG", "CAP_SYS_ADMIN"}))
    assert names_of(write(tmp_path, CONDITIONAL), context) == {
        "getpid",
        "syslog",
        "sync_file_range2",
        "chown",
        "kcmp",
    }


def test_includes_caps_need_all_listed_caps(tmp_path: Path) -> None:
    rule = {
        "names": ["syslog"],
        "action": "SCMP_ACT_ALLOW",
        "includes": {"caps": ["CAP_SYSLOG", "CAP_SYS_ADMIN"]},
    }
    path = write(tmp_path, {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule]})
    assert names_of(path, ctx(caps=frozenset({"CAP_SYSLOG"}))) == set()
    assert names_of(path, ctx(caps=frozenset({"CAP_SYSLOG", "CAP_SYS_ADMIN"}))) == {"syslog"}


def test_arch_map_picks_the_native_entry(tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
            {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": None},
        ],
    }
    path = write(tmp_path, profile)
    assert load_profile(path, ctx(X86_64)).arches == (pyseccomp.Arch.X86, pyseccomp.Arch.X32)
    assert load_profile(path, ctx(AARCH64)).arches == (pyseccomp.Arch.ARM,)
    assert load_profile(path, ctx(pyseccomp.Arch.RISCV64)).arches == ()


def test_kernel_release_parsing() -> None:
    assert parse_kernel_release("6.1.0-18-amd64") == (6, 1)
    assert parse_kernel_release("5.15.0-1051-azure") == (5, 15)
    assert parse_kernel_release("6") == (6, 0)


def test_digest_depends_on_resolution_inputs(tmp_path: Path) -> None:
    path = write(tmp_path, CONDITIONAL)
    assert load_profile(path, ctx(kernel=(6, 1))).digest != load_profile(path, ctx(kernel=(4, 4))).digest
    assert load_profile(path, ctx()).digest == load_profile(path, ctx()).digest


# --- compilation and cache --------------------------------------------------------------------------------


def test_compile_gives_whole_instructions(tmp_path: Path) -> None:
    bpf = compile_bpf(load_profile(write(tmp_path, ALLOW_GETPID)))
    assert len(bpf) % 8 == 0
    assert check_bpf_length(bpf) == len(bpf) // 8


def test_compile_refuses_profile_resolved_for_another_arch(tmp_path: Path) -> None:
    other = AARCH64 if seccomp_names.native_arch() != AARCH64 else X86_64
    with pytest.raises(ProfileError, match="resolved for arch"):
        compile_bpf(load_profile(write(tmp_path, ALLOW_GETPID), ctx(other)))


def test_cache_reuses_and_recompiles_on_change(tmp_path: Path) -> None:
    path = write(tmp_path, ALLOW_GETPID)
    cache = ProfileCache()
    first = cache.get(path)
    again = cache.get(str(path))
    assert again is first  # same content: no recompilation
    assert first.name == "p"
    assert len(first.bpf) % 8 == 0

    changed = {**ALLOW_GETPID, "syscalls": [{"names": ["getpid", "getppid"], "action": "SCMP_ACT_ALLOW"}]}
    write(tmp_path, changed)
    updated = cache.get(path)
    assert updated.digest != first.digest
    assert updated.bpf != first.bpf
    assert cache.get(path) is updated


def test_cache_reports_profile_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["nope"], "action": "SCMP_ACT_ALLOW"}]},
    )
    with pytest.raises(ProfileError, match='unknown syscall "nope"'):
        ProfileCache().get(path)


def test_install_validates_length_before_any_syscall() -> None:
    with pytest.raises(ValueError, match="8-byte"):
        install_bpf(b"\0" * 12)
    with pytest.raises(ValueError, match="8-byte"):
        install_bpf(b"")
    with pytest.raises(ValueError, match="at most 4096"):
        install_bpf(b"\0" * 8 * 4097)


def test_syscall_name() -> None:
    if seccomp_names.native_arch() != X86_64:
        pytest.skip("syscall numbers below are x86_64's")
    assert syscall_name(110) == "getppid"
    assert syscall_name(165) == "mount"
    assert syscall_name(99999) == "syscall_99999"


def test_arch_names_in_three_spellings() -> None:
    assert seccomp_names.arch_token("amd64") == seccomp_names.arch_token("x86_64") == X86_64
    assert seccomp_names.arch_token("SCMP_ARCH_X86_64") == X86_64
    assert seccomp_names.arch_token("386") == seccomp_names.arch_token("SCMP_ARCH_X86")
    assert seccomp_names.arch_token("vax") is None


# --- shipped and third-party profiles ---------------------------------------------------------------------


def test_default_profile_decisions() -> None:
    profile = load_profile(DEFAULT_PROFILE)
    assert profile.default_action == pyseccomp.ERRNO(errno.EPERM)
    action_of: dict[str, set[int]] = {}
    for rule in profile.rules:
        for name in rule.names:
            action_of.setdefault(name, set()).add(rule.action)
    killed = {
        "mount", "umount2", "unshare", "setns", "ptrace", "bpf", "perf_event_open", "kexec_load",
        "kexec_file_load", "init_module", "finit_module", "delete_module", "keyctl", "add_key",
        "request_key", "pivot_root", "swapon", "swapoff", "reboot", "open_by_handle_at",
    }  # fmt: skip
    for name in killed:
        assert action_of[name] == {pyseccomp.KILL_PROCESS}, name
    for name in ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert action_of[name] == {pyseccomp.ERRNO(errno.ENOSYS)}, name
    assert action_of["userfaultfd"] == {pyseccomp.ERRNO(errno.EPERM)}
    assert action_of["clone"] == {pyseccomp.ALLOW, pyseccomp.KILL_PROCESS}
    (kill_clone,) = [r for r in profile.rules if r.names == ("clone",) and r.action == pyseccomp.KILL_PROCESS]
    assert sorted(a.value for a in kill_clone.args) == sorted(1 << b for b in (17, 25, 26, 27, 28, 29, 30))
    assert all(a.op == pyseccomp.MASKED_EQ and a.value == a.value_two for a in kill_clone.args)
    for name in ("read", "write", "execve", "openat", "mmap", "futex", "wait4", "exit_group"):
        assert action_of[name] == {pyseccomp.ALLOW}, name
    assert len(compile_bpf(profile)) % 8 == 0


def test_moby_default_loads_unmodified_and_compiles() -> None:
    path = shared_seccomp_dir() / "moby-default.json"
    profile = load_profile(path)
    names = {n for r in profile.rules for n in r.names}
    # No capabilities: CAP_SYS_ADMIN's rules are dropped, the excludes-CAP_SYS_ADMIN clone rules are kept.
    assert "mount" not in names
    assert "clone3" in names
    assert "syslog" not in names
    assert len(compile_bpf(profile)) % 8 == 0
    assert ProfileCache().get(path).bpf == compile_bpf(profile)


@pytest.mark.parametrize(
    "fixture",
    [
        "moby-fixture-example.json",
        "moby-fixture-conditional_include.json",
        "moby-fixture-default-old-format.json",
    ],
)
def test_moby_fixtures_load(fixture: str) -> None:
    profile = load_profile(shared_seccomp_dir() / fixture)
    assert profile.rules


def test_moby_conditional_include_without_caps() -> None:
    profile = load_profile(shared_seccomp_dir() / "moby-fixture-conditional_include.json")
    assert [r.names for r in profile.rules] == [("chmod",), ("ptrace",)]
