"""Who may run what: the ``[auth]``, ``[principals.*]`` and ``[roles.*]`` tables of the daemon's configuration.

A *principal* is a caller: the Unix socket's (``auth.unix_socket_principal``), one holding a static token
(its SHA-256 is in ``token_sha256``), one with a client certificate (its subject is in
``certificate_subjects``) or the ``sub`` of a JWT (whose ``roles`` claim names its roles). A *role* grants
tools, raw commands, limits and a rate. The tables, with every key and its default::

    [auth]
    unix_socket_principal = "local-admin"  # who a caller on the socket is; "" = it must present a token
    jwt_key_file = ""                      # "" = no JWTs. HS256: the secret (>= 32 bytes, one trailing
                                           # newline ignored); RS256/ES256: the issuer's PEM public key
    jwt_algorithms = []                    # [] = the one the key is for (HS256, RS256, or ES256 for P-256)
    jwt_issuer = ""                        # required with jwt_key_file: the exact "iss"
    jwt_audience = ""                      # required with jwt_key_file: must be in "aud"
    jwt_leeway = "30s"                     # clock skew allowed on exp/nbf/iat, at most "5m"

    [principals.gateway]
    roles = ["customer-service"]           # in order: the first that grants a tool decides its limits
    certificate_subjects = ["CN=gateway.example,O=Example"]  # RFC 4514, most specific first, exact match
    token_sha256 = ["<64 hex digits>"]     # sha256sum of a bearer token; the token itself is never stored

    [roles.customer-service]
    tools = ["file_processor", { name = "sqlite_*", expires = 2027-01-01T00:00:00Z }]  # names or globs
    # a grant may hold params to a JSON Schema besides the tool's own (see sandboxd.policy.constraints):
    # tools = [{ name = "sqlite_query", params = { properties = { sql = { pattern = "(?i)^\\s*select\\b" } } } }]
    commands = false                       # raw commands (argv of the caller's choosing)
    admin = false                          # sees and cancels every execution; may read the audit stream
    rate_per_minute = 100                  # absent = no rate limit; counted per (principal, role)
    burst = 20                             # default: a fifth of rate_per_minute, at least 1
    max_payload = "1M"                     # absent = only daemon.max_request_bytes applies
    max_concurrent = 8                     # running executions per principal; absent = no own bound
    limits_above_ceiling = "deny"          # or "clamp": lower a per-call limit to the ceiling instead
    max_sessions = 2                       # open sessions per principal; absent = [sessions] max_per_principal
    network_allow = ["*.example.com:443"]  # absent = no narrowing; else a connection must match the tool's
                                           # [network] allow *and* this list (HOST[:PORT], * = labels)
    require_claims = { amr = "mfa" }       # conditions (sandboxd.policy.conditions): JWT claims the caller
    clearance = "internal"                 # must hold; the highest classification of the tools it grants
    risk_threshold = 70                    # ask [policy.risk]'s assessor; a score above it is refused
    risk_on_error = "deny"                 # "allow": let a request through when the assessor has no answer
    [roles.customer-service.ceilings]      # the [limits] keys (memory, cpu_time, wall_time, output …)
    memory = "256M"

A grant's ``expires`` is a TOML datetime *with* an offset: a local time would mean different instants on
different hosts. Tool names and globs are checked against the loaded tools by :func:`check_policy`.

The ``[policy]`` table (classifications, ``[policy.risk]``, ``[policy.grants]``) is read here too: see
:mod:`sandboxd.policy.settings` and :mod:`sandboxd.policy.risk_config`.

The embedded defaults are :data:`DEFAULT_POLICY_TOML`. A file's ``[roles]`` replaces the embedded roles as
a whole, and its ``[principals]`` the embedded principals; ``[auth]`` keys override one by one. So a file
with only ``[principals.gateway]`` may give it the embedded ``customer-service`` role, and a file with
only ``[roles]`` must define the ``admin`` role the embedded ``local-admin`` principal holds.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from sandboxd.base.errors import ConfigError
from sandboxd.base.toml import LIMIT_KEYS, TomlTable, optional_absolute_path
from sandboxd.base.units import parse_duration_ms, parse_size_bytes
from sandboxd.policy.constraints import ParamsConstraint
from sandboxd.policy.ratelimit import Rate, default_burst
from sandboxd.policy.risk_config import RiskConfig, parse_risk
from sandboxd.policy.settings import Classifications, RuntimeGrantsConfig, parse_classifications, parse_grants_config

EMBEDDED = "(embedded defaults)"
JWT_ALGORITHMS = ("HS256", "RS256", "ES256")
MAX_JWT_LEEWAY_MS = 5 * 60 * 1000

# A JWT's subject is its issuer's name for someone, not ours: kept apart from the configured principals (the
# socket's, static tokens', certificates'), which may not use the prefix, so "alice" by JWT never acts as
# the static-token "alice" or the socket's admin.
JWT_PRINCIPAL_PREFIX = "jwt:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")
_TOOL_PATTERN = re.compile(r"^[a-z0-9_*?\[\]!-]{1,64}$")
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
# RFC 4514 has no short name for it, but people write subjects the way openssl prints them.
_SUBJECT_NAMES = {"emailAddress": NameOID.EMAIL_ADDRESS}

DEFAULT_POLICY_TOML = """
[auth]
unix_socket_principal = "local-admin"

