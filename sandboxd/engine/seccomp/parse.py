"""Validate a Docker/OCI seccomp profile document and resolve it for one host.

Every error names the file and where in it: the key path for structure errors, and for rule errors the
rule as ``syscalls[i] (names [...])`` so an operator can find it in a 400-line profile.
"""

from __future__ import annotations

import difflib
import errno
import json
import re
from dataclasses import dataclass
from typing import Any

import pyseccomp

from sandboxd.base.errors import ProfileError
from sandboxd.engine.seccomp import names as seccomp_names

# SCMP_ACT_KILL is libseccomp's (and Docker's) old name for killing the thread, not the process.
_ACTIONS: dict[str, int] = {
    "SCMP_ACT_ALLOW": pyseccomp.ALLOW,
    "SCMP_ACT_LOG": pyseccomp.LOG,
    "SCMP_ACT_TRAP": pyseccomp.TRAP,
    "SCMP_ACT_KILL": pyseccomp.KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": pyseccomp.KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": pyseccomp.KILL_PROCESS,
}
_ACT_ERRNO = "SCMP_ACT_ERRNO"
# Actions that let the syscall run. Skipping a rule granting one of these under a denying default only
# denies more: fail-closed. Anything else skipped would silently allow what the profile meant to stop.
_PERMITTING_ACTIONS = frozenset({pyseccomp.ALLOW, pyseccomp.LOG})
# SECCOMP_RET_DATA is 16 bits; the kernel clamps the errno it returns to MAX_ERRNO itself.
_MAX_ERRNO_RET = 0xFFFF

_OPS: dict[str, int] = {
    "SCMP_CMP_NE": pyseccomp.NE,
    "SCMP_CMP_LT": pyseccomp.LT,
    "SCMP_CMP_LE": pyseccomp.LE,
    "SCMP_CMP_EQ": pyseccomp.EQ,
    "SCMP_CMP_GE": pyseccomp.GE,
    "SCMP_CMP_GT": pyseccomp.GT,
    "SCMP_CMP_MASKED_EQ": pyseccomp.MASKED_EQ,
}
_MAX_ARG_INDEX = 5
_U64_MAX = 2**64 - 1

# Every key a profile may hold, where (Docker's and the OCI runtime spec's, plus "comment"): a key outside
# these is refused, never ignored — a misspelled "syscalls" would otherwise load a deny-list as allow-all.
_TOP_KEYS = frozenset({"defaultAction", "defaultErrnoRet", "architectures", "archMap", "syscalls", "comment",
                       "flags", "listenerPath", "listenerMetadata"})
_RULE_KEYS = frozenset({"names", "name", "action", "errnoRet", "args", "comment", "includes", "excludes"})
_ARG_KEYS = frozenset({"index", "value", "valueTwo", "op"})
_CONDITION_KEYS = frozenset({"caps", "arches", "minKernel"})
_ARCH_MAP_KEYS = frozenset({"architecture", "subArchitectures"})
# Known keys whose meaning sandboxd cannot honour: refused when they ask for anything.
_UNSUPPORTED_TOP_KEYS = ("flags", "listenerPath", "listenerMetadata")


@dataclass(frozen=True)
class ArgCondition:
    index: int  # syscall argument 0..5
    op: int  # pyseccomp comparison
    value: int  # for MASKED_EQ: the mask
    value_two: int  # for MASKED_EQ: the value the masked argument must equal


@dataclass(frozen=True)
class Rule:
    index: int  # position in the file's syscalls[], for messages
    names: tuple[str, ...]
    action: int  # libseccomp action, errno folded in
    args: tuple[ArgCondition, ...]

    def describe(self) -> str:
        return f"syscalls[{self.index}] (names {json.dumps(list(self.names))})"

    def condition_sets(self) -> tuple[tuple[ArgCondition, ...], ...]:
        """The libseccomp rules this rule becomes, as runc builds them: all args AND-ed in one rule,
        unless two name the same index; then each arg is its own rule (OR), since one libseccomp rule
        cannot compare an argument twice."""
        indexes = [a.index for a in self.args]
        if len(set(indexes)) == len(indexes):
            return (self.args,)
        return tuple((a,) for a in self.args)


@dataclass(frozen=True)
class ParsedProfile:
    default_action: int
    arches: tuple[int, ...]
    rules: tuple[Rule, ...]
    skipped_syscalls: tuple[str, ...]


