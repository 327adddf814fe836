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
import referencing
import referencing.exceptions

from sandboxd.base.echo import ECHO_MAX_CHARS, cut, quote
from sandboxd.base.errors import ConfigError, InvalidSpec, SandboxError
from sandboxd.base.limits import Limits
from sandboxd.base.refusals import InvalidParams, InvalidRequest, UnknownProfile, UnknownTool
from sandboxd.egress.settings import PROXY_PORT, proxy_env
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
            raise InvalidParams(f"params: duplicate key {quote(key)}")
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
    except ValueError as exc:  # an integer beyond Python's digit limit (sys.get_int_max_str_digits)
        raise InvalidParams(f"params: a number is too large: {cut(str(exc), ECHO_MAX_CHARS)}") from exc
    if not isinstance(value, dict):
        raise InvalidParams(f"params: expected a JSON object, got {type(value).__name__}")
    return value


class UnresolvableSchema(InvalidParams):
    """A schema's ``$ref`` points outside it: the params cannot be checked against it."""


def validate_params(params: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidParams` naming the JSON path (``$.lines``) of each of the first few errors."""
    validator_class = jsonschema.validators.validator_for(schema)
    # An empty registry: a "$ref" to anything outside the schema fails validation instead of being fetched —
    # a schema may come from a sandboxed MCP server, which must not make the daemon reach a URL it names.
    validator = validator_class(schema, registry=referencing.Registry())
    try:
        errors = sorted(validator.iter_errors(params), key=jsonschema.exceptions.relevance, reverse=True)
    except referencing.exceptions.Unresolvable as error:
        raise UnresolvableSchema(f"the schema refers to {cut(str(error), ECHO_MAX_CHARS)}, which is not "
                                 "resolved (nothing outside a schema is fetched)") from None
    if not errors:
        return
    # each bounded: jsonschema quotes the failing value, which may be as large as the request
    described = [f"{cut(error.json_path, ECHO_MAX_CHARS)}: {cut(error.message, ECHO_MAX_CHARS)}"
                 for error in errors[:_MAX_ERRORS_REPORTED]]
    more = len(errors) - len(described)
    suffix = f" (and {more} more)" if more > 0 else ""
    raise InvalidParams("params do not match the tool's schema: " + "; ".join(described) + suffix,
                        json_path=cut(errors[0].json_path, ECHO_MAX_CHARS))


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
        self._compiled: dict[str, bytes] = {}  # by name, from compile_all
        self._host_env = dict(host_env)

    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def has(self, name: str) -> bool:
        return name in self._tools

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            raise UnknownTool(f"no tool named {quote(name)}; `sandboxctl tools` lists them")
        return tool

    def profile_path(self, name: str) -> Path:
        if not is_profile_name(name):
            raise UnknownProfile(f"{quote(name)} is not a profile name")
        for directory in self._profile_dirs:
            path = directory / f"{name}.json"
            if path.is_file():
                return path
        searched = ", ".join(str(d) for d in self._profile_dirs)
        raise UnknownProfile(f"no seccomp profile named {quote(name)} (searched {searched})")

    def compile_all(self) -> None:
        """Compile every profile of the profile directories (of two with one name, the first directory's),
        once. Requests use only these: an edited or added profile file takes effect at the next start or
        reload, validated with everything else, or not at all. A broken profile, or a tool or default naming
        one that is not there, fails the start (or the reload) naming the file."""
        compiled: dict[str, bytes] = {}
        for directory in self._profile_dirs:
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob("*.json")):
                if path.stem in compiled or not is_profile_name(path.stem):
                    continue
                try:
                    compiled[path.stem] = self._compile_profile(path)
                except SandboxError as exc:
                    raise ConfigError(f"profiles_dir: {exc.message}") from exc
        users: list[tuple[str, Path | None, str]] = [("sandbox.default_profile", None, self.default_profile)]
        users += [("seccomp_profile", tool.source, tool.seccomp_profile) for tool in self._tools.values()]
        for key, source, name in users:
            if name not in compiled:
                try:
                    self.profile_path(name)  # says why: not a profile name, or where it was searched
                    raise UnknownProfile(f"no seccomp profile named {quote(name)}")
                except SandboxError as exc:
                    raise ConfigError(f"{source or 'config'}: {key}: {exc.message}") from exc
        self._compiled = compiled

    def profile_bpf(self, name: str) -> bytes:
        """The filter of profile ``name`` as compiled at the last start or reload."""
        bpf = self._compiled.get(name)
        if bpf is None:
            self.profile_path(name)  # not a profile name, or not in any profile directory
            raise UnknownProfile(f"no seccomp profile named {quote(name)} was loaded: profiles are read at start "
                                 "and at reload (SIGHUP)")
        return bpf

    def check_params(self, name: str, params_json: str) -> dict[str, Any]:
        """The params of a call of tool ``name``, parsed strictly and valid against its schema — or raise."""
        params = parse_params(params_json)
        validate_params(params, self.get(name).params_schema)
        return params

    def plan_tool(
        self,
        name: str,
        *,
        params: Mapping[str, Any],
        stdin: bytes = b"",
        limits: Limits | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> ExecutionSpec:
        """The spec of a call of tool ``name`` with ``params`` as :meth:`check_params` returned them, run with
        ``limits`` as decided by the policy (the tool's own when ``None``): ceilings are the policy's business,
        applied once there."""
        tool = self.get(name)
        return self.plan_program(tool, stdin=encode_params_line(params) + stdin, limits=limits, labels=labels)

    def plan_program(
        self, tool: Tool, *, stdin: bytes = b"", limits: Limits | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> ExecutionSpec:
        """The spec of ``tool``'s program as configured (argv, environment, profile, binds, door out), run with
        ``limits`` (the tool's own when ``None``) — a registered tool's call, or a sandboxed MCP server."""
        effective = limits if limits is not None else tool.limits
        bpf = self.profile_bpf(tool.seccomp_profile)
        networked = tool.network_allow is not None
        return ExecutionSpec(
            argv=tool.argv,
            seccomp_bpf=bpf,
            env=tool.env.build(self._host_env) | (proxy_env() if networked else {}),
            egress_listen_port=PROXY_PORT if networked else None,
            stdin=stdin,
            limits=effective,
            binds=tool.binds,
            seccomp_profile_name=tool.seccomp_profile,
            tool=tool.name,
            labels=dict(labels or {}),
        )

    def pool_specs(self) -> list[ExecutionSpec]:
        """What the warm pool builds ahead: each tool's sandbox (those without a door out: their network is
        made per execution) with its own limits, and a raw command's with the defaults and default profile."""
        specs = [self.plan_program(tool) for tool in self._tools.values() if tool.network_allow is None]
        return [*specs, self.plan_command(["/bin/true"])]

    def plan_command(
        self,
        argv: Sequence[str],
        *,
        profile: str = "",
        stdin: bytes = b"",
        limits: Limits | None = None,
        labels: Mapping[str, str] | None = None,
        networked: bool = False,
    ) -> ExecutionSpec:
        """The spec of a raw command, run with ``limits`` as decided (the daemon's defaults when ``None``);
        ``networked``: it reaches the egress proxy (the caller named hosts it may connect to)."""
        if not argv or not argv[0]:
            raise InvalidRequest("command.argv must name a program")
        profile = profile or self.default_profile
        effective = limits if limits is not None else self.default_limits
        bpf = self.profile_bpf(profile)
        try:
            return ExecutionSpec(
                argv=tuple(argv),
                seccomp_bpf=bpf,
                env=dict(BASE_ENV) | (proxy_env() if networked else {}),
                egress_listen_port=PROXY_PORT if networked else None,
                stdin=stdin,
                limits=effective,
                seccomp_profile_name=profile,
                labels=dict(labels or {}),
            )
        except InvalidSpec as exc:
            raise InvalidRequest(exc.message) from exc
