"""Tools as configuration: loading, binds, the network mode, and the environment a handler gets."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.base.limits import Limits
from sandboxd.server.config import SHIPPED_HANDLERS_DIR, SHIPPED_TOOLS_DIR
from sandboxd.server.tools import BASE_ENV, EnvPolicy, is_secret_name, load_tool, load_tools

DEFAULTS = Limits()


def placeholders(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "state" / "files").mkdir(parents=True, exist_ok=True)
    (tmp_path / "state" / "sqlite").mkdir(parents=True, exist_ok=True)
    return {"handlers_dir": str(SHIPPED_HANDLERS_DIR), "state_dir": str(tmp_path / "state"),
            "data_dir": str(SHIPPED_HANDLERS_DIR.parent)}


def write_tool(tmp_path: Path, text: str, name: str = "demo") -> Path:
    directory = tmp_path / "tools"
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


MINIMAL = 'description = "a demo"\nargv = ["/bin/true"]\n'


def test_shipped_tools_load(tmp_path: Path) -> None:
    tools = load_tools([SHIPPED_TOOLS_DIR], placeholders=placeholders(tmp_path), default_limits=DEFAULTS)
    assert list(tools) == ["file_processor", "http_fetch", "python", "sqlite_query"]
    for tool in tools.values():
        assert tool.network == ("allowlist" if tool.name == "http_fetch" else "none")
        assert tool.seccomp_profile == tool.name
        assert tool.params_schema["type"] == "object"
        assert tool.binds[0].target == PurePosixPath("/opt/sandboxd/handlers")
        assert all(not bind.writable for bind in tool.binds)
    assert tools["python"].limits.memory_max_bytes == 256 * 1024**2
    assert tools["file_processor"].binds[1].source == tmp_path / "state" / "files"


def test_minimal_tool_inherits_default_limits_and_takes_no_params(tmp_path: Path) -> None:
    tool = load_tool(write_tool(tmp_path, MINIMAL), placeholders={}, default_limits=DEFAULTS)
    assert tool.name == "demo"
    assert tool.limits == DEFAULTS
    assert tool.seccomp_profile == "default"
    assert tool.params_schema == {"type": "object", "additionalProperties": False}


def test_later_directories_override_by_name(tmp_path: Path) -> None:
    write_tool(tmp_path, 'description = "mine"\nargv = ["/bin/true"]\n', name="python")
    tools = load_tools([SHIPPED_TOOLS_DIR, tmp_path / "tools", tmp_path / "absent"],
                       placeholders=placeholders(tmp_path), default_limits=DEFAULTS)
    assert tools["python"].description == "mine"
    assert "sqlite_query" in tools


def test_a_tool_without_network_has_none_and_an_allowlist_is_read_as_written(tmp_path: Path) -> None:
    assert load_tool(write_tool(tmp_path, MINIMAL), placeholders={}, default_limits=DEFAULTS).network_allow is None
    none = load_tool(write_tool(tmp_path, MINIMAL + 'network = "none"'), placeholders={}, default_limits=DEFAULTS)
    assert none.network == "none" and none.network_allow is None
    text = MINIMAL + '[network]\nallow = ["api.example.com:443", "*.wikipedia.org", "10.1.2.0/24:8080"]\n'
    tool = load_tool(write_tool(tmp_path, text), placeholders={}, default_limits=DEFAULTS)
    assert tool.network == "allowlist"
    assert tool.network_allow is not None
    assert tool.network_allow.texts() == ["api.example.com:443", "*.wikipedia.org", "10.1.2.0/24:8080"]
    assert tool.network_allow.match("api.example.com", 443) is not None
    assert tool.network_allow.match("api.example.com", 80) is None
    empty = load_tool(write_tool(tmp_path, MINIMAL + "[network]\nallow = []\n"), placeholders={},
                      default_limits=DEFAULTS)
    assert empty.network == "allowlist" and empty.network_allow is not None and not empty.network_allow.entries


def test_tool_limits_lower_the_defaults(tmp_path: Path) -> None:
    path = write_tool(tmp_path, MINIMAL + '[limits]\nmemory = "32M"\nwall_time = "2s"\n')
    tool = load_tool(path, placeholders={}, default_limits=DEFAULTS)
    assert tool.limits.memory_max_bytes == 32 * 1024**2
    assert tool.limits.wall_time_ms == 2000
    assert tool.limits.pids_max == DEFAULTS.pids_max


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('argv = ["/bin/true"]', "description", "needs a description"),
        ('description = "x"\nargv = ["true"]', "argv", "absolute path"),
        ('description = "x"\nargv = "/bin/true"', "argv", "list of strings"),
        (MINIMAL + 'network = "host"', "network", 'expected "none" or a table'),
        (MINIMAL + "[network]\nallow = ['*']", "network.allow", "'*'"),
        (MINIMAL + "[network]\nallow = ['api.example.com:99999']", "network.allow", "api.example.com:99999"),
        (MINIMAL + "[network]\nallow = 'api.example.com'", "network.allow", "list of strings"),
        (MINIMAL + "[network]\nhosts = ['api.example.com']", "network.allow", "required"),
        (MINIMAL + "[network]\nallow = []\nmode = 'x'", "network.mode", "unknown key"),
        (MINIMAL + 'seccomp_profile = "../x"', "seccomp_profile", "not a profile name"),
        (MINIMAL + "[params_schema]\ntype = 12", "params_schema", "not a valid JSON Schema"),
        (MINIMAL + '[params_schema]\ntype = "array"', "params_schema", "type = \"object\""),
        (MINIMAL + '[[binds]]\nsource = "{nowhere}/x"\ntarget = "/x"', "binds[0].source", "unknown placeholder"),
        (MINIMAL + '[[binds]]\nsource = "/no/such/path"\ntarget = "/x"', "binds[0].source", "existing"),
        (MINIMAL + '[[binds]]\nsource = "/usr"\ntarget = "/etc/x"', "binds[0].target", "builds itself"),
        (MINIMAL + '[[binds]]\nsource = "/usr"\ntarget = "x"', "binds[0].target", "absolute"),
        (MINIMAL + '[[binds]]\nsource = "/usr"\ntarget = "/x"\nmode = "rw"', "binds[0].mode", "unknown key"),
        (MINIMAL + '[env]\nallow = ["AWS_REGION"]', "env.allow", "looks like a secret"),
        (MINIMAL + '[env]\nset = { DB_PASSWORD = "x" }', "env.set", "looks like a secret"),
        (MINIMAL + '[env]\nallow = ["NOT-A-NAME"]', "env.allow", "not an environment variable name"),
        (MINIMAL + '[env]\nset = { X = 1 }', "env.set.X", "a string"),
        (MINIMAL + "[limits]\nmemory = 'lots'", "limits.memory", "not a number"),
        (MINIMAL + "surprise = true", "surprise", "unknown key"),
    ],
)
def test_tool_errors_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write_tool(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_tool(path, placeholders={}, default_limits=DEFAULTS)
    assert caught.value.message.startswith(f"{path}: {key}: "), caught.value.message
    assert reason in caught.value.message


def test_file_name_must_be_a_tool_name(tmp_path: Path) -> None:
    path = write_tool(tmp_path, MINIMAL, name="Bad Name")
    with pytest.raises(ConfigError, match="tool name"):
        load_tool(path, placeholders={}, default_limits=DEFAULTS)


@pytest.mark.parametrize(
    "name",
    ["API_SECRET", "GITHUB_TOKEN", "OPENAI_API_KEY", "DB_PASSWORD", "PGPASSWORD", "DATABASE_URL",
     "AWS_ACCESS_KEY_ID", "AWS_REGION", "client_secret", "GOOGLE_APPLICATION_CREDENTIALS", "MY_SECRET_VALUE"],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PATH", "LANG", "TZ", "KEYBOARD", "HOME", "MONKEY_BUSINESS", "TOKENIZER"])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


HOST_ENV = {"PATH": "/root/.pyenv/shims:/usr/bin", "HOME": "/root", "TZ": "UTC", "LANG": "de_DE.UTF-8",
            "WEATHER_API_KEY": "k-123", "AWS_SECRET_ACCESS_KEY": "aws", "DATABASE_URL": "postgres://x",
            "UNRELATED": "x"}


def test_env_is_built_from_the_allowlist_only() -> None:
    env = EnvPolicy(allow=("TZ", "MISSING"), set={"LC_ALL": "C.UTF-8"}).build(HOST_ENV)
    assert env == {**BASE_ENV, "TZ": "UTC", "LC_ALL": "C.UTF-8"}
    assert env["PATH"] == BASE_ENV["PATH"] and env["HOME"] == "/work"  # never the host's


def test_secrets_pass_only_when_declared() -> None:
    env = EnvPolicy(secrets=("WEATHER_API_KEY",)).build(HOST_ENV)
    assert env["WEATHER_API_KEY"] == "k-123"
    assert "AWS_SECRET_ACCESS_KEY" not in env and "DATABASE_URL" not in env


def test_secret_in_allow_is_dropped_even_past_the_loader() -> None:
    env = EnvPolicy(allow=("AWS_SECRET_ACCESS_KEY", "DATABASE_URL"), set={"X_TOKEN": "t"}).build(HOST_ENV)
    assert "AWS_SECRET_ACCESS_KEY" not in env and "DATABASE_URL" not in env and "X_TOKEN" not in env


def test_declared_secret_in_tool_file(tmp_path: Path) -> None:
    path = write_tool(tmp_path, MINIMAL + '[env]\nallow = ["TZ", "WEATHER_API_KEY"]\nsecrets = ["WEATHER_API_KEY"]\n')
    tool = load_tool(path, placeholders={}, default_limits=DEFAULTS)
    assert tool.env.build(HOST_ENV)["WEATHER_API_KEY"] == "k-123"
