"""Seccomp profiles: load an OCI/Docker JSON profile, resolve it for this host, compile it to BPF once.

Parent side only. The flow is ``load_profile`` (parse + resolve includes/excludes) -> ``compile_bpf``
(libseccomp -> raw ``struct sock_filter`` bytes), both behind ``ProfileCache`` which recompiles only when
a file's content changes. The child installs the bytes with ``install_bpf`` (``seccomp_install``), which
needs neither libseccomp nor this module at call time.

Semantics follow Docker/runc so that Docker's profiles mean here what they mean there:
- ``includes``/``excludes`` are resolved at load against the sandbox's capabilities (none: handlers run
  with an empty capability set), the native arch and the running kernel's major.minor.
- Several ``args`` on the same index are OR-ed (one libseccomp rule each), as runc does; otherwise a
  rule's args are AND-ed. ``SCMP_CMP_MASKED_EQ`` takes ``value`` as the mask and ``valueTwo`` as datum.
- A rule whose action equals the default action is skipped (libseccomp refuses it; it changes nothing).
- A syscall name libseccomp knows on some arch but not this one is skipped for this arch. A name it
  knows on no arch is an error, unless it is a real syscall newer than libseccomp's table
  (``seccomp_names.NEWER_THAN_LIBSECCOMP``): that one is skipped when skipping is fail-closed (an ALLOW
  rule under a denying default) and refused otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyseccomp

from sandboxd.base.errors import ProfileError
from sandboxd.engine.seccomp import names as seccomp_names
from sandboxd.engine.seccomp.install import check_bpf_length, install_bpf
from sandboxd.engine.seccomp.names import syscall_name
from sandboxd.engine.seccomp.parse import ArgCondition, Rule, parse_document

__all__ = [
    "ArgCondition",
    "CompiledProfile",
    "Profile",
    "ProfileCache",
    "ResolveContext",
    "Rule",
    "compile_bpf",
    "install_bpf",
    "load_profile",
    "parse_kernel_release",
    "parse_profile",
    "profile_digest",
    "syscall_name",
]

# Bumped when resolution or compilation changes meaning, so cached digests from an older build never match.
_DIGEST_FORMAT = b"sandboxd-seccomp-v2"  # v2: large profiles laid out as a binary tree
BINARY_TREE_MIN_RULES = 8  # runc's threshold: below it a tree saves nothing


@dataclass(frozen=True)
class ResolveContext:
    """What a profile's ``includes``/``excludes`` are resolved against."""

    arch: int  # libseccomp token of the arch the filter is for
    kernel: tuple[int, int]  # (major, minor) of the running kernel
    caps: frozenset[str] = frozenset()  # the sandbox's capabilities: none

    @classmethod
    def native(cls) -> ResolveContext:
        return cls(arch=seccomp_names.native_arch(), kernel=parse_kernel_release(os.uname().release))

    def digest_input(self) -> bytes:
        caps = ",".join(sorted(self.caps))
        return f"arch={self.arch:#x};kernel={self.kernel[0]}.{self.kernel[1]};caps={caps}".encode()


@dataclass(frozen=True)
class Profile:
    """A profile resolved for one ``ResolveContext``: only the rules that apply here remain."""

    path: Path
    name: str  # the file's stem: "default" for default.json
    digest: str  # sha256 hex of the file's bytes and the resolution inputs
    arch: int  # the context's arch; the filter always covers it
    default_action: int  # libseccomp action, errno folded in
    arches: tuple[int, ...]  # extra arches (sub-architectures) the filter also covers
    rules: tuple[Rule, ...]
    skipped_syscalls: tuple[str, ...]  # names libseccomp cannot filter (newer than its table)


@dataclass(frozen=True)
class CompiledProfile:
    name: str
    digest: str
    bpf: bytes  # array of 8-byte struct sock_filter, ready for install_bpf


def parse_kernel_release(release: str) -> tuple[int, int]:
    """(major, minor) of a release string such as ``6.1.0-18-amd64``, as Docker compares minKernel."""
    match = re.match(r"(\d+)(?:\.(\d+))?", release)
    if match is None:
        raise ValueError(f"cannot parse kernel release {release!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def profile_digest(data: bytes, context: ResolveContext) -> str:
    h = hashlib.sha256(_DIGEST_FORMAT)
    h.update(b"\0" + context.digest_input() + b"\0")
    h.update(data)
    return h.hexdigest()


def load_profile(path: str | os.PathLike[str], context: ResolveContext | None = None) -> Profile:
    """Read, validate and resolve the profile at ``path``; ProfileError names the file and the rule."""
    path = Path(path)
    return parse_profile(path, _read(path), context or ResolveContext.native())


def parse_profile(path: Path, data: bytes, context: ResolveContext) -> Profile:
    try:
        document: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"seccomp profile {path}: invalid JSON: {e}") from None
    parsed = parse_document(str(path), document, context.arch, context.kernel, context.caps)
    return Profile(
        path=path,
        name=path.stem,
        digest=profile_digest(data, context),
        arch=context.arch,
        default_action=parsed.default_action,
        arches=tuple(a for a in parsed.arches if a != context.arch),
        rules=parsed.rules,
        skipped_syscalls=parsed.skipped_syscalls,
    )


