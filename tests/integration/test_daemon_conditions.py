"""Role conditions through a real daemon: a role that requires a JWT claim (``amr`` holding ``mfa``) refuses a
token without it (MFA_REQUIRED), a role's clearance refuses a tool classified above it
(CLASSIFICATION_DENIED) — each PERMISSION_DENIED with one audited decision — ListTools shows only what the
conditions let through, and a tool labelled outside the configured classifications fails the start."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from daemon_harness import Daemon, make_daemon, running

from sandboxd.cli.client import SandboxClient, SandboxdError

pytestmark = pytest.mark.root

JWT_SECRET = b"an-hs256-secret-of-more-than-32-bytes-for-tests"
ISSUER = "https://issuer.example"
AUDIENCE = "sandboxd-test"


def tool(classification: str) -> str:
    label = f'classification = "{classification}"\n' if classification else ""
    return f'description = "exit 0 at once"\nargv = ["/bin/true"]\n{label}'


TOOLS = {"brochure": tool("public"), "wiki": tool("internal"), "payroll": tool("confidential"), "scratch": tool("")}


def policy_toml(key_file: Path) -> str:
    return f"""
[auth]
jwt_key_file = "{key_file}"
jwt_issuer = "{ISSUER}"
jwt_audience = "{AUDIENCE}"

[policy]
classifications = ["public", "internal", "confidential"]
unclassified = "internal"

[principals.local-admin]
roles = ["admin"]

[roles.admin]
tools = ["*"]
commands = true
admin = true

[roles.operator]
tools = ["*"]
require_claims = {{ amr = "mfa" }}

[roles.staff]
tools = ["*"]
clearance = "internal"
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    tmp = tmp_path_factory.mktemp("conditions")
    key_file = tmp / "jwt.key"
    key_file.write_bytes(JWT_SECRET)
    key_file.chmod(0o600)
    with running(make_daemon(tmp, tools=TOOLS, extra=policy_toml(key_file))) as started:
        yield started


def token(roles: list[str], **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "alice", "roles": roles, "iss": ISSUER, "aud": AUDIENCE, "iat": now,
                       "exp": now + 300, **claims}, JWT_SECRET, algorithm="HS256")


def refused(daemon: Daemon, bearer: str, tool_name: str, reason: str) -> SandboxdError:
    request_id = uuid.uuid4().hex[:12]
    with SandboxClient(daemon.socket, token=bearer) as client, pytest.raises(SandboxdError) as caught:
        client.run_tool(tool_name, {}, request_id=request_id)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, reason)
    records = [r for r in daemon.audit_records() if r["request_id"] == request_id]
    assert [r["event"] for r in records] == ["request.received", "decision"], records
    assert (records[1]["details"]["outcome"], records[1]["details"]["reason"]) == ("denied", reason)
    assert records[1]["principal"] == "jwt:alice"
    return caught.value


def runs(daemon: Daemon, bearer: str, tool_name: str) -> None:
    with SandboxClient(daemon.socket, token=bearer) as client:
        assert client.run_tool(tool_name, {}).status_name == "OK"


@pytest.mark.parametrize("claims", [{}, {"amr": ["pwd"]}, {"amr": "otp"}], ids=["no-amr", "pwd", "otp"])
def test_a_token_without_mfa_is_refused(daemon: Daemon, claims: dict[str, Any]) -> None:
    error = refused(daemon, token(["operator"], **claims), "wiki", "MFA_REQUIRED")
    assert "amr claim holds 'mfa'" in error.message


def test_a_token_with_mfa_runs(daemon: Daemon) -> None:
    runs(daemon, token(["operator"], amr=["pwd", "mfa"]), "payroll")


@pytest.mark.parametrize("tool_name", ["brochure", "wiki", "scratch"])
def test_a_tool_at_or_below_the_clearance_runs(daemon: Daemon, tool_name: str) -> None:
    runs(daemon, token(["staff"]), tool_name)  # scratch is unclassified: counts as "internal" here


def test_a_tool_above_the_clearance_is_refused(daemon: Daemon) -> None:
    error = refused(daemon, token(["staff"]), "payroll", "CLASSIFICATION_DENIED")
    assert "classified 'confidential', above role 'staff''s clearance 'internal'" in error.message


def test_another_role_whose_conditions_hold_still_grants(daemon: Daemon) -> None:
    runs(daemon, token(["staff", "operator"], amr="mfa"), "payroll")


def test_list_tools_shows_what_the_conditions_let_through(daemon: Daemon) -> None:
    def names(bearer: str) -> list[str]:
        with SandboxClient(daemon.socket, token=bearer) as client:
            return sorted(t.name for t in client.list_tools() if t.name in TOOLS)

    assert names(token(["staff"])) == ["brochure", "scratch", "wiki"]
    assert names(token(["operator"])) == []
    assert names(token(["operator"], amr=["mfa"])) == sorted(TOOLS)
    with daemon.client() as admin:
        labels = {t.name: t.classification for t in admin.list_tools() if t.name in TOOLS}
    assert labels == {"brochure": "public", "wiki": "internal", "payroll": "confidential", "scratch": ""}


def test_a_tool_labelled_outside_the_classifications_fails_the_start(tmp_path: Path) -> None:
    key_file = tmp_path / "jwt.key"
    key_file.write_bytes(JWT_SECRET)
    broken = make_daemon(tmp_path, tools={"vault": tool("secret")}, extra=policy_toml(key_file))
    done = subprocess.run(broken.command(), capture_output=True, timeout=30)
    assert done.returncode == 78, done.stderr
    assert f"{broken.tools_dir / 'vault.toml'}: classification: 'secret' is not one of".encode() in done.stderr
