"""The daemon's TOML configuration: embedded defaults, units, and errors naming file, key and reason."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.base.limits import Limits
from sandboxd.engine.ids import IdRange
from sandboxd.server.config import SHIPPED_PROFILES_DIR, SHIPPED_TOOLS_DIR, Config, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sandboxd.toml"
    path.write_text(text)
    return path


def test_no_file_is_the_embedded_defaults() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.daemon.socket == Path("/run/sandboxd/sandboxd.sock")
    assert config.daemon.socket_mode == 0o660
    assert config.daemon.framed_socket is None  # off unless configured
    assert config.daemon.max_request_bytes == 1024 * 1024
    assert config.daemon.grace_period_ms == 10_000
    assert config.sandbox.ids == IdRange(2_000_000_000, 65_536)
    assert config.sandbox.setup_timeout_ms == 60_000
    assert config.sandbox.limits == Limits()
    assert config.tool_dirs[0] == SHIPPED_TOOLS_DIR
    assert config.profile_dirs[-1] == SHIPPED_PROFILES_DIR


def test_empty_file_is_the_defaults_too(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.daemon == Config().daemon
    assert config.source == tmp_path / "sandboxd.toml"


def test_every_key(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    (tmp_path / "seccomp").mkdir()
    config = load_config(write(tmp_path, f"""
tools_dir = "{tmp_path}/tools"
profiles_dir = "{tmp_path}/seccomp"
shipped_tools = false

[daemon]
socket = "/run/other/s.sock"
socket_mode = "0600"
socket_group = "adm"
framed_socket = "/run/other/framed.sock"
tcp_listen = "127.0.0.1:7070"
state_dir = "/run/other"
instance = "blue-2"
max_concurrent_executions = 3
max_request_bytes = "64K"
grace_period = "1.5s"

[sandbox]
ids = "3000000000-3000000099"
setup_timeout = "2s"
default_profile = "strict"

[sandbox.limits]
memory = "64M"
cpu_time = "2s"
cpu_share = "25%"
wall_time = "250ms"
output = "1K"
pids = 16
file_size = "1M"
open_files = 32
tmpfs_size = "8M"
network_bytes = "2M"

[egress]
resolve = {{ "api.example.test" = "127.0.0.1", "Dual.Example.Test." = ["10.0.0.7", "fd00::7"] }}
connect_timeout = "3s"
handshake_timeout = "4s"
idle_timeout = "1m"
resolve_timeout = "2s"
max_head = "16K"
connections_max = 8
connections_per_second = 5