def compile_bpf(profile: Profile, *, binary_tree: bool | None = None) -> bytes:
    """Compile ``profile`` with libseccomp and return the raw BPF program.

    ``binary_tree``: lay the syscalls out as a binary tree (libseccomp's ``SCMP_FLTATR_CTL_OPTIMIZE = 2``);
    by default when the profile has ``BINARY_TREE_MIN_RULES`` or more, as runc does. The decisions are the
    same; a syscall walks O(log n) instructions, not O(n) — and the kernel, which runs the filter over every
    syscall number when a sandbox installs it (its cache of always-allowed syscalls), does so in half the time
    for the default profile."""
    native = seccomp_names.native_arch()
    if profile.arch != native:
        raise ProfileError(
            f"seccomp profile {profile.path}: resolved for arch "
            f"{seccomp_names.arch_display_name(profile.arch)}, cannot compile on "
            f"{seccomp_names.arch_display_name(native)}"
        )
    where = f"seccomp profile {profile.path}"
    try:
        flt = pyseccomp.SyscallFilter(profile.default_action)
        # We set no_new_privs ourselves in the child; only export_bpf is used, but say so explicitly.
        flt.set_attr(pyseccomp.Attr.CTL_NNP, 0)
        # A syscall from an arch the filter does not cover (e.g. int 0x80 on x86_64) kills the whole
        # process, not just the thread (libseccomp's default), so it is reported and cannot be retried.
        flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
        for arch in profile.arches:
            flt.add_arch(arch)
    except OSError as e:
        raise ProfileError(
            f"{where}: libseccomp refused default action {_action_text(profile.default_action)} "
            f"or the architectures: {e.strerror}"
        ) from None
    rules_added = 0
    for rule in profile.rules:
        if rule.action == profile.default_action:
            continue
        for name in rule.names:
            nr = seccomp_names.native_syscall_number(name)
            if nr is None:
                continue  # validated at load: a name this libseccomp cannot express, skipped fail-closed
            rules_added += 1
            for conditions in rule.condition_sets():
                args = [pyseccomp.Arg(c.index, c.op, c.value, c.value_two) for c in conditions]
                try:
                    flt.add_rule(rule.action, nr, *args)
                except OSError as e:
                    raise ProfileError(
                        f"{where}: {rule.describe()}: libseccomp refused {name!r} with action "
                        f"{_action_text(rule.action)}: {e.strerror}"
                    ) from None
    if binary_tree is None:
        binary_tree = rules_added >= BINARY_TREE_MIN_RULES
    if binary_tree:  # not with no rules: libseccomp before 2.5.4 then ignored the default action (its issue #370)
        flt.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
    bpf = _export(flt, where)
    try:
        check_bpf_length(bpf)
    except ValueError as e:
        raise ProfileError(f"{where}: {e}") from None
    return bpf


class ProfileCache:
    """Compiled profiles by path, recompiled only when the file's content (or the host) changes."""

    def __init__(self, context: ResolveContext | None = None) -> None:
        self._context = context or ResolveContext.native()
        self._compiled: dict[Path, CompiledProfile] = {}
        # The daemon serves requests from several threads; compiling twice would be harmless but wasteful.
        self._lock = threading.Lock()

    def get(self, path: str | os.PathLike[str]) -> CompiledProfile:
        path = Path(path)
        data = _read(path)
        digest = profile_digest(data, self._context)
        with self._lock:
            cached = self._compiled.get(path)
            if cached is not None and cached.digest == digest:
                return cached
            profile = parse_profile(path, data, self._context)
            compiled = CompiledProfile(name=profile.name, digest=profile.digest, bpf=compile_bpf(profile))
            self._compiled[path] = compiled
            return compiled


def _action_text(action: int) -> str:
    # Errors from libseccomp are a bare EINVAL; naming the errno shows e.g. an errnoRet it will not take.
    if action & 0xFFFF0000 == pyseccomp.ERRNO(0):
        return f"SCMP_ACT_ERRNO({action & 0xFFFF})"
    return hex(action)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ProfileError(f"seccomp profile {path}: cannot read: {e.strerror or e}") from None


def _export(flt: pyseccomp.SyscallFilter, where: str) -> bytes:
    # export_bpf writes to a file descriptor; an anonymous temp file has no size limit (a pipe could
    # block a large filter) and leaves nothing behind.
    with tempfile.TemporaryFile() as out:
        try:
            flt.export_bpf(out)
        except OSError as e:
            raise ProfileError(f"{where}: libseccomp could not export BPF: {e}") from None
        out.seek(0)
        return out.read()
