"""The daemon's configuration: one TOML file → frozen dataclasses, every key with an embedded default.

With no file at all, ``sandboxd`` serves the shipped tools on ``/run/sandboxd/sandboxd.sock``. Sizes and
durations are written with units (``"1M"``, ``"10s"``) and parsed here, once, into ``*_bytes`` / ``*_ms``
integers. An unknown key, a wrong type or an impossible value is a :class:`ConfigError` naming the file,
the dotted key and the reason. The full file, with the defaults::

    tools_dir = "/etc/sandboxd/tools"        # one TOML per tool; adds to / overrides the shipped tools
    profiles_dir = "/etc/sandboxd/seccomp"   # <name>.json profiles; searched before the shipped ones
    shipped_tools = true                     # serve the tools that come with sandboxd
    include = []                             # more TOML files whose tables join this one's (see
                                             # sandboxd.server.config_files): e.g. principals from a Secret
    mcp_servers_dir = "/etc/sandboxd/mcp-servers"   # one TOML per sandboxed MCP server (as [mcp_servers.NAME])

    [daemon]
    socket = "/run/sandboxd/sandboxd.sock"
    socket_mode = "0660"
    socket_group = "sandboxd"                # the group allowed to call; skipped when the group is absent
    framed_socket = ""                       # e.g. "/run/sandboxd/sandboxd.framed.sock": Execute for callers
                                             # on this host without HTTP/2 (same mode, group and callers as
                                             # socket; sandboxd.api.frames); "": off
    tcp_listen = ""                          # e.g. "127.0.0.1:7070"; beyond loopback only with [daemon.tls]
    metrics_listen = ""                      # e.g. "127.0.0.1:9464": Prometheus /metrics over HTTP
    health_listen = ""                       # e.g. "0.0.0.0:7071": plaintext gRPC with only grpc.health.v1,
                                             # for probes that cannot speak TLS (Kubernetes' grpc probes)
    state_dir = "/run/sandboxd"
    instance = "default"                     # unique per daemon on a host: names its cgroups
    max_concurrent_executions = 16
    max_request_bytes = "1M"
    grace_period = "10s"                     # on SIGTERM: how long running executions may finish

    [daemon.tls]                             # TLS (mTLS with client_ca_file) on tcp_listen
    cert_file = "/etc/sandboxd/tls/server.pem"
    key_file = "/etc/sandboxd/tls/server.key"
    client_ca_file = "/etc/sandboxd/tls/clients-ca.pem"

    [sandbox]
    ids = "2000000000-2000065535"            # every running execution gets a uid (= gid) of its own from here;
                                             # the first is the sandboxes' shared group (give writable binds
                                             # to it); no host account may use the range
    setup_timeout = "60s"                    # a sandbox not standing by then ends SETUP_FAILED naming the stage
                                             # (generous: a burst of hundreds of sandboxes sets up slowly)
    default_profile = "default"              # seccomp profile of raw commands that name none

    [sandbox.pool]                           # sandboxes built ahead of the request, each used once: per tool
    size = 0                                 # without a door out, and for raw commands of the default profile
    total = 16                               # and limits; off (0) unless set, e.g. size = 2

    [sandbox.limits]                         # defaults of every tool; ceilings of raw commands
    memory = "256M"
    cpu_time = "10s"
    cpu_share = "100%"
    wall_time = "30s"
    output = "1M"
    pids = 64
    file_size = "64M"
    open_files = 256
    tmpfs_size = "64M"
    network_bytes = "64M"                    # through the egress proxy, sent + received

    [sessions]                               # sandboxes that live across calls (CreateSession)
    idle_timeout = "10m"                     # ended after this long without a call (a request may shorten it)
    max_lifetime = "1h"                      # ended this long after creation (a request may shorten it)
    max_per_principal = 4                    # open at once; a role's max_sessions may lower it
    max_total = 32
    memory_total = "8G"                      # the memory limits of all open sessions together
    file_max = "64M"                         # the largest file PutFile / GetFile moves

    [mcp]                                    # sandboxd's tools over MCP's streamable HTTP (see
                                             # sandboxd.server.mcp_config)
    listen = ""                              # e.g. "127.0.0.1:8765"; beyond loopback only with [daemon.tls]
    path = "/mcp"
    allowed_origins = []                     # browser origins besides the endpoint's own
    max_sessions = 64                        # MCP sessions open at once
    session_idle_timeout = "10m"             # a session without a request for this long is ended
    resource_url = ""                        # its public URL for OAuth metadata; "" = derived from listen

    [egress]                                 # see sandboxd.server.egress_config: the proxy's pins and bounds
    [mcp_servers.NAME]                       # see sandboxd.server.mcp_servers_config: third-party MCP servers,
                                             # each run in sandboxes of its own
    [audit]                                  # see sandboxd.audit.config
    [auth] / [principals.*] / [roles.*]      # see sandboxd.policy.config: who may run what

``sandboxd`` reloads this file on SIGHUP: tools, profiles, policy, limits and the keys marked reloadable
in :data:`RESTART_KEYS`'s complement take effect at once; a change to a key that needs a restart (the
socket, the state directory, the sandbox uid …) rejects the reload as a whole, as does any error.
"""