[roles.admin]
tools = ["*"]
admin = true
[roles.fetcher]
tools = ["python"]
network_allow = ["*.example.test:443"]
"""))
    daemon = config.daemon
    assert (daemon.socket, daemon.socket_mode, daemon.socket_group) == (Path("/run/other/s.sock"), 0o600, "adm")
    assert daemon.framed_socket == Path("/run/other/framed.sock")
    assert daemon.tcp_listen == "127.0.0.1:7070"
    assert (daemon.instance, daemon.max_concurrent_executions) == ("blue-2", 3)
    assert (daemon.max_request_bytes, daemon.grace_period_ms) == (64 * 1024, 1500)
    assert (config.sandbox.ids, config.sandbox.setup_timeout_ms, config.sandbox.default_profile) == (
        IdRange(3_000_000_000, 100), 2000, "strict")
    assert config.sandbox.limits == Limits(
        memory_max_bytes=64 * 1024**2, cpu_time_ms=2000, cpu_share_percent=25, wall_time_ms=250,
        output_max_bytes=1024, pids_max=16, file_size_max_bytes=1024**2, open_files_max=32,
        tmpfs_size_bytes=8 * 1024**2, network_max_bytes=2 * 1024**2,
    )
    egress = config.egress
    assert egress.resolve == {"api.example.test": (ipaddress.ip_address("127.0.0.1"),),
                              "dual.example.test": (ipaddress.ip_address("10.0.0.7"), ipaddress.ip_address("fd00::7"))}
    assert (egress.connect_timeout_ms, egress.handshake_timeout_ms, egress.idle_timeout_ms,
            egress.resolve_timeout_ms) == (3000, 4000, 60_000, 2000)
    assert (egress.max_head_bytes, egress.connections_max, egress.connections_per_second) == (16 * 1024, 8, 5)
    assert config.policy.roles["fetcher"].network_allow == ("*.example.test:443",)
    assert config.tool_dirs == (tmp_path / "tools",)
    assert config.profile_dirs == (tmp_path / "seccomp", SHIPPED_PROFILES_DIR)


def test_unlimited_and_partial_limits(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[sandbox.limits]\nmemory = "unlimited"\npids = 5\n'))
    assert config.sandbox.limits.memory_max_bytes is None
    assert config.sandbox.limits.pids_max == 5
    assert config.sandbox.limits.wall_time_ms == Limits().wall_time_ms


def test_sandbox_ids_must_not_hold_host_accounts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sandbox\.ids: .*holds host accounts \(user nobody \(65534\)"):
        load_config(write(tmp_path, '[sandbox]\nids = "65000-66000"\n'))


def test_the_retired_uid_and_gid_keys_say_what_replaced_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'sandbox\.uid: .*a uid and gid of its own now: set ids = "FIRST-LAST"'):
        load_config(write(tmp_path, '[sandbox]\nuid = "nobody"\n'))


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("colour = 1", "colour", "unknown key"),
        ("[daemon]\nsockett = '/x'", "daemon.sockett", "unknown key"),
        ("[sandbox.limits]\nmemroy = '1M'", "sandbox.limits.memroy", "unknown key"),
        ("[daemon]\nmax_request_bytes = '12 parsecs'", "daemon.max_request_bytes", "unknown size unit"),
        ("[daemon]\ngrace_period = 10", "daemon.grace_period", "with a unit"),
        ("[daemon]\ngrace_period = '10'", "daemon.grace_period", "add a unit"),
        ("[daemon]\nmax_concurrent_executions = 0", "daemon.max_concurrent_executions", "between 1 and"),
        ("[daemon]\nmax_concurrent_executions = true", "daemon.max_concurrent_executions", "an integer"),
        ("[daemon]\nsocket = 'relative.sock'", "daemon.socket", "absolute"),
        ("[daemon]\nframed_socket = 'fast.sock'", "daemon.framed_socket", "absolute"),
        ("[daemon]\nsocket = '/run/x.sock'\nframed_socket = '/run/x.sock'", "daemon.framed_socket",
         "is daemon.socket"),
        ("[daemon]\nsocket_mode = '0666'", "daemon.socket_mode", "every user"),
        ("[daemon]\nsocket_mode = 'rw'", "daemon.socket_mode", "octal"),
        ("[daemon]\ntcp_listen = '0.0.0.0:7070'", "daemon.tcp_listen", "TLS"),
        ("[daemon]\ntcp_listen = '127.0.0.1'", "daemon.tcp_listen", "host:port"),
        ("[daemon]\ninstance = '../x'", "daemon.instance", "letters"),
        ("[sandbox]\nids = '0-100'", "sandbox.ids", "1 <= first"),
        ("[sandbox]\nids = '5-4'", "sandbox.ids", "2 <= count"),
        ("[sandbox]\nids = '4000000000-4294967295'", "sandbox.ids", "last <="),
        ("[sandbox]\nids = 'many'", "sandbox.ids", "FIRST-LAST"),
        ("[sandbox]\nsetup_timeout = '0s'", "sandbox.setup_timeout", "positive"),
        ("[sandbox]\ndefault_profile = '../etc/x'", "sandbox.default_profile", "not a profile name"),
        ("[sandbox.limits]\nmemory = '0'", "sandbox.limits.memory", "positive"),
        ("[sandbox.limits]\ntmpfs_size = 'unlimited'", "sandbox.limits.tmpfs_size", "cannot be unlimited"),
        ("[sandbox.limits]\npids = '5'", "sandbox.limits.pids", "whole number"),
        ("tools_dir = '/no/such/dir'", "tools_dir", "not a directory"),
        ("daemon = 3", "daemon", "a table"),
        ("[egress]\nresolve = { 'api.example.test' = 'not-an-ip' }", "egress.resolve.api.example.test",
         "does not appear to be an IPv4 or IPv6 address"),
        ("[egress]\nresolve = { '*.example.test' = '127.0.0.1' }", "egress.resolve.*.example.test", "one host"),
        ("[egress]\nresolve = { 'a.test:80' = '127.0.0.1' }", "egress.resolve.a.test:80", "one host"),
        ("[egress]\nresolve = { 'a.test' = [] }", "egress.resolve.a.test", "an address or a list"),
        ("[egress]\nresolve = '127.0.0.1'", "egress.resolve", "a table"),
        ("[egress]\nconnect_timeout = '0s'", "egress.connect_timeout", "positive"),
        ("[egress]\nmax_head = '10M'", "egress.max_head", "between 1K and 1M"),
        ("[egress]\nconnections_max = 0", "egress.connections_max", "between 1 and"),
        ("[egress]\nproxy_port = 8080", "egress.proxy_port", "unknown key"),
        ("[roles.admin]\nadmin = true\n[roles.r]\ntools = ['python']\nnetwork_allow = ['a.test:0']",
         "roles.r.network_allow", "a.test:0"),
        ("[roles.r]\ntools = ['python']\nnetwork_allow = 'a.test'", "roles.r.network_allow", "list of strings"),
    ],
)
def test_errors_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = caught.value.message
    assert message.startswith(f"{path}: {key}: "), message
    assert reason in message
    assert caught.value.reason == "CONFIG_INVALID"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid TOML"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
