"""Tools are configuration: one TOML file per tool, ``<name>.toml``, read once at start.

A tool file, with every key (``name`` is the file's stem)::

    description = "Run a Python snippet and return what it prints"
    argv = ["/usr/bin/python3", "-I", "-S", "/opt/sandboxd/handlers/python_runner.py"]   # never a shell
    seccomp_profile = "python"        # a profile name, looked up in the profile directories
    network = "none"                  # the default: loopback only, nothing leaves — or the table below
    classification = "internal"       # one of [policy] classifications, for roles' clearance; "" = none

    [network]                         # reach these hosts through the daemon's egress proxy (HTTP_PROXY,
    allow = ["api.example.com:443", "*.wikipedia.org:443"]   # HTTPS_PROXY, ALL_PROXY are set); HOST[:PORT],
                                      # * = one or more labels, no port = any; [] = none (every try refused)

    [limits]                          # ceilings: a call may lower them, never raise them
    memory = "128M"
    wall_time = "10s"                 # any key of [sandbox.limits]; unset keys keep the daemon's default

    [[binds]]                         # host paths visible in the sandbox; read-only unless writable = true
    source = "{handlers_dir}"         # placeholders: {handlers_dir} {state_dir} {data_dir}
    target = "/opt/sandboxd/handlers"

    [env]                             # the handler's environment is built from this alone
    allow = ["TZ"]                    # copied from the daemon's environment when set there
    set = { LC_ALL = "C.UTF-8" }      # fixed values
    secrets = ["WEATHER_API_KEY"]     # names matching a secret pattern pass only when declared here

    [params_schema]                   # JSON Schema (as a TOML table) of the params object
    type = "object"

The handler reads its params as one line of JSON on stdin (the caller's stdin bytes follow).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import jsonschema.validators

from sandboxd.base.errors import ConfigError, InvalidSpec
from sandboxd.base.limits import Limits
from sandboxd.base.toml import TomlTable, read_toml, take_limits
from sandboxd.egress.allowlist import Allowlist
from sandboxd.engine.spec import BindMount
from sandboxd.server.config import is_profile_name

# Environment variable names that look like credentials. They never reach a handler unless its tool
# declares them under env.secrets (matched case-insensitively).
SECRET_PATTERNS: tuple[str, ...] = (
    "*SECRET*",
    "*_KEY",
    "*_TOKEN",
    "*PASSWORD*",
    "*PASSWD*",
    "*_CREDENTIALS",
    "DATABASE_URL",
    "AWS_*",
)

# The baseline every handler gets; the host's values are never copied for these.
BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/work",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
}

# Sandbox paths a bind may not cover: the jail builds these itself.
_RESERVED_TARGETS = ("/proc", "/dev", "/sys", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                     "/libx32", "/tmp")
_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NO_PARAMS_SCHEMA: Mapping[str, Any] = {"type": "object", "additionalProperties": False}


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, pattern) for pattern in SECRET_PATTERNS)


@dataclass(frozen=True)
class EnvPolicy:
    allow: tuple[str, ...] = ()
    set: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()

    def build(self, host_env: Mapping[str, str]) -> dict[str, str]:
        """The handler's whole environment: the baseline, then allowed host values, then fixed values.

        A name that looks like a secret is dropped unless declared in ``secrets`` — checked here again,
        not only when the tool was loaded, so no path around the loader can leak one.
        """
        env = dict(BASE_ENV)
        for name in (*self.allow, *self.secrets):
            if name in host_env and (name in self.secrets or not is_secret_name(name)):
                env[name] = host_env[name]
        for name, value in self.set.items():
            if name in self.secrets or not is_secret_name(name):
                env[name] = value
        return env


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    argv: tuple[str, ...]
    seccomp_profile: str
    limits: Limits  # ceilings
    params_schema: Mapping[str, Any]
    binds: tuple[BindMount, ...] = ()
    env: EnvPolicy = field(default_factory=EnvPolicy)
    network_allow: Allowlist | None = None  # None: no network at all; else what it may connect to
    source: Path | None = None
    classification: str = ""  # a label of [policy] classifications, checked against roles' clearance; "" = none

    @property
    def network(self) -> str:
        """The mode as ListTools names it: "none" or "allowlist"."""
        return "none" if self.network_allow is None else "allowlist"


def load_tools(
    dirs: Sequence[Path], *, placeholders: Mapping[str, str], default_limits: Limits
) -> dict[str, Tool]:
    """Every ``*.toml`` of ``dirs`` (missing directories are skipped), later ones replacing earlier ones."""
    tools: dict[str, Tool] = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            tool = load_tool(path, placeholders=placeholders, default_limits=default_limits)
            tools[tool.name] = tool
    return dict(sorted(tools.items()))


def load_tool(path: Path, *, placeholders: Mapping[str, str], default_limits: Limits) -> Tool:
    name = path.stem
    table = TomlTable(read_toml(path), file=path)
    if not _TOOL_NAME.match(name):
        raise ConfigError(f"{path}: the file name must be a tool name: lowercase letters, digits, '_', '-'")
    tool = tool_from_table(name, table, placeholders=placeholders, default_limits=default_limits)
    classification = table.take_str("classification", "")  # checked against [policy] classifications at load
    table.finish()
    return dataclasses.replace(tool, classification=classification)


def tool_from_table(name: str, table: TomlTable, *, placeholders: Mapping[str, str], default_limits: Limits,
                    params_schema: bool = True) -> Tool:
    """A tool's keys taken from ``table`` (the caller finishes it: it may hold keys of its own).
    ``params_schema=False``: the program speaks a protocol of its own (a sandboxed MCP server), no params."""
    description = table.take_str("description", "")
    if not description.strip():
        raise table.error("description", "every tool needs a description (callers choose tools by it)")
    argv = table.take_str_list("argv")
    if not argv or not argv[0].startswith("/"):
        raise table.error("argv", "must be a list whose first item is an absolute path in the sandbox")
    profile = table.take_str("seccomp_profile", "default")
    if not is_profile_name(profile):
        raise table.error("seccomp_profile", f"{profile!r} is not a profile name")
    network_allow = _network(table)
    limits = take_limits(table.take_table("limits"), default_limits)
    binds = _binds(table, placeholders)
    env = _env(table.take_table("env"))
    schema = _schema(table) if params_schema else _NO_PARAMS_SCHEMA
    return Tool(name, description.strip(), argv, profile, limits, schema, binds, env, network_allow, Path(table.file))


def _network(table: TomlTable) -> Allowlist | None:
    if not table.has("network"):
        return None
    raw = table.take_raw("network")
    if raw == "none":
        return None
    if not isinstance(raw, dict):
        raise table.error("network", f"expected \"none\" or a table with allow = [\"HOST[:PORT]\", ...], got {raw!r}")
    network = TomlTable(raw, file=table.file, prefix="network")
    if not network.has("allow"):
        raise network.error("allow", "required: the hosts the tool may connect to ([] for none yet)")
    items = network.take_str_list("allow")
    network.finish()
    try:
        return Allowlist.parse(items)
    except ValueError as exc:
        raise network.error("allow", str(exc)) from None


def expand_placeholders(text: str, placeholders: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in placeholders:
            known = ", ".join("{" + name + "}" for name in sorted(placeholders))
            raise ValueError(f"unknown placeholder {{{key}}} (known: {known})")
        return placeholders[key]

    return _PLACEHOLDER.sub(replace, text)


def _binds(table: TomlTable, placeholders: Mapping[str, str]) -> tuple[BindMount, ...]:
    raw = table.take_raw("binds")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise table.error("binds", "expected an array of tables ([[binds]])")
    binds = []
    for index, item in enumerate(raw):
        entry = TomlTable(item, file=table.file, prefix=f"binds[{index}]")
        source_text = entry.take_str("source", "")
        target_text = entry.take_str("target", "")
        writable = entry.take_bool("writable", False)
        entry.finish()
        try:
            source = Path(expand_placeholders(source_text, placeholders))
        except ValueError as exc:
            raise entry.error("source", str(exc)) from exc
        if not source.is_absolute() or not source.exists():
            raise entry.error("source", f"{str(source)!r} must be an existing absolute path")
        target = PurePosixPath(target_text)
        if any(target == PurePosixPath(r) or PurePosixPath(r) in target.parents for r in _RESERVED_TARGETS):
            raise entry.error("target", f"{target} would cover a directory the sandbox builds itself")
        try:
            binds.append(BindMount(source, target, writable))
        except InvalidSpec as exc:
            raise entry.error("target", exc.message) from exc
    return tuple(binds)


def _env(table: TomlTable) -> EnvPolicy:
    allow = table.take_str_list("allow")
    secrets = table.take_str_list("secrets")
    fixed = table.take_table("set")
    values: dict[str, str] = {}
    for name in fixed.remaining_keys():
        values[name] = fixed.take_str(name, "")
    for key, names in (("allow", allow), ("secrets", secrets), ("set", tuple(values))):
        for name in names:
            if not _ENV_NAME.match(name):
                raise table.error(key, f"{name!r} is not an environment variable name")
    for key, names in (("allow", allow), ("set", tuple(values))):
        for name in names:
            if is_secret_name(name) and name not in secrets:
                raise table.error(key, f"{name} looks like a secret ({', '.join(SECRET_PATTERNS)}); "
                                       "declare it under env.secrets to pass it")
    table.finish()
    return EnvPolicy(allow=allow, set=values, secrets=secrets)


def _schema(table: TomlTable) -> Mapping[str, Any]:
    if not table.has("params_schema"):
        return _NO_PARAMS_SCHEMA
    schema = table.take_raw("params_schema")
    if not isinstance(schema, dict):
        raise table.error("params_schema", "expected a table holding a JSON Schema")
    validator = jsonschema.validators.validator_for(schema)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(top)"
        raise table.error("params_schema", f"not a valid JSON Schema at {where}: {exc.message}") from exc
    if schema.get("type") != "object":
        raise table.error("params_schema", "params are a JSON object: the schema needs type = \"object\"")
    return schema