def parse_document(
    path: str, document: Any, arch: int, kernel: tuple[int, int], caps: frozenset[str]
) -> ParsedProfile:
    """Validate ``document`` (the profile's JSON) and keep the rules that apply to arch/kernel/caps."""
    v = _Validator(f"seccomp profile {path}")
    top = v.obj(document, "top level", _TOP_KEYS)
    for key in _UNSUPPORTED_TOP_KEYS:
        if top.get(key):
            raise v.error(f"{key}: sandboxd cannot apply {key} (filter flags and user-notification listeners "
                          "are not supported); remove it")
    default_errno = v.opt_int(top, "defaultErrnoRet", "", 0, _MAX_ERRNO_RET)
    default_name = v.req_str(top, "defaultAction", "")
    if default_errno is not None and default_name != _ACT_ERRNO:
        raise v.error("defaultErrnoRet is only valid with defaultAction SCMP_ACT_ERRNO")
    default_action = v.action(default_name, default_errno, None, "defaultAction")
    arches = _arches(v, top, arch)

    rules: list[Rule] = []
    skipped: list[str] = []
    for i, raw in enumerate(v.opt_list(top, "syscalls", "")):
        rule, include = _rule(v, i, raw, default_errno, arch, kernel, caps)
        kept = []
        for name in rule.names:
            if seccomp_names.is_libseccomp_syscall(name):
                kept.append(name)
                continue
            # Checked even in rules this host drops, so a typo fails on every host, not just some.
            if name not in seccomp_names.NEWER_THAN_LIBSECCOMP:
                raise v.error(f'{rule.describe()}: unknown syscall "{name}"')
            if not include:
                continue
            permits = rule.action in _PERMITTING_ACTIONS and default_action not in _PERMITTING_ACTIONS
            if not (permits or rule.action == default_action):
                added = seccomp_names.NEWER_THAN_LIBSECCOMP[name]
                raise v.error(
                    f'{rule.describe()}: syscall "{name}" (Linux {added}) '
                    "is newer than this libseccomp, which cannot filter it; skipping this rule would let it "
                    "through (upgrade libseccomp or remove the name)"
                )
            skipped.append(name)
        if include:
            rules.append(Rule(rule.index, tuple(kept), rule.action, rule.args))
    return ParsedProfile(default_action, arches, tuple(rules), tuple(dict.fromkeys(skipped)))


def _arches(v: _Validator, top: dict[str, Any], arch: int) -> tuple[int, ...]:
    """The arches the filter covers, as Docker picks them: ``architectures`` as listed, or from
    ``archMap`` the entry for the native arch plus its sub-architectures."""
    listed = [
        v.arch(name, f"architectures[{i}]") for i, name in enumerate(v.opt_list(top, "architectures", ""))
    ]
    arch_map = v.opt_list(top, "archMap", "")
    if listed and arch_map:
        raise v.error("both architectures and archMap are given; use one")
    result = list(listed)
    for i, raw in enumerate(arch_map):
        where = f"archMap[{i}]"
        entry = v.obj(raw, where, _ARCH_MAP_KEYS)
        main = v.arch(v.req_str(entry, "architecture", where), f"{where}.architecture")
        subs = [
            v.arch(name, f"{where}.subArchitectures[{j}]")
            for j, name in enumerate(v.opt_list(entry, "subArchitectures", where))
        ]
        if main == arch:
            result += [main, *subs]
    return tuple(dict.fromkeys(result))


def _rule(
    v: _Validator,
    i: int,
    raw: Any,
    default_errno: int | None,
    arch: int,
    kernel: tuple[int, int],
    caps: frozenset[str],
) -> tuple[Rule, bool]:
    """One syscalls[] entry, and whether its includes/excludes keep it on this host."""
    where = f"syscalls[{i}]"
    entry = v.obj(raw, where, _RULE_KEYS)
    if "name" in entry and entry.get("names"):
        raise v.error(f"{where}: both name and names are given; use one")
    if entry.get("names") is not None:
        names = tuple(v.str_list(entry["names"], f"{where}.names"))
    elif "name" in entry:
        names = (v.req_str(entry, "name", where),)
    else:
        raise v.error(f'{where}: missing key "names"')
    if not names:
        raise v.error(f"{where}: names is empty")
    where = f"{where} (names {json.dumps(list(names))})"

    errno_ret = v.opt_int(entry, "errnoRet", where, 0, _MAX_ERRNO_RET)
    action = v.action(v.req_str(entry, "action", where), errno_ret, default_errno, f"{where}: action")
    args = tuple(
        _arg(v, raw_arg, f"{where}: args[{j}]") for j, raw_arg in enumerate(v.opt_list(entry, "args", where))
    )

    include = True
    for key in ("includes", "excludes"):
        cond = entry.get(key)
        if cond is None:
            continue
        cwhere = f"{where}: {key}"
        cond = v.obj(cond, cwhere, _CONDITION_KEYS)
        want_caps = v.str_list(v.opt_list(cond, "caps", cwhere), f"{cwhere}.caps")
        arches = [
            v.arch(a, f"{cwhere}.arches[{j}]") for j, a in enumerate(v.opt_list(cond, "arches", cwhere))
        ]
        min_kernel = _min_kernel(v, cond.get("minKernel"), f"{cwhere}.minKernel")
        if key == "includes":
            # Every listed cap must be held; any listed arch may match; the kernel must be new enough.
            include &= all(c in caps for c in want_caps)
            include &= not arches or arch in arches
            include &= min_kernel is None or kernel >= min_kernel
        else:
            include &= not any(c in caps for c in want_caps)
            include &= arch not in arches
            include &= min_kernel is None or kernel < min_kernel
    return Rule(i, names, action, args), include


