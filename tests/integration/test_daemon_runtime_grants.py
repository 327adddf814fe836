"""Runtime grants through a real daemon: an admin's grant takes effect for the next request (under the
principal's role, its constraint held), a revoke ends it, each is audited; only admins grant, and a grant
must name a known principal and tool and expire within max_ttl; grants survive a restart, and end at their
expiry — recorded once, also when it passed while the daemon was down; ``sandboxctl grant|revoke|grants``."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from daemon_harness import Daemon, make_daemon, running, wait_for

from sandboxd.cli.client import SandboxClient, SandboxdError

pytestmark = pytest.mark.root

TOOLS = {
    "quick": 'description = "exit 0 at once"\nargv = ["/bin/true"]\n',
    "query": 'description = "runs SQL (here: exits 0)"\nargv = ["/bin/true"]\n'
             '[params_schema]\ntype = "object"\nproperties = { sql = { type = "string" } }\n',
}


def policy_toml() -> str:
    lines = ["[policy.grants]", 'max_ttl = "2h"', "[principals.local-admin]", 'roles = ["admin"]']
    for name in ("alice", "bob"):
        digest = hashlib.sha256(f"{name}-token".encode()).hexdigest()
        lines += [f"[principals.{name}]", 'roles = ["reader"]', f'token_sha256 = ["{digest}"]']
    return "\n".join(lines) + """
[roles.admin]
tools = ["*"]
commands = true
admin = true
[roles.reader]
tools = ["quick"]
[roles.reader.ceilings]
wall_time = "5s"
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    with running(make_daemon(tmp_path_factory.mktemp("grants"), tools=TOOLS, extra=policy_toml())) as started:
        yield started


def as_(daemon: Daemon, principal: str) -> SandboxClient:
    return SandboxClient(daemon.socket, token=f"{principal}-token")


def run_query(daemon: Daemon, principal: str, sql: str = "select 1") -> tuple[str, dict[str, Any]]:
    """The outcome's status (or the refusal's reason), and the request's decision record."""
    request_id = uuid.uuid4().hex[:12]
    with as_(daemon, principal) as client:
        try:
            outcome = client.run_tool("query", {"sql": sql}, request_id=request_id)
            status = outcome.status_name
        except SandboxdError as error:
            status = error.reason
    [decision] = [r for r in daemon.audit_records() if r["request_id"] == request_id and r["event"] == "decision"]
    return status, decision


def grant_records(daemon: Daemon, grant_id: str) -> list[dict[str, Any]]:
    return [r for r in daemon.audit_records() if r["event"].startswith("grant.") and
            r["details"].get("grant_id") == grant_id]


def test_a_grant_takes_effect_for_the_next_request_and_a_revoke_ends_it(daemon: Daemon) -> None:
    assert run_query(daemon, "alice")[0] == "TOOL_NOT_GRANTED"
    with daemon.client() as admin:
        grant = admin.grant("alice", "query", ttl_ms=3_600_000, reason="ticket 7")
        status, decision = run_query(daemon, "alice")
        assert status == "OK"
        assert (decision["details"]["role"], decision["details"]["grant"]) == ("reader", f"runtime:{grant.grant_id}")
        assert run_query(daemon, "bob")[0] == "TOOL_NOT_GRANTED"  # another principal's is not
        [created] = grant_records(daemon, grant.grant_id)
        assert (created["event"], created["principal"], created["tool"]) == ("grant.created", "alice", "query")
        assert (created["details"]["by"], created["details"]["reason"]) == ("local-admin", "ticket 7")
        revoked = admin.revoke(grant.grant_id, reason="done")
        assert revoked.grant_id == grant.grant_id
    assert run_query(daemon, "alice")[0] == "TOOL_NOT_GRANTED"
    assert [r["event"] for r in grant_records(daemon, grant.grant_id)] == ["grant.created", "grant.revoked"]
    assert grant_records(daemon, grant.grant_id)[1]["details"]["revoke_reason"] == "done"


def test_a_runtime_grant_holds_params_to_its_constraint_and_its_role_to_its_ceilings(daemon: Daemon) -> None:
    with daemon.client() as admin:
        grant = admin.grant("bob", "query", ttl_ms=600_000,
                            params_constraint={"properties": {"sql": {"pattern": "(?i)^select\\b"}}})
    assert run_query(daemon, "bob", "select 1")[0] == "OK"
    status, decision = run_query(daemon, "bob", "drop table t")
    assert status == "PARAMS_NOT_GRANTED" and decision["details"]["json_path"] == "$.sql"
    with as_(daemon, "bob") as bob:
        outcome = bob.run_tool("query", {"sql": "select 2"})
        [query] = [tool for tool in bob.list_tools() if tool.name == "query"]
    assert outcome.started is not None and outcome.started.limits.wall_time_ms == 5000  # reader's ceiling
    assert json.loads(query.params_constraint_json) == {"properties": {"sql": {"pattern": "(?i)^select\\b"}}}
    with daemon.client() as admin:
        admin.revoke(grant.grant_id)


