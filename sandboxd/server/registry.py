"""The tool registry: turns "run tool X with these params" (or an operator's raw command) into the
:class:`~sandboxd.engine.spec.ExecutionSpec` the executor runs, after every check that can refuse it.

Order of checks for a tool call: the tool exists → params parse strictly → params match the schema →
the profile compiles. Nothing runs before all pass. The limits come decided by the policy (the one place
ceilings are applied) and are planned with as they are.

Params are parsed strictly — one JSON object, no duplicate keys (a validator and a handler that disagree
on which duplicate wins is a schema bypass), no NaN/Infinity — and rejected, never rewritten, when they do
not fit the schema. The handler receives the very values validated, as one compact line of JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from sandboxd.base.errors import ConfigError, InvalidSpec, SandboxError
from sandboxd.base.limits import Limits
from sandboxd.base.refusals import InvalidParams, InvalidRequest, UnknownProfile, UnknownTool
from sandboxd.engine.spec import ExecutionSpec
from sandboxd.server.config import is_profile_name
from sandboxd.server.tools import BASE_ENV, Tool

# Compiles the profile file at a path into BPF bytes (sandboxd.engine.seccomp.profile.ProfileCache().get(path).bpf).
ProfileCompiler = Callable[[Path], bytes]

_MAX_ERRORS_REPORTED = 3


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidParams(f"params: duplicate key {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise InvalidParams(f"params: {name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidParams(f"params: number {text} is out of range")
    return value


def parse_params(params_json: str) -> dict[str, Any]:
    """The params object of a request; an empty string means ``{}``."""
    if params_json.strip() == "":
        return {}
    try:
        value = json.loads(
            params_json,
            object_pairs_hook=_refuse_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        raise InvalidParams(f"params: not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidParams("params: nested too deeply") from exc
    if not isinstance(value, dict):
        raise InvalidParams(f"params: expected a JSON object, got {type(value).__name__}")
    return value


def validate_params(params: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidParams` naming the JSON path (``$.lines``) of each of the first few errors."""
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema)
    errors = sorted(validator.iter_errors(params), key=jsonschema.exceptions.relevance, reverse=True)
    if not errors:
        return
    described = [f"{error.json_path}: {error.message}" for error in errors[:_MAX_ERRORS_REPORTED]]
    more = len(errors) - len(described)
    suffix = f" (and {more} more)" if more > 0 else ""
    raise InvalidParams("params do not match the tool's schema: " + "; ".join(described) + suffix,
                        json_path=errors[0].json_path)


def encode_params_line(params: Mapping[str, Any]) -> bytes:
    """One line of compact JSON (no raw newline can occur: JSON escapes them inside strings)."""
    return json.dumps(params, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode() + b"\n"


class ToolRegistry:
    def __init__(
        self,
        tools: Mapping[str, Tool],
        *,
        default_limits: Limits,
        default_profile: str,
        profile_dirs: Sequence[Path],
        compile_profile: ProfileCompiler,
        host_env: Mapping[str, str],
    ) -> None:
        self._tools = dict(tools)
        self.default_limits = default_limits
        self.default_profile = default_profile
        self._profile_dirs = tuple(profile_dirs)
        self._compile_profile = compile_profile
        self._host_env = dict(host_env)

    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            raise UnknownTool(f"no tool named {name!r}; `sandboxctl tools` lists them")
        return tool

    def profile_path(self, name: str) -> Path:
        if not is_profile_name(name):
            raise UnknownProfile(f"{name!r} is not a profile name")
        for directory in self._profile_dirs:
            path = directory / f"{name}.json"
            if path.is_file():
                return path
        searched = ", ".join(str(d) for d in self._profile_dirs)
        raise UnknownProfile(f"no seccomp profile named {name!r} (searched {searched})")

    def compile_all(self) -> None:
        """Compile every profile a tool names and the default one, so a bad profile fails the start."""
        users: list[tuple[str, Path | None, str]] = [("sandbox.default_profile", None, self.default_profile)]
        users += [("seccomp_profile", tool.source, tool.seccomp_profile) for tool in self._tools.values()]
        for key, source, name in users:
            try:
                self._compile_profile(self.profile_path(name))
            except SandboxError as exc:
                raise ConfigError(f"{source or 'config'}: {key}: {exc.message}") from exc

    def plan_tool(
        self,
        name: str,
        *,
        params_json: str,
        stdin: bytes = b"",
        limits: Limits | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> ExecutionSpec:
        """The spec of a call of tool ``name``, run with ``limits`` as decided by the policy (the tool's own
        when ``None``): ceilings are the policy's business, applied once there."""
        tool = self.get(name)
        params = parse_params(params_json)
        validate_params(params, tool.params_schema)
        effective = limits if limits is not None else tool.limits
        bpf = self._compile_profile(self.profile_path(tool.seccomp_profile))
        return ExecutionSpec(
            argv=tool.argv,
            seccomp_bpf=bpf,
            env=tool.env.build(self._host_env),
            stdin=encode_params_line(params) + stdin,
            limits=effective,
            binds=tool.binds,
            seccomp_profile_name=tool.seccomp_profile,
            tool=name,
            labels=dict(labels or {}),
        )

    def plan_command(
        self,
        argv: Sequence[str],
        *,
        profile: str = "",
        stdin: bytes = b"",
        limits: Limits | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> ExecutionSpec:
        """The spec of a raw command, run with ``limits`` as decided (the daemon's defaults when ``None``)."""
        if not argv or not argv[0]:
            raise InvalidRequest("command.argv must name a program")
        profile = profile or self.default_profile
        effective = limits if limits is not None else self.default_limits
        bpf = self._compile_profile(self.profile_path(profile))
        try:
            return ExecutionSpec(
                argv=tuple(argv),
                seccomp_bpf=bpf,
                env=dict(BASE_ENV),
                stdin=stdin,
                limits=effective,
                seccomp_profile_name=profile,
                labels=dict(labels or {}),
            )
        except InvalidSpec as exc:
            raise InvalidRequest(exc.message) from exc
