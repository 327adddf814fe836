"""Runtime grants: an admin lets one principal run a tool (or a glob of tools) until an expiry, optionally only
for params a constraint admits — without editing the configuration. ``sandboxctl grant|revoke|grants``.

    [policy.grants]              # see sandboxd.policy.settings
    max_ttl = "24h"              # an expiry is required, and at most this far ahead

A runtime grant adds a tool, not privileges: it is decided under the principal's first role (its ceilings,
rate, payload bound, conditions, risk threshold), or — for a principal that holds no configured role — under
the bare role ``runtime-grant`` (the tool's own limits). It is checked after the roles' grants, takes effect
for the next request, and is kept in ``<state_dir>/runtime-grants.json`` (written aside, fsynced, renamed into
place), so a restart keeps it; an expired one is dropped. A file that cannot be read stops the start, naming it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandboxd.base.errors import ConfigError
from sandboxd.policy.config import JWT_PRINCIPAL_PREFIX, Grant, PolicyConfig, RoleConfig, is_tool_pattern
from sandboxd.policy.constraints import ParamsConstraint
from sandboxd.policy.settings import RuntimeGrantsConfig

FILE_NAME = "runtime-grants.json"
FORMAT_VERSION = 1
RUNTIME_ROLE = RoleConfig("runtime-grant")  # the role of a runtime grant to a principal without one
_ID = re.compile(r"^g-[0-9a-f]{12}$")
REASON_MAX_CHARS = 500
_SUBJECT_MAX_CHARS = 256


@dataclass(frozen=True)
class RuntimeGrant:
    grant_id: str
    principal: str
    tool: str  # a name or an fnmatch glob
    expires_at: float  # Unix s
    created_at: float
    created_by: str
    params: ParamsConstraint | None = None
    reason: str = ""

    @staticmethod
    def new_id() -> str:
        return f"g-{uuid.uuid4().hex[:12]}"

    def as_grant(self) -> Grant:
        return Grant(self.tool, self.expires_at, self.params)

    def to_json(self) -> dict[str, Any]:
        return {"grant_id": self.grant_id, "principal": self.principal, "tool": self.tool,
                "params": None if self.params is None else dict(self.params.schema), "expires_at": self.expires_at,
                "created_at": self.created_at, "created_by": self.created_by, "reason": self.reason}

    @classmethod
    def from_json(cls, item: object) -> RuntimeGrant:
        """Raises ValueError saying what is wrong."""
        if not isinstance(item, dict):
            raise ValueError(f"a grant must be an object, got {item!r}")
        try:
            grant = cls(item["grant_id"], item["principal"], item["tool"], float(item["expires_at"]),
                        float(item["created_at"]), item["created_by"],
                        None if item.get("params") is None else ParamsConstraint.compile(item["params"]),
                        item.get("reason", ""))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a grant lacks or mistypes {exc}") from None
        texts = (grant.grant_id, grant.principal, grant.tool, grant.created_by, grant.reason)
        if not all(isinstance(text, str) for text in texts) or not _ID.match(grant.grant_id):
            raise ValueError(f"a grant has malformed fields: {item!r}")
        return grant


class RuntimeGrants:
    """The live runtime grants, in memory and in their file. Changes are made by one caller at a time (the
    servicer holds a lock); reads (every decision) see the last complete state."""

    def __init__(self, path: Path, grants: Iterable[RuntimeGrant] = ()) -> None:
        self.path = path
        self._grants: dict[str, RuntimeGrant] = {grant.grant_id: grant for grant in grants}
        self._by_principal = self._index()

    @classmethod
    def load(cls, state_dir: Path) -> RuntimeGrants:
        """The grants of ``state_dir`` (none when there is no file yet); ConfigError naming a file it cannot use."""
        path = state_dir / FILE_NAME
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read the runtime grants ({exc}); move it away to start without "
                              "them") from None
        try:
            if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a version {FORMAT_VERSION} runtime grants file")
            return cls(path, [RuntimeGrant.from_json(item) for item in data.get("grants", [])])
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}; move it away to start without runtime grants") from None

    def _index(self) -> dict[str, tuple[RuntimeGrant, ...]]:
        index: dict[str, list[RuntimeGrant]] = {}
        for grant in sorted(self._grants.values(), key=lambda g: (g.created_at, g.grant_id)):
            index.setdefault(grant.principal, []).append(grant)
        return {principal: tuple(grants) for principal, grants in index.items()}

    def for_principal(self, principal: str) -> tuple[RuntimeGrant, ...]:
        """Its grants, oldest first (an expired one too, until it is swept: the policy checks expiry)."""
        return self._by_principal.get(principal, ())

    def all(self) -> list[RuntimeGrant]:
        return sorted(self._grants.values(), key=lambda g: (g.created_at, g.grant_id))

    def get(self, grant_id: str) -> RuntimeGrant | None:
        return self._grants.get(grant_id)

    def next_expiry(self) -> float | None:
        return min((grant.expires_at for grant in self._grants.values()), default=None)

    def check_room(self, principal: str, config: RuntimeGrantsConfig) -> None:
        """Raise ValueError when one more grant of ``principal`` would pass a bound."""
        if len(self.for_principal(principal)) >= config.max_per_principal:
            raise ValueError(f"principal {principal!r} already holds {config.max_per_principal} runtime grants "
                             "([policy.grants] max_per_principal): revoke one first")
        if len(self._grants) >= config.max_total:
            raise ValueError(f"{config.max_total} runtime grants exist ([policy.grants] max_total): revoke some first")

    def replaced(self, *, add: RuntimeGrant | None = None, remove: Iterable[str] = ()) -> dict[str, RuntimeGrant]:
        """What the grants would be after the change (nothing changes yet)."""
        grants = {key: value for key, value in self._grants.items() if key not in set(remove)}
        if add is not None:
            grants[add.grant_id] = add
        return grants

    def persist(self, grants: Mapping[str, RuntimeGrant]) -> None:
        """Write ``grants`` to the file: aside, fsynced, renamed into place, the directory fsynced. Raises
        OSError when it cannot (the file is then as it was). Blocking: call it off the event loop."""
        data = json.dumps({"version": FORMAT_VERSION, "grants": [g.to_json() for g in grants.values()]},
                          indent=1, sort_keys=True).encode()
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def install(self, grants: Mapping[str, RuntimeGrant]) -> None:
        """Make ``grants`` (as persisted) the live ones: the next decision sees them."""
        self._grants = dict(grants)
        self._by_principal = self._index()

    def expired(self, now: float) -> list[RuntimeGrant]:
        return [grant for grant in self._grants.values() if grant.expires_at <= now]


def new_grant(*, principal: str, tool: str, params_json: str, expires_at: float | None, ttl_ms: int, reason: str,
              created_by: str, now: float, policy: PolicyConfig, tool_names: Collection[str],
              tool_prefixes: Collection[str] = ()) -> RuntimeGrant:
    """A grant as asked for, checked: a principal the daemon knows (or a JWT's ``jwt:SUB``), a tool name or glob
    matching a tool, a valid constraint, exactly one of ``expires_at`` and ``ttl_ms`` within ``max_ttl``.
    Raises ValueError saying what is wrong."""
    if principal.startswith(JWT_PRINCIPAL_PREFIX):
        subject = principal.removeprefix(JWT_PRINCIPAL_PREFIX)
        if not subject.strip() or len(subject) > _SUBJECT_MAX_CHARS or not subject.isprintable():
            raise ValueError(f"principal {principal[:80]!r}: a JWT's subject is jwt:SUB, SUB 1 to "
                             f"{_SUBJECT_MAX_CHARS} printable characters")
    elif principal not in policy.principals:
        known = ", ".join(sorted(policy.principals)) or "none"
        raise ValueError(f"no principal named {principal[:80]!r} (configured: {known}; a JWT's subject SUB is "
                         "'jwt:SUB')")
    if not is_tool_pattern(tool):
        raise ValueError(f"{tool[:80]!r} is not a tool name or glob")
    learnt_at_run_time = bool(tool_prefixes) and tool.startswith(tuple(tool_prefixes))  # a sandboxed MCP server's
    if not learnt_at_run_time and not any(fnmatch.fnmatchcase(name, tool) for name in tool_names):
        raise ValueError(f"{tool!r} matches no tool (tools: {', '.join(sorted(tool_names)) or 'none'})")
    params: ParamsConstraint | None = None
    if params_json.strip():
        try:
            params = ParamsConstraint.compile(json.loads(params_json))
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"params_constraint_json: {exc}") from None
    max_ttl_ms = policy.runtime_grants.max_ttl_ms
    if (expires_at is None) == (ttl_ms <= 0):
        raise ValueError("give exactly one of expires_at and ttl_ms: a runtime grant must expire")
    ends = expires_at if expires_at is not None else now + ttl_ms / 1000
    if ends <= now:
        raise ValueError("expires_at is not in the future")
    if ends > now + max_ttl_ms / 1000:
        raise ValueError(f"it would last {round(ends - now)} s, more than [policy.grants] max_ttl "
                         f"({max_ttl_ms // 1000} s)")
    if len(reason) > REASON_MAX_CHARS:
        raise ValueError(f"reason: at most {REASON_MAX_CHARS} characters")
    return RuntimeGrant(RuntimeGrant.new_id(), principal, tool, ends, now, created_by, params, reason)