[principals.local-admin]
roles = ["admin"]

[roles.customer-service]
tools = ["file_processor", "sqlite_query"]
rate_per_minute = 100

[roles.analyst]
tools = ["sqlite_query"]
rate_per_minute = 50
max_payload = "1M"

[roles.admin]
tools = ["*"]
commands = true
admin = true
rate_per_minute = 1000
"""


@dataclass(frozen=True)
class Grant:
    """One entry of a role's ``tools``: a name or an fnmatch glob, valid until ``expires_at`` (Unix s), for the
    params its ``params`` constraint admits (None: any the tool's schema admits)."""

    pattern: str
    expires_at: float | None = None
    params: ParamsConstraint | None = None

    @property
    def is_glob(self) -> bool:
        return any(char in self.pattern for char in "*?[")

    def matches(self, tool: str) -> bool:
        return fnmatch.fnmatchcase(tool, self.pattern)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True)
class RoleConfig:
    name: str
    tools: tuple[Grant, ...] = ()
    commands: bool = False
    admin: bool = False
    rate: Rate | None = None
    max_payload_bytes: int | None = None
    max_concurrent: int | None = None
    ceilings: Mapping[str, int] = field(default_factory=dict)  # Limits field name -> ceiling
    limits_above_ceiling: Literal["deny", "clamp"] = "deny"
    # HOST[:PORT] entries narrowing what its executions may connect to (a connection must match the tool's list
    # and this one); None = no narrowing. Checked as allowlist entries by the daemon's configuration.
    network_allow: tuple[str, ...] | None = None
    max_sessions: int | None = None  # open sessions per principal; None = only [sessions] max_per_principal
    # conditions (sandboxd.policy.conditions): JWT claims the caller must hold; the highest tool classification
    require_claims: Mapping[str, str] = field(default_factory=dict)
    clearance: str | None = None
    # the risk assessor ([policy.risk]): a score above the threshold is refused; None = not assessed
    risk_threshold: int | None = None
    risk_on_error: Literal["deny", "allow"] = "deny"  # what an assessor without a usable answer means


@dataclass(frozen=True)
class PrincipalConfig:
    name: str
    roles: tuple[str, ...] = ()
    certificate_subjects: tuple[str, ...] = ()  # RFC 4514, as subject_string writes them
    token_sha256: tuple[str, ...] = ()  # lower-case hex


@dataclass(frozen=True)
class AuthConfig:
    unix_socket_principal: str = "local-admin"
    jwt_key_file: Path | None = None
    jwt_algorithms: tuple[str, ...] = ()  # () = the algorithm the key is for
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_leeway_ms: int = 30_000


