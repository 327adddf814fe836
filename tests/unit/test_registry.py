"""The registry turns a call into an ExecutionSpec — or refuses it before anything runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.base.limits import Limits
from sandboxd.base.refusals import InvalidParams, InvalidRequest, UnknownProfile, UnknownTool
from sandboxd.egress.settings import PROXY_PORT, proxy_env
from sandboxd.server.config import SHIPPED_HANDLERS_DIR, SHIPPED_PROFILES_DIR, SHIPPED_TOOLS_DIR
from sandboxd.server.registry import ToolRegistry
from sandboxd.server.tools import BASE_ENV, load_tools

DEFAULTS = Limits()


class FakeCompiler:
    def __init__(self) -> None:
        self.compiled: list[Path] = []

    def __call__(self, path: Path) -> bytes:
        self.compiled.append(path)
        return f"bpf:{path.parent.name}/{path.name}".encode()


@pytest.fixture
def registry(tmp_path: Path) -> ToolRegistry:
    (tmp_path / "files").mkdir()
    (tmp_path / "sqlite").mkdir()
    tools = load_tools([SHIPPED_TOOLS_DIR], placeholders={"handlers_dir": str(SHIPPED_HANDLERS_DIR),
                       "state_dir": str(tmp_path), "data_dir": str(tmp_path)}, default_limits=DEFAULTS)
    registry = ToolRegistry(tools, default_limits=DEFAULTS, default_profile="default",
                            profile_dirs=(tmp_path / "profiles", SHIPPED_PROFILES_DIR), compile_profile=FakeCompiler(),
                            host_env={"PATH": "/host", "AWS_SECRET_ACCESS_KEY": "x"})
    registry.compile_all()
    return registry


def test_registry_plans_with_the_decided_limits_as_they_are(registry: ToolRegistry) -> None:
    # ceilings are the policy's, applied once there (test_policy.py); the registry neither lowers nor refuses
    decided = Limits(memory_max_bytes=2**40, wall_time_ms=10**9, pids_max=None)
    assert registry.plan_tool("python", params={"code": "1"}, limits=decided).limits == decided
    assert registry.plan_command(["/bin/true"], limits=decided).limits == decided
    assert registry.plan_tool("python", params={"code": "1"}).limits == registry.get("python").limits
    assert registry.plan_command(["/bin/true"]).limits == DEFAULTS


def test_plan_tool(registry: ToolRegistry) -> None:
    tool_limits = registry.get("python").limits
    params = registry.check_params("python", '{"code": "print(1)"}')
    spec = registry.plan_tool("python", params=params, stdin=b"data",
                              limits=dataclasses.replace(tool_limits, wall_time_ms=5000), labels={"team": "a"})
    assert spec.argv[0] == "/usr/bin/python3"
    assert spec.stdin == b'{"code":"print(1)"}\ndata'
    assert spec.limits.wall_time_ms == 5000
    assert spec.limits.memory_max_bytes == 256 * 1024**2  # the tool's ceiling, kept
    assert spec.seccomp_bpf == b"bpf:seccomp-profiles/python.json"
    assert spec.seccomp_profile_name == "python"
    assert spec.tool == "python" and spec.labels == {"team": "a"}
    assert dict(spec.env) == dict(BASE_ENV)  # nothing of the host's
    assert spec.egress_listen_port is None  # no network: no door out, no proxy variables


def test_a_networked_tool_or_command_gets_the_door_and_the_proxy_variables(registry: ToolRegistry) -> None:
    spec = registry.plan_tool("http_fetch", params={"url": "https://api.example.com/"})
    assert spec.egress_listen_port == PROXY_PORT
    assert dict(spec.env) == dict(BASE_ENV) | proxy_env()
    assert spec.env["HTTPS_PROXY"] == spec.env["https_proxy"] == f"http://127.0.0.1:{PROXY_PORT}"
    assert spec.env["ALL_PROXY"] == f"socks5h://127.0.0.1:{PROXY_PORT}"
    command = registry.plan_command(["/usr/bin/curl"], networked=True)
    assert command.egress_listen_port == PROXY_PORT and command.env["HTTP_PROXY"] == f"http://127.0.0.1:{PROXY_PORT}"
    assert registry.plan_command(["/usr/bin/curl"]).egress_listen_port is None


def test_plan_tool_refusals(registry: ToolRegistry) -> None:
    with pytest.raises(UnknownTool, match="no tool named 'nope'"):
        registry.check_params("nope", "{}")
    with pytest.raises(UnknownTool, match="no tool named 'nope'"):
        registry.plan_tool("nope", params={})
    with pytest.raises(InvalidParams):
        registry.check_params("python", '{"code": 1}')


def test_plan_command(registry: ToolRegistry) -> None:
    spec = registry.plan_command(["/bin/echo", "hi"], stdin=b"in", limits=Limits(output_max_bytes=10))
    assert spec.argv == ("/bin/echo", "hi")
    assert spec.stdin == b"in"
    assert spec.seccomp_profile_name == "default"
    assert spec.limits.output_max_bytes == 10
    assert spec.tool == ""
    assert registry.plan_command(["sh"], profile="python").seccomp_bpf == b"bpf:seccomp-profiles/python.json"
    with pytest.raises(InvalidRequest, match="must name a program"):
        registry.plan_command([])
    with pytest.raises(InvalidRequest, match="NUL"):
        registry.plan_command(["/bin/echo", "a\0b"])


def test_profiles_are_names_searched_in_order(registry: ToolRegistry, tmp_path: Path) -> None:
    assert registry.profile_path("default") == SHIPPED_PROFILES_DIR / "default.json"
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "default.json").write_text("{}")
    assert registry.profile_path("default") == tmp_path / "profiles" / "default.json"
    for bad in ("../default", "/etc/passwd", ".hidden", ""):
        with pytest.raises(UnknownProfile):
            registry.profile_path(bad)
    with pytest.raises(UnknownProfile, match="no seccomp profile named 'absent'"):
        registry.profile_path("absent")


def test_profiles_change_only_when_compiled_again(registry: ToolRegistry, tmp_path: Path) -> None:
    # What requests get is what the last start or reload compiled: a file added or edited since is not read.
    assert registry.plan_command(["sh"]).seccomp_bpf == b"bpf:seccomp-profiles/default.json"
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "default.json").write_text("{}")
    (tmp_path / "profiles" / "extra.json").write_text("{}")
    assert registry.plan_command(["sh"]).seccomp_bpf == b"bpf:seccomp-profiles/default.json"
    with pytest.raises(UnknownProfile, match=r"no seccomp profile named 'extra' was loaded: .*reload"):
        registry.plan_command(["sh"], profile="extra")
    registry.compile_all()  # the reload
    assert registry.plan_command(["sh"]).seccomp_bpf == b"bpf:profiles/default.json"
    assert registry.plan_command(["sh"], profile="extra").seccomp_bpf == b"bpf:profiles/extra.json"


def test_compile_all_fails_the_start_naming_the_tool(tmp_path: Path) -> None:
    tool_dir = tmp_path / "tools"
    tool_dir.mkdir()
    (tool_dir / "t.toml").write_text('description = "t"\nargv = ["/bin/true"]\nseccomp_profile = "absent"\n')
    tools = load_tools([tool_dir], placeholders={}, default_limits=DEFAULTS)
    registry = ToolRegistry(tools, default_limits=DEFAULTS, default_profile="default",
                            profile_dirs=(SHIPPED_PROFILES_DIR,), compile_profile=FakeCompiler(), host_env={})
    with pytest.raises(ConfigError, match=f"{tool_dir / 't.toml'}: seccomp_profile: no seccomp profile named"):
        registry.compile_all()


def test_shipped_profiles_compile_for_real() -> None:
    seccomp = pytest.importorskip("sandboxd.engine.seccomp.profile")
    cache = seccomp.ProfileCache()
    for name in ("default", "python", "file_processor", "sqlite_query"):
        path = SHIPPED_PROFILES_DIR / f"{name}.json"
        assert json.loads(path.read_text())["defaultAction"] == "SCMP_ACT_ERRNO"
        assert cache.get(path).bpf