def test_only_an_admin_grants_and_revokes(daemon: Daemon) -> None:
    with as_(daemon, "alice") as alice:
        for call in (lambda: alice.grant("alice", "query", ttl_ms=60_000), lambda: alice.revoke("g-000000000000")):
            with pytest.raises(SandboxdError) as caught:
                call()
            assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_ONLY")
    denied = [r for r in daemon.audit_records() if r["event"] == "decision" and r["principal"] == "alice"
              and r["details"].get("rpc") in ("Grant", "Revoke")]
    assert {r["details"]["reason"] for r in denied} == {"ADMIN_ONLY"}


@pytest.mark.parametrize(("asked", "says"), [
    ({"principal": "alcie", "tool": "query", "ttl_ms": 60_000}, "no principal named 'alcie'"),
    ({"principal": "alice", "tool": "qurey", "ttl_ms": 60_000}, "'qurey' matches no tool"),
    ({"principal": "alice", "tool": "query"}, "a runtime grant must expire"),
    ({"principal": "alice", "tool": "query", "ttl_ms": 3 * 3_600_000}, "more than [policy.grants] max_ttl"),
    ({"principal": "alice", "tool": "query", "ttl_ms": 60_000, "params_constraint": '{"type": 3}'},
     "not a valid JSON Schema"),
])
def test_a_grant_must_be_well_formed(daemon: Daemon, asked: dict[str, Any], says: str) -> None:
    with daemon.client() as admin, pytest.raises(SandboxdError) as caught:
        admin.grant(**asked)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert says in caught.value.message


def test_revoking_what_is_not_there(daemon: Daemon) -> None:
    with daemon.client() as admin, pytest.raises(SandboxdError) as caught:
        admin.revoke("g-000000000000")
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.NOT_FOUND, "GRANT_NOT_FOUND")


def test_who_sees_which_grants(daemon: Daemon) -> None:
    with daemon.client() as admin:
        mine = admin.grant("alice", "query", ttl_ms=600_000)
        theirs = admin.grant("bob", "q*", ttl_ms=600_000)
        assert {mine.grant_id, theirs.grant_id} <= {g.grant_id for g in admin.list_grants()}
        assert [g.grant_id for g in admin.list_grants("bob")] == [theirs.grant_id]
        with as_(daemon, "alice") as alice:
            assert [g.grant_id for g in alice.list_grants()] == [mine.grant_id]
        admin.revoke(mine.grant_id)
        admin.revoke(theirs.grant_id)


def test_a_grant_ends_at_its_expiry_recorded_once(daemon: Daemon) -> None:
    with daemon.client() as admin:
        grant = admin.grant("alice", "query", ttl_ms=2000)
    assert run_query(daemon, "alice")[0] == "OK"
    # the daemon's timer ends it at its expiry, with no request needed
    wait_for(lambda: [r["event"] for r in grant_records(daemon, grant.grant_id)] == ["grant.created",
                                                                                     "grant.expired"],
             10, "the grant.expired record")
    assert run_query(daemon, "alice")[0] == "TOOL_NOT_GRANTED"
    with daemon.client() as admin:
        assert grant.grant_id not in {g.grant_id for g in admin.list_grants()}
    assert len(grant_records(daemon, grant.grant_id)) == 2


def test_grants_survive_a_restart_and_one_that_expired_meanwhile_is_recorded(tmp_path: Path) -> None:
    with running(make_daemon(tmp_path, tools=TOOLS, extra=policy_toml())) as daemon:
        with daemon.client() as admin:
            kept = admin.grant("alice", "query", ttl_ms=3_600_000)
            ending = admin.grant("bob", "query", ttl_ms=3000)
        ends_at = ending.expires_at.ToNanoseconds() / 1e9
        assert daemon.stop() == 0
        while time.time() <= ends_at:  # the daemon is down while bob's grant expires
            time.sleep(ends_at - time.time() + 0.05)
        daemon.start()
        assert run_query(daemon, "alice")[0] == "OK"
        assert run_query(daemon, "bob")[0] == "TOOL_NOT_GRANTED"
        with daemon.client() as admin:
            assert [g.grant_id for g in admin.list_grants()] == [kept.grant_id]
        assert [r["event"] for r in grant_records(daemon, ending.grant_id)] == ["grant.created", "grant.expired"]
        assert grant_records(daemon, ending.grant_id)[1]["details"]["by"] == "expiry"


def test_sandboxctl_grant_revoke_grants(daemon: Daemon) -> None:
    done = daemon.ctl("grant", "alice", "query", "--for", "10m", "--reason", "from the shell",
                      "--params-json", '{"required": ["sql"]}')
    assert done.returncode == 0, done.stderr
    grant_id = done.stdout.decode().strip()
    listed = daemon.ctl("grants", "--principal", "alice")
    assert listed.returncode == 0 and grant_id in listed.stdout.decode()
    assert "constrained" in listed.stdout.decode() and "from the shell" in listed.stdout.decode()
    as_json = daemon.ctl("grants", "--json")
    assert any(json.loads(line)["grantId"] == grant_id for line in as_json.stdout.decode().splitlines())
    assert daemon.ctl("revoke", grant_id).returncode == 0
    again = daemon.ctl("revoke", grant_id)
    assert again.returncode == 125 and b"GRANT_NOT_FOUND" in again.stderr
    no_expiry = daemon.ctl("grant", "alice", "query")
    assert no_expiry.returncode == 2 and b"one of the arguments --for --until is required" in no_expiry.stderr