@dataclass(frozen=True)
class PolicyConfig:
    """``source`` is the file it was read from, named in errors; ``embedded_roles``/``embedded_principals``
    say which tables are still the embedded defaults (their tool names are not checked: see check_policy)."""

    auth: AuthConfig
    roles: Mapping[str, RoleConfig]
    principals: Mapping[str, PrincipalConfig]
    source: str = EMBEDDED
    embedded_roles: bool = False
    embedded_principals: bool = False
    classifications: Classifications = field(default_factory=Classifications)  # [policy]
    risk: RiskConfig | None = None  # [policy.risk]; None = no risk assessor
    runtime_grants: RuntimeGrantsConfig = field(default_factory=RuntimeGrantsConfig)  # [policy.grants]


def is_tool_pattern(text: str) -> bool:
    """A tool name or an fnmatch glob of them, as a grant names it."""
    return bool(_TOOL_PATTERN.match(text))


def subject_name(text: str) -> x509.Name:
    """An RFC 4514 subject (``"CN=gateway.example,O=Example"``); raises ValueError when it is not one."""
    try:
        name = x509.Name.from_rfc4514_string(text, _SUBJECT_NAMES)
    except ValueError as exc:  # also binascii.Error and UnicodeDecodeError of "#hex" values
        hint = " (no space after a comma)" if ", " in text else ""
        raise ValueError(
            f"{text!r} is not an RFC 4514 subject such as \"CN=gateway.example,O=Example\"{hint}"
        ) from exc
    if not len(name):
        raise ValueError("a certificate subject cannot be empty")
    return name


def subject_string(name: x509.Name) -> str:
    return name.rfc4514_string({oid: short for short, oid in _SUBJECT_NAMES.items()})


def parse_policy(top: TomlTable) -> PolicyConfig:
    """The ``auth``, ``roles`` and ``principals`` tables of ``top`` over :data:`DEFAULT_POLICY`.

    Takes those three keys from ``top`` and leaves the rest (and ``top.finish()``) to the caller.
    """
    return _parse(top, DEFAULT_POLICY)


def _parse(top: TomlTable, defaults: PolicyConfig | None) -> PolicyConfig:
    source = str(top.file)
    has_roles, has_principals = top.has("roles"), top.has("principals")
    if has_roles or defaults is None:
        roles_table = top.take_table("roles")
        roles = {name: _role(roles_table, name) for name in roles_table.remaining_keys()}
    else:
        roles = dict(defaults.roles)
    if has_principals or defaults is None:
        principals_table = top.take_table("principals")
        principals = {name: _principal(principals_table, name) for name in principals_table.remaining_keys()}
    else:
        principals = dict(defaults.principals)
    auth = _auth(top.take_table("auth"), defaults.auth if defaults is not None else AuthConfig())
    settings = top.take_table("policy")
    classifications = parse_classifications(settings, defaults.classifications if defaults else Classifications())
    risk = parse_risk(settings.take_table("risk")) if settings.has("risk") else (defaults.risk if defaults else None)
    runtime_grants = parse_grants_config(settings.take_table("grants"),
                                         defaults.runtime_grants if defaults else RuntimeGrantsConfig())
    settings.finish()
    policy = PolicyConfig(
        auth=auth,
        roles=roles,
        principals=principals,
        source=source,
        embedded_roles=defaults is not None and not has_roles,
        embedded_principals=defaults is not None and not has_principals,
        classifications=classifications,
        risk=risk,
        runtime_grants=runtime_grants,
    )
    _check_clearances(policy)
    _check_risk_roles(policy)
    _check_identities(policy)
    _check_role_references(policy)
    return policy