from __future__ import annotations

import grp
import ipaddress
import pwd
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxd.audit.config import AuditConfig, parse_audit_config
from sandboxd.base.errors import ConfigError
from sandboxd.base.limits import Limits
from sandboxd.base.toml import TomlTable, optional_absolute_path, take_limits
from sandboxd.base.units import parse_duration_ms, parse_positive_duration_ms, parse_size_bytes
from sandboxd.egress.allowlist import Allowlist
from sandboxd.egress.settings import EgressSettings
from sandboxd.engine.ids import DEFAULT_SANDBOX_IDS, IdRange
from sandboxd.policy.config import DEFAULT_POLICY, PolicyConfig, parse_policy
from sandboxd.policy.tls import TlsConfig, parse_tls
from sandboxd.server.config_files import read_config_tree
from sandboxd.server.egress_config import parse_egress
from sandboxd.server.mcp_config import McpConfig, parse_mcp
from sandboxd.server.metrics import parse_metrics_listen

DEFAULT_CONFIG_PATH = Path("/etc/sandboxd/sandboxd.toml")
DEFAULT_SOCKET_GROUP = "sandboxd"
PACKAGE_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SHIPPED_TOOLS_DIR = PACKAGE_DATA_DIR / "tools"
SHIPPED_HANDLERS_DIR = PACKAGE_DATA_DIR / "handlers"
SHIPPED_PROFILES_DIR = PACKAGE_DATA_DIR / "seccomp-profiles"

_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class DaemonConfig:
    socket: Path = Path("/run/sandboxd/sandboxd.sock")
    socket_mode: int = 0o660
    socket_group: str = DEFAULT_SOCKET_GROUP
    framed_socket: Path | None = None  # None: no framed socket
    tcp_listen: str | None = None
    tls: TlsConfig | None = None
    metrics_listen: str | None = None
    health_listen: str | None = None
    state_dir: Path = Path("/run/sandboxd")
    instance: str = "default"
    max_concurrent_executions: int = 16
    max_request_bytes: int = 1024 * 1024
    grace_period_ms: int = 10_000


@dataclass(frozen=True)
class SandboxConfig:
    ids: IdRange = DEFAULT_SANDBOX_IDS
    setup_timeout_ms: int = 60_000
    default_profile: str = "default"
    limits: Limits = field(default_factory=Limits)
    pool_size: int = 0  # sandboxes built ahead per pooled kind (each tool without a door out, raw commands); 0: off
    pool_total: int = 16  # built ahead in all


