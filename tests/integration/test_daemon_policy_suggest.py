"""``sandboxctl policy suggest`` over a trail a real daemon recorded: it prints, per principal, a TOML role
with exactly the tools that principal ran and ceilings above what they needed — the same from the daemon
(SubscribeAudit) and from the audit file — and a daemon started with those roles lets each principal run what
it ran, within the ceilings, and refuses everything else."""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from daemon_harness import Daemon, make_daemon, running

from sandboxd.base.units import parse_duration_ms
from sandboxd.cli.client import SandboxClient, SandboxdError

pytestmark = pytest.mark.root

TOOLS = {
    "quick": 'description = "exit 0 at once"\nargv = ["/bin/true"]\n',
    "sleepy": 'description = "sleep a little"\nargv = ["/bin/sleep", "0.3"]\n',
    "other": 'description = "another tool"\nargv = ["/bin/true"]\n',
}
PRINCIPALS = ("alice", "bob")


def principals_toml(roles: dict[str, str]) -> str:
    lines = ['[principals.local-admin]', 'roles = ["admin"]']
    for name in PRINCIPALS:
        digest = hashlib.sha256(f"{name}-token".encode()).hexdigest()
        lines += [f"[principals.{name}]", f'roles = ["{roles[name]}"]', f'token_sha256 = ["{digest}"]']
    return "\n".join(lines) + '\n[roles.admin]\ntools = ["*"]\ncommands = true\nadmin = true\n'


def client(daemon: Daemon, principal: str) -> SandboxClient:
    return SandboxClient(daemon.socket, token=f"{principal}-token")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str, str]]:
    """A daemon whose trail holds alice running quick (twice) and sleepy, bob running other, and a refusal;
    with the suggestion asked of the daemon and the one read from its audit file."""
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    extra = principals_toml({"alice": "broad", "bob": "broad"})
    extra += '[roles.broad]\ntools = ["quick", "sleepy", "other"]\n'
    with running(make_daemon(tmp_path_factory.mktemp("suggest"), tools=TOOLS, extra=extra)) as daemon:
        with client(daemon, "alice") as alice, client(daemon, "bob") as bob:
            for tool in ("quick", "quick", "sleepy"):
                assert alice.run_tool(tool, {}).status_name == "OK"
            assert bob.run_tool("other", {}).status_name == "OK"
            with pytest.raises(SandboxdError):
                bob.run_tool("missing", {})
        asked = daemon.ctl("policy", "suggest", "--since", "1h")
        assert asked.returncode == 0, asked.stderr
        offline = daemon.ctl("policy", "suggest", "--audit-file", str(daemon.audit_log))
        assert offline.returncode == 0, offline.stderr
        yield daemon, asked.stdout.decode(), offline.stdout.decode()


def test_each_principal_gets_exactly_the_tools_it_ran(recorded: tuple[Daemon, str, str]) -> None:
    _, asked, _ = recorded
    roles = tomllib.loads(asked)["roles"]
    assert roles["least-alice"]["tools"] == ["quick", "sleepy"]
    assert roles["least-bob"]["tools"] == ["other"]
    assert "commands" not in roles["least-alice"]
    assert parse_duration_ms(roles["least-alice"]["ceilings"]["wall_time"]) >= 450  # sleepy's 0.3 s, the margin
    assert "# sleepy: 1 run (1 ok)" in asked
    assert "# refused: missing (TOOL_NOT_GRANTED), 1 time" in asked
    assert "least-local-admin" not in roles  # the admin ran nothing itself


def test_the_audit_file_gives_the_same_roles(recorded: tuple[Daemon, str, str]) -> None:
    _, asked, offline = recorded
    assert tomllib.loads(offline) == tomllib.loads(asked)


def test_a_daemon_with_the_suggested_roles_allows_what_was_used_and_nothing_else(
        recorded: tuple[Daemon, str, str], tmp_path: Path) -> None:
    _, asked, _ = recorded
    extra = principals_toml({"alice": "least-alice", "bob": "least-bob"}) + asked
    with running(make_daemon(tmp_path, tools=TOOLS, extra=extra)) as daemon, \
            client(daemon, "alice") as alice, client(daemon, "bob") as bob:
        for tool in ("quick", "sleepy"):
            assert alice.run_tool(tool, {}).status_name == "OK"
        assert bob.run_tool("other", {}).status_name == "OK"
        for who, tool in ((alice, "other"), (bob, "quick"), (bob, "sleepy")):
            with pytest.raises(SandboxdError) as caught:
                who.run_tool(tool, {})
            assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                                "TOOL_NOT_GRANTED")
        with pytest.raises(SandboxdError) as caught:
            alice.run_command(["/bin/true"])
        assert caught.value.reason == "COMMAND_NOT_GRANTED"