def _auth(table: TomlTable, default: AuthConfig) -> AuthConfig:
    socket_principal = table.take_str("unix_socket_principal", default.unix_socket_principal)
    key_file = table.take_parsed("jwt_key_file", default.jwt_key_file, optional_absolute_path)
    algorithms = table.take_str_list("jwt_algorithms") if table.has("jwt_algorithms") else default.jwt_algorithms
    for algorithm in algorithms:
        if algorithm not in JWT_ALGORITHMS:
            raise table.error("jwt_algorithms", f"{algorithm!r} is not one of {', '.join(JWT_ALGORITHMS)}")
    if len(set(algorithms)) != len(algorithms):
        raise table.error("jwt_algorithms", f"{list(algorithms)} names an algorithm twice")
    issuer = table.take_str("jwt_issuer", default.jwt_issuer)
    audience = table.take_str("jwt_audience", default.jwt_audience)
    leeway_ms = table.take_parsed("jwt_leeway", default.jwt_leeway_ms, parse_duration_ms)
    if leeway_ms > MAX_JWT_LEEWAY_MS:
        raise table.error("jwt_leeway", f"at most \"5m\": a token must not outlive its exp by more, got {leeway_ms} ms")
    table.finish()
    if key_file is not None:
        for key, value in (("jwt_issuer", issuer), ("jwt_audience", audience)):
            if not value:
                raise table.error(key, "required with jwt_key_file: a token from any issuer or for any audience "
                                       "that this key verifies would otherwise be accepted")
    else:
        given = {"jwt_issuer": bool(issuer), "jwt_audience": bool(audience), "jwt_algorithms": bool(algorithms)}
        for key, is_given in given.items():
            if is_given:
                raise table.error(key, "has no effect without jwt_key_file")
    return AuthConfig(socket_principal, key_file, algorithms, issuer, audience, leeway_ms)




def _check_name(table: TomlTable, name: str, kind: str) -> None:
    if not _NAME.match(name):
        raise table.error(name, f"{name!r} is not a {kind} name (letters, digits, '_', '.', '@', ':', '-')")


def _principal(table: TomlTable, name: str) -> PrincipalConfig:
    _check_name(table, name, "principal")
    if name.startswith(JWT_PRINCIPAL_PREFIX):
        raise table.error(name, f"{name!r}: names starting {JWT_PRINCIPAL_PREFIX!r} are JWT subjects' (a token's "
                                "sub becomes jwt:SUB); a configured principal may not take one")
    entry = table.take_table(name)
    roles = entry.take_str_list("roles")
    subjects: list[str] = []
    for text in entry.take_str_list("certificate_subjects"):
        try:
            subjects.append(subject_string(subject_name(text)))
        except ValueError as exc:
            raise entry.error("certificate_subjects", str(exc)) from None
    tokens: list[str] = []
    for digest in entry.take_str_list("token_sha256"):
        if not _SHA256_HEX.match(digest):
            # never quote it: an operator may have pasted the token itself here
            raise entry.error("token_sha256", "expected the 64 hex digits of a SHA-256 (sha256sum of the token)")
        tokens.append(digest.lower())
    entry.finish()
    return PrincipalConfig(name, roles, tuple(subjects), tuple(tokens))