@dataclass(frozen=True)
class SessionsConfig:
    idle_timeout_ms: int = 10 * 60_000  # a session without a call for this long is ended
    max_lifetime_ms: int = 60 * 60_000  # and every session this long after it was created
    max_per_principal: int = 4
    max_total: int = 32
    memory_total_bytes: int = 8 * 1024**3  # the memory limits of all open sessions together
    file_max_bytes: int = 64 * 1024**2  # one PutFile / GetFile


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    tools_dir: Path = Path("/etc/sandboxd/tools")
    profiles_dir: Path = Path("/etc/sandboxd/seccomp")
    shipped_tools: bool = True
    audit: AuditConfig = field(default_factory=AuditConfig)
    policy: PolicyConfig = DEFAULT_POLICY
    source: Path | None = None  # the file this came from; None = embedded defaults only
    egress: EgressSettings = field(default_factory=EgressSettings)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    # [mcp_servers.NAME] as written: parsed with the tools (sandboxd.server.mcp_servers_config), which need
    # the placeholders and default limits the runtime knows
    mcp_servers: Mapping[str, Any] = field(default_factory=dict)
    mcp_servers_dir: Path = Path("/etc/sandboxd/mcp-servers")
    mcp: McpConfig = field(default_factory=McpConfig)  # the daemon's own MCP endpoint

    @property
    def tool_dirs(self) -> tuple[Path, ...]:
        """Where tools are read from, in order; a later definition of a name replaces an earlier one."""
        shipped = (SHIPPED_TOOLS_DIR,) if self.shipped_tools else ()
        return (*shipped, self.tools_dir)

    @property
    def profile_dirs(self) -> tuple[Path, ...]:
        """Where a profile name is looked up, in order: the operator's directory first."""
        return (self.profiles_dir, SHIPPED_PROFILES_DIR)


def load_config(path: Path | None) -> Config:
    """The configuration in ``path`` over the embedded defaults; ``None`` = the defaults alone.

    Raises :class:`ConfigError` naming the file, the key and the reason.
    """
    if path is None:
        return Config()
    top = TomlTable(read_config_tree(path), file=path)  # with the files it includes
    daemon = _daemon(top.take_table("daemon"))
    sandbox = _sandbox(top.take_table("sandbox"))
    audit = parse_audit_config(top.take_table("audit"))
    egress = parse_egress(top.take_table("egress"))
    sessions = _sessions(top.take_table("sessions"))
    mcp = parse_mcp(top.take_table("mcp"), tls=daemon.tls is not None)
    policy = parse_policy(top)
    _check_role_networks(policy, path)
    defaults = Config()
    tools_dir = _directory(top, "tools_dir", defaults.tools_dir)
    profiles_dir = _directory(top, "profiles_dir", defaults.profiles_dir)
    shipped_tools = top.take_bool("shipped_tools", defaults.shipped_tools)
    mcp_servers = top.take_table("mcp_servers")
    mcp_servers_dir = _directory(top, "mcp_servers_dir", defaults.mcp_servers_dir)
    top.finish()
    return Config(daemon, sandbox, tools_dir, profiles_dir, shipped_tools, audit, policy, path, egress, sessions,
                  mcp_servers={name: mcp_servers.take_raw(name) for name in mcp_servers.remaining_keys()},
                  mcp_servers_dir=mcp_servers_dir, mcp=mcp)


def _sessions(table: TomlTable) -> SessionsConfig:
    default = SessionsConfig()
    result = SessionsConfig(
        idle_timeout_ms=table.take_parsed("idle_timeout", default.idle_timeout_ms, parse_positive_duration_ms),
        max_lifetime_ms=table.take_parsed("max_lifetime", default.max_lifetime_ms, parse_positive_duration_ms),
        max_per_principal=table.take_int("max_per_principal", default.max_per_principal, minimum=0, maximum=4096),
        max_total=table.take_int("max_total", default.max_total, minimum=0, maximum=4096),
        memory_total_bytes=table.take_parsed("memory_total", default.memory_total_bytes, _positive_size),
        file_max_bytes=table.take_parsed("file_max", default.file_max_bytes, _positive_size),
    )
    table.finish()
    return result