def _arg(v: _Validator, raw: Any, where: str) -> ArgCondition:
    obj = v.obj(raw, where, _ARG_KEYS)
    index = v.req_int(obj, "index", where, 0, _MAX_ARG_INDEX)
    value = v.req_int(obj, "value", where, 0, _U64_MAX)
    value_two = v.opt_int(obj, "valueTwo", where, 0, _U64_MAX) or 0
    op_name = v.req_str(obj, "op", where)
    if op_name not in _OPS:
        raise v.error(f'{where}: unknown op "{op_name}" (one of {", ".join(_OPS)})')
    return ArgCondition(index, _OPS[op_name], value, value_two)


def _min_kernel(v: _Validator, raw: Any, where: str) -> tuple[int, int] | None:
    if raw is None:
        return None
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?", raw) if isinstance(raw, str) else None
    if match is None:
        raise v.error(f'{where}: expected a kernel version "major.minor", got {json.dumps(raw)}')
    return int(match.group(1)), int(match.group(2) or 0)


class _Validator:
    """Typed access to JSON values; every failure becomes a ProfileError prefixed with the file.

    ``where`` is the location of the object being read ("" at top level); messages read
    ``<file>: <where>: <key>: <problem>``.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def error(self, message: str) -> ProfileError:
        return ProfileError(f"{self._prefix}: {message}")

    def obj(self, raw: Any, where: str, keys: frozenset[str]) -> dict[str, Any]:
        """An object whose keys are all among ``keys``: an unknown one is refused with the closest known."""
        if not isinstance(raw, dict):
            raise self.error(f"{where}: expected an object, got {_kind(raw)}")
        for key in raw:
            if key not in keys:
                close = difflib.get_close_matches(key, sorted(keys), n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else f" (known: {', '.join(sorted(keys))})"
                raise self.error(f'{_at(where if where != "top level" else "", json.dumps(key))}: unknown key'
                                 f"{hint}; a profile is taken exactly as written or not at all")
        return raw

    def req_str(self, obj: dict[str, Any], key: str, where: str) -> str:
        value = self._required(obj, key, where)
        if not isinstance(value, str):
            raise self.error(f"{_at(where, key)}: expected a string, got {_kind(value)}")
        return value

    def str_list(self, raw: Any, where: str) -> list[str]:
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise self.error(f"{where}: expected a list of strings, got {_kind(raw)}")
        return raw

    def opt_list(self, obj: dict[str, Any], key: str, where: str) -> list[Any]:
        value = obj.get(key)
        if value is None:  # absent and null both mean empty, as with Go's JSON decoding in Docker
            return []
        if not isinstance(value, list):
            raise self.error(f"{_at(where, key)}: expected a list, got {_kind(value)}")
        return value

    def req_int(self, obj: dict[str, Any], key: str, where: str, low: int, high: int) -> int:
        return self._int(self._required(obj, key, where), _at(where, key), low, high)

    def opt_int(self, obj: dict[str, Any], key: str, where: str, low: int, high: int) -> int | None:
        value = obj.get(key)
        return None if value is None else self._int(value, _at(where, key), low, high)

    def action(self, name: str, errno_ret: int | None, fallback_errno: int | None, where: str) -> int:
        if name == _ACT_ERRNO:
            chosen = next((e for e in (errno_ret, fallback_errno) if e is not None), errno.EPERM)
            return int(pyseccomp.ERRNO(chosen))
        if name not in _ACTIONS:
            known = ", ".join([*_ACTIONS, _ACT_ERRNO])
            raise self.error(f'{where}: unknown action "{name}" (known: {known})')
        if errno_ret is not None:
            raise self.error(f"{where}: errnoRet is only valid with SCMP_ACT_ERRNO")
        return _ACTIONS[name]

    def arch(self, name: Any, where: str) -> int:
        token = seccomp_names.arch_token(name) if isinstance(name, str) else None
        if token is None:
            raise self.error(f"{where}: unknown arch {json.dumps(name)}")
        return token

    def _required(self, obj: dict[str, Any], key: str, where: str) -> Any:
        if key not in obj:
            raise self.error(f'{where}: missing key "{key}"' if where else f'missing key "{key}"')
        return obj[key]

    def _int(self, value: Any, where: str, low: int, high: int) -> int:
        # bool is an int subclass in Python, but true is not a number in a profile.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{where}: expected an integer, got {_kind(value)}")
        if not low <= value <= high:
            raise self.error(f"{where}: {value} is out of range {low}..{high}")
        return value


def _at(where: str, key: str) -> str:
    return f"{where}: {key}" if where else key


_JSON_KINDS: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def _kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)