def _role(table: TomlTable, name: str) -> RoleConfig:
    _check_name(table, name, "role")
    entry = table.take_table(name)
    grants = _grants(entry)
    commands = entry.take_bool("commands", False)
    admin = entry.take_bool("admin", False)
    rate: Rate | None = None
    if entry.has("rate_per_minute"):
        per_minute = entry.take_int("rate_per_minute", 0, minimum=1, maximum=1_000_000)
        rate = Rate(per_minute, entry.take_int("burst", default_burst(per_minute), minimum=1, maximum=1_000_000))
    elif entry.has("burst"):
        raise entry.error("burst", "has no effect without rate_per_minute")
    max_payload = entry.take_parsed("max_payload", None, _positive_size)
    max_concurrent: int | None = None
    if entry.has("max_concurrent"):
        max_concurrent = entry.take_int("max_concurrent", 1, minimum=1, maximum=4096)
    above = entry.take_str("limits_above_ceiling", "deny")
    if above not in ("deny", "clamp"):
        raise entry.error("limits_above_ceiling", f"expected \"deny\" or \"clamp\", got {above!r}")
    ceilings = _ceilings(entry.take_table("ceilings"))
    network_allow = entry.take_str_list("network_allow") if entry.has("network_allow") else None
    max_sessions = entry.take_int("max_sessions", 0, minimum=0, maximum=4096) if entry.has("max_sessions") else None
    claims = entry.take_table("require_claims")
    require_claims = {claim: claims.take_str(claim, "") for claim in claims.remaining_keys()}
    for claim, value in require_claims.items():
        if not value:
            raise claims.error(claim, "expected the value the claim must hold, e.g. amr = \"mfa\"")
    clearance = entry.take_str("clearance", "") if entry.has("clearance") else None
    threshold = entry.take_int("risk_threshold", 0, minimum=0, maximum=100) if entry.has("risk_threshold") else None
    on_error = entry.take_str("risk_on_error", "deny")
    if on_error not in ("deny", "allow"):
        raise entry.error("risk_on_error", f"expected \"deny\" or \"allow\", got {on_error!r}")
    if threshold is None and on_error != "deny":
        raise entry.error("risk_on_error", "has no effect without risk_threshold")
    entry.finish()
    return RoleConfig(
        name, grants, commands, admin, rate, max_payload, max_concurrent, ceilings,
        "clamp" if above == "clamp" else "deny", network_allow, max_sessions, require_claims, clearance,
        threshold, "allow" if on_error == "allow" else "deny",
    )


def _check_risk_roles(policy: PolicyConfig) -> None:
    if policy.risk is not None:
        return
    for role in policy.roles.values():
        if role.risk_threshold is not None:
            raise ConfigError(f"{policy.source}: roles.{role.name}.risk_threshold: has no effect without a risk "
                              f"assessor: configure [policy.risk] (see sandboxd.policy.risk_config)")


def _check_clearances(policy: PolicyConfig) -> None:
    levels = policy.classifications.levels
    for role in policy.roles.values():
        if role.clearance is not None and role.clearance not in levels:
            where = EMBEDDED if policy.embedded_roles else policy.source
            raise ConfigError(f"{where}: roles.{role.name}.clearance: {role.clearance!r} is not one of the "
                              f"classifications ({', '.join(levels)})")


def _positive_size(value: Any) -> int:
    size = parse_size_bytes(value)
    if size <= 0:
        raise ValueError("must be positive")
    return size


def _grants(entry: TomlTable) -> tuple[Grant, ...]:
    raw = entry.take_raw("tools")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise entry.error("tools", f"expected a list of tool names, globs or {{ name, expires }} tables, got {raw!r}")
    grants: list[Grant] = []
    for index, item in enumerate(raw):
        key = f"tools[{index}]"
        params: ParamsConstraint | None = None
        if isinstance(item, str):
            pattern, expires_at = item, None
        elif isinstance(item, dict):
            grant = TomlTable(item, file=entry.file, prefix=entry.key_path(key))
            pattern = grant.take_str("name", "")
            expires_at = grant.take_parsed("expires", None, _expiry)
            params = grant.take_parsed("params", None, ParamsConstraint.compile)
            grant.finish()
            if not pattern:
                raise grant.error("name", "required: the tool name or glob granted")
        else:
            raise entry.error(key, f"expected a tool name, a glob or {{ name, expires, params }}, got {item!r}")
        if not _TOOL_PATTERN.match(pattern):
            raise entry.error(key, f"{pattern!r} is not a tool name or glob")
        grants.append(Grant(pattern, expires_at, params))
    return tuple(grants)


def _expiry(value: Any) -> float:
    example = "2027-01-01T00:00:00Z"
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value.isoformat()} has no UTC offset; write one, e.g. {example}")
        return value.timestamp()
    if isinstance(value, datetime.date):
        raise ValueError(f"{value} is a date; write a datetime with an offset, e.g. {value}T00:00:00Z")
    hint = " (unquoted: a TOML datetime, not a string)" if isinstance(value, str) else ""
    raise ValueError(f"expected a datetime with an offset such as {example}{hint}, got {value!r}")