def _check_role_networks(policy: PolicyConfig, path: Path) -> None:
    """Each role's ``network_allow`` holds allowlist entries (the policy keeps them as written)."""
    for role in policy.roles.values():
        if role.network_allow is not None:
            try:
                Allowlist.parse(role.network_allow)
            except ValueError as exc:
                raise ConfigError(f"{path}: roles.{role.name}.network_allow: {exc}") from None


# What a reload cannot change in a running daemon: (dotted key, how to read it from a Config).
RESTART_KEYS: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("daemon.socket", lambda c: c.daemon.socket),
    ("daemon.socket_mode", lambda c: c.daemon.socket_mode),
    ("daemon.socket_group", lambda c: c.daemon.socket_group),
    ("daemon.framed_socket", lambda c: c.daemon.framed_socket),
    ("daemon.tcp_listen", lambda c: c.daemon.tcp_listen),
    ("daemon.tls", lambda c: c.daemon.tls),
    ("daemon.metrics_listen", lambda c: c.daemon.metrics_listen),
    ("daemon.health_listen", lambda c: c.daemon.health_listen),
    ("daemon.state_dir", lambda c: c.daemon.state_dir),
    ("daemon.instance", lambda c: c.daemon.instance),
    ("sandbox.ids", lambda c: c.sandbox.ids),
    ("sandbox.setup_timeout", lambda c: c.sandbox.setup_timeout_ms),
    ("audit", lambda c: c.audit),
    ("egress", lambda c: c.egress),
    ("mcp.listen", lambda c: c.mcp.listen),
    ("mcp.path", lambda c: c.mcp.path),
    ("mcp.max_sessions", lambda c: c.mcp.max_sessions),
    ("mcp.session_idle_timeout", lambda c: c.mcp.session_idle_timeout_ms),
)


def restart_needed(running: Config, new: Config) -> list[str]:
    """The keys whose change ``new`` asks for that only a restart can apply."""
    return [key for key, read in RESTART_KEYS if read(running) != read(new)]


def _directory(table: TomlTable, key: str, default: Path) -> Path:
    """A directory that, when the file names it, must exist (the default may be absent: nothing to add)."""
    if not table.has(key):
        return default
    path = Path(table.take_str(key, str(default)))
    if not path.is_absolute():
        raise table.error(key, f"must be an absolute path, got {str(path)!r}")
    if not path.is_dir():
        raise table.error(key, f"{path} is not a directory")
    return path


def _absolute_path(value: object) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected an absolute path, got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path, got {value!r}")
    return path


def _octal_mode(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{3,4}", value):
        mode = int(value.replace("o", ""), 8)
    else:
        raise ValueError(f"expected an octal mode such as \"0660\", got {value!r}")
    if mode & ~0o777:
        raise ValueError(f"only permission bits are allowed, got {oct(mode)}")
    if mode & 0o007:
        raise ValueError(f"{oct(mode)} lets every user on the host call the daemon; use the socket group")
    return mode


def _tcp_listen(value: object, *, tls: bool) -> str | None:
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected \"host:port\", got {value!r}")
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected \"host:port\", got {value!r}")
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError as exc:
        raise ValueError(f"{host!r} is not an IP address") from exc
    if not address.is_loopback and not tls:
        raise ValueError(f"{value!r} is not a loopback address: listening beyond this host needs TLS ([daemon.tls])")
    return value


def _health_listen(value: object) -> str | None:
    """Any ``IP:PORT`` (it tells only whether the daemon serves), or "" for none."""
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected \"host:port\", got {value!r}")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected \"host:port\", got {value!r}")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError as exc:
        raise ValueError(f"{host!r} is not an IP address") from exc
    return value


def instance_name(value: object) -> str:
    """An instance names directories (cgroups): no '/', no leading dot, nothing odd."""
    if not isinstance(value, str) or not _INSTANCE.match(value):
        raise ValueError(f"{value!r} must be letters, digits, '_', '.', '-' (at most 48, not starting with '.')")
    return value


def _positive_size(value: object) -> int:
    size = parse_size_bytes(value)  # type: ignore[arg-type]
    if size <= 0:
        raise ValueError("must be positive")
    return size


def _daemon(table: TomlTable) -> DaemonConfig:
    default = DaemonConfig()
    tls = parse_tls(table.take_table("tls")) if table.has("tls") else None
    result = DaemonConfig(
        socket=table.take_parsed("socket", default.socket, _absolute_path),
        socket_mode=table.take_parsed("socket_mode", default.socket_mode, _octal_mode),
        socket_group=table.take_str("socket_group", default.socket_group),
        framed_socket=table.take_parsed("framed_socket", default.framed_socket, optional_absolute_path),
        tcp_listen=table.take_parsed(
            "tcp_listen", default.tcp_listen, lambda value: _tcp_listen(value, tls=tls is not None)
        ),
        tls=tls,
        metrics_listen=table.take_parsed("metrics_listen", default.metrics_listen, parse_metrics_listen),
        health_listen=table.take_parsed("health_listen", default.health_listen, _health_listen),
        state_dir=table.take_parsed("state_dir", default.state_dir, _absolute_path),
        instance=table.take_parsed("instance", default.instance, instance_name),
        max_concurrent_executions=table.take_int(
            "max_concurrent_executions", default.max_concurrent_executions, minimum=1, maximum=4096
        ),
        max_request_bytes=table.take_parsed("max_request_bytes", default.max_request_bytes, _positive_size),
        grace_period_ms=table.take_parsed("grace_period", default.grace_period_ms, parse_duration_ms),
    )
    table.finish()
    if result.framed_socket == result.socket:
        raise table.error("framed_socket", f"{result.framed_socket} is daemon.socket; give it a path of its own")
    return result


def _ids(value: object) -> IdRange:
    if not isinstance(value, str):
        raise ValueError(f"expected \"FIRST-LAST\", got {value!r}")
    try:
        ids = IdRange.parse(value)
    except ConfigError as exc:
        raise ValueError(exc.message) from None
    users = sorted(f"user {entry.pw_name} ({entry.pw_uid})" for entry in pwd.getpwall() if entry.pw_uid in ids)
    groups = sorted(f"group {entry.gr_name} ({entry.gr_gid})" for entry in grp.getgrall() if entry.gr_gid in ids)
    if users or groups:
        raise ValueError(f"{ids} holds host accounts ({', '.join([*users, *groups][:5])}): pick a range no "
                         "account uses")
    return ids


def _sandbox(table: TomlTable) -> SandboxConfig:
    default = SandboxConfig()
    for retired in ("uid", "gid"):
        if table.has(retired):
            raise table.error(retired, "each execution runs as a uid and gid of its own now: set "
                                       'ids = "FIRST-LAST" instead (the first id is the sandboxes\' shared group)')
    ids = table.take_parsed("ids", default.ids, _ids)
    setup_timeout_ms = table.take_parsed("setup_timeout", default.setup_timeout_ms, parse_positive_duration_ms)
    profile = table.take_str("default_profile", default.default_profile)
    if not _PROFILE_NAME.match(profile):
        raise table.error("default_profile", f"{profile!r} is not a profile name")
    limits = take_limits(table.take_table("limits"), default.limits)
    pool = table.take_table("pool")
    pool_size = pool.take_int("size", default.pool_size, minimum=0, maximum=64)
    pool_total = pool.take_int("total", default.pool_total, minimum=0, maximum=4096)
    pool.finish()
    table.finish()
    return SandboxConfig(ids=ids, setup_timeout_ms=setup_timeout_ms, default_profile=profile, limits=limits,
                         pool_size=pool_size, pool_total=pool_total)


def is_profile_name(name: str) -> bool:
    """A profile is named, never addressed by path: letters, digits, '_', '.', '-' and no leading dot."""
    return bool(_PROFILE_NAME.match(name))