def _ceilings(table: TomlTable) -> dict[str, int]:
    ceilings: dict[str, int] = {}
    for key, (field_name, parse) in LIMIT_KEYS.items():
        if not table.has(key):
            continue
        value = table.take_parsed(key, None, parse)
        if value is None:
            raise table.error(key, "a ceiling cannot be \"unlimited\": leave the key out for no ceiling")
        ceilings[field_name] = value
    table.finish()
    return ceilings


def _check_identities(policy: PolicyConfig) -> None:
    """Each credential names one principal, and the socket's principal exists."""
    socket = policy.auth.unix_socket_principal
    if socket and socket not in policy.principals:
        hint = " (this file's [principals] replaced the embedded ones)" if not policy.embedded_principals else ""
        raise ConfigError(
            f"{policy.source}: auth.unix_socket_principal: no principal named {socket!r}{hint}; "
            f"define [principals.{socket}], or write \"\" to make callers on the socket present a token"
        )
    seen: dict[object, str] = {}
    for principal in policy.principals.values():
        credentials: list[tuple[str, object, str]] = [
            ("token_sha256", digest, "a token hash") for digest in principal.token_sha256
        ]
        # as parsed names: "CN=a+UID=x" and "UID=x+CN=a" are one subject
        credentials += [("certificate_subjects", subject_name(text), repr(text))
                        for text in principal.certificate_subjects]
        for kind, credential, shown in credentials:
            other = seen.setdefault((kind, credential), principal.name)
            if other != principal.name:
                raise ConfigError(
                    f"{policy.source}: principals.{principal.name}.{kind}: {shown} is also principal "
                    f"{other!r}'s: a credential must name one principal"
                )


def _check_role_references(policy: PolicyConfig) -> None:
    for principal in policy.principals.values():
        for role in principal.roles:
            if role not in policy.roles:
                where = EMBEDDED if policy.embedded_principals else policy.source
                hint = ""
                if policy.embedded_principals and not policy.embedded_roles:
                    hint = f" ({policy.source}'s [roles] replaced the embedded roles: define one named {role!r})"
                raise ConfigError(f"{where}: principals.{principal.name}.roles: no role named {role!r}{hint}")


def check_policy(policy: PolicyConfig, tool_names: Collection[str], file: str | Path | None = None, *,
                 tool_prefixes: Collection[str] = ()) -> None:
    """Refuse a policy that names a role or a tool that does not exist: a typo must not fail open or shut.

    A plain name must be a tool; a glob must match at least one. The embedded roles are not checked against
    the tools (they name the shipped ones, which ``shipped_tools = false`` removes). ``file`` names the
    configuration in errors (default: ``policy.source``). ``tool_prefixes``: names and globs beginning with one
    are tools learnt at run time (``NAME__`` of a sandboxed MCP server), not checked further.
    """
    if file is not None:
        policy = dataclasses.replace(policy, source=str(file))
    _check_identities(policy)
    _check_role_references(policy)
    if policy.embedded_roles:
        return
    names = set(tool_names)
    for role in policy.roles.values():
        for index, grant in enumerate(role.tools):
            if grant.pattern.startswith(tuple(tool_prefixes)) and tool_prefixes:
                continue
            if grant.is_glob and not any(grant.matches(name) for name in names):
                problem = f"the glob {grant.pattern!r} matches no tool"
            elif not grant.is_glob and grant.pattern not in names:
                problem = f"no tool named {grant.pattern!r}"
            else:
                continue
            known = ", ".join(sorted(names)) or "none"
            raise ConfigError(f"{policy.source}: roles.{role.name}.tools[{index}]: {problem} (tools: {known})")


def _embedded() -> PolicyConfig:
    top = TomlTable(tomllib.loads(DEFAULT_POLICY_TOML), file=EMBEDDED)
    policy = _parse(top, None)
    top.finish()
    return dataclasses.replace(policy, embedded_roles=True, embedded_principals=True)


DEFAULT_POLICY: PolicyConfig = _embedded()
