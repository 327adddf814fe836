"""Authorization through a real daemon: each refusal of the policy (TOOL_NOT_GRANTED, GRANT_EXPIRED,
COMMAND_NOT_GRANTED, LIMIT_ABOVE_CEILING, PAYLOAD_TOO_LARGE, RATE_LIMITED, a principal's TOO_MANY_EXECUTIONS)
with its gRPC code, its machine reason and exactly one audited ``decision``; ceilings that deny or clamp; a
rate limit exactly at its boundary; who sees and cancels whose executions and reads the audit stream; which
tools ListTools shows; and a policy naming an unknown tool or role failing the start.

Callers are told apart by static tokens on the Unix socket (a bearer token wins over the socket's own
principal, ``local-admin``, which stays the admin). Each behaviour has its own principal, so the tests share
one daemon yet do not depend on each other's order.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from daemon_harness import Daemon, make_daemon, running

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2_grpc as pb_grpc
from sandboxd.api.status import REASON_METADATA_KEY, RETRY_AFTER_METADATA_KEY, TEMPORARY_METADATA_KEY
from sandboxd.cli.client import SandboxClient, SandboxdError, pb

pytestmark = pytest.mark.root

QUICK = """
description = "exit 0 at once"
argv = ["/bin/true"]
"""

SLEEPER = """
description = "sleep until cancelled"
argv = ["/bin/sleep", "30"]
"""

LEGACY = """
description = "a tool whose only grant has expired"
argv = ["/bin/true"]
"""

TOOLS = {"quick": QUICK, "sleeper": SLEEPER, "legacy": LEGACY}

# principal -> its roles; each principal's token is f"{principal}-token"
PRINCIPALS = {
    "alice": ["runner"],
    "bob": ["runner"],
    "lister": ["lister"],
    "capped": ["capped"],
    "clamped": ["clamped"],
    "metered": ["metered"],
    "small": ["small"],
    "solo-a": ["single"],
    "solo-b": ["single"],
}

ROLES = """
[roles.admin]
tools = ["*"]
commands = true
admin = true

[roles.runner]
tools = ["quick", "sleeper"]

[roles.lister]
tools = ["qu*", { name = "legacy", expires = 2001-01-01T00:00:00Z }]

[roles.capped]
tools = ["quick"]
limits_above_ceiling = "deny"
[roles.capped.ceilings]
wall_time = "2s"
memory = "64M"

[roles.clamped]
tools = ["quick"]
limits_above_ceiling = "clamp"
[roles.clamped.ceilings]
wall_time = "2s"
memory = "64M"

[roles.metered]
tools = ["quick"]
rate_per_minute = 60
burst = 3

[roles.small]
tools = ["quick"]
max_payload = "1K"

[roles.single]
tools = ["quick", "sleeper"]
max_concurrent = 1
"""

WALL_CEILING_MS = 2000
MEMORY_CEILING_BYTES = 64 << 20


def token_of(principal: str) -> str:
    return f"{principal}-token"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def policy_toml() -> str:
    principals = ["[principals.local-admin]", 'roles = ["admin"]']
    for name, roles in PRINCIPALS.items():
        principals += [f"[principals.{name}]", f"roles = {roles}", f'token_sha256 = ["{sha256_hex(token_of(name))}"]']
    return "\n".join(principals) + "\n" + ROLES


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module (a start costs ~0.5 s), checked to have left nothing at the end."""
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    with running(make_daemon(tmp_path_factory.mktemp("policy"), tools=TOOLS, extra=policy_toml())) as started:
        yield started


def client_of(daemon: Daemon, principal: str) -> SandboxClient:
    return SandboxClient(daemon.socket, token=token_of(principal))


def records_of(daemon: Daemon, request_id: str) -> list[dict[str, Any]]:
    return [record for record in daemon.audit_records() if record["request_id"] == request_id]


def refused(daemon: Daemon, principal: str, code: grpc.StatusCode, reason: str, **request: Any) -> SandboxdError:
    """Run ``request`` as ``principal``, expect the refusal, and check its audit: one denied decision with
    the reason, and nothing started."""
    request_id = f"refused-{uuid.uuid4().hex[:8]}"
    with client_of(daemon, principal) as client, pytest.raises(SandboxdError) as caught:
        client.run(request_id=request_id, **request)
    assert (caught.value.code, caught.value.reason) == (code, reason), caught.value
    records = records_of(daemon, request_id)
    decisions = [record for record in records if record["event"] == "decision"]
    assert len(decisions) == 1, records
    assert decisions[0]["details"]["outcome"] == "denied"
    assert decisions[0]["details"]["reason"] == reason
    assert decisions[0]["principal"] == principal
    assert not [record for record in records if record["event"].startswith("execution.")], records
    return caught.value


def wait_started(events: Iterator[pb.ExecuteEvent]) -> pb.Started:
    for event in events:
        if event.WhichOneof("event") == "started":
            return event.started
        assert event.WhichOneof("event") != "result", event
    raise AssertionError("no Started event")


def final_status(events: Iterator[pb.ExecuteEvent]) -> str:
    return pb.Status.Name([event.result for event in events if event.WhichOneof("event") == "result"][-1].status)


# -- each refusal of the policy --------------------------------------------------------------------------

def test_tool_not_granted(daemon: Daemon) -> None:
    refused(daemon, "lister", grpc.StatusCode.PERMISSION_DENIED, "TOOL_NOT_GRANTED", tool="sleeper")


def test_grant_expired(daemon: Daemon) -> None:
    error = refused(daemon, "lister", grpc.StatusCode.PERMISSION_DENIED, "GRANT_EXPIRED", tool="legacy")
    assert "2001-01-01T00:00:00Z" in error.message


def test_command_not_granted(daemon: Daemon) -> None:
    refused(daemon, "alice", grpc.StatusCode.PERMISSION_DENIED, "COMMAND_NOT_GRANTED", command=["/bin/true"])


def test_limit_above_ceiling_denied(daemon: Daemon) -> None:
    refused(daemon, "capped", grpc.StatusCode.PERMISSION_DENIED, "LIMIT_ABOVE_CEILING", tool="quick",
            limits={"wall_time_ms": WALL_CEILING_MS + 1})
    with client_of(daemon, "capped") as client:  # at the ceiling and below it is fine
        outcome = client.run_tool("quick", {}, limits={"wall_time_ms": WALL_CEILING_MS})
    assert outcome.status_name == "OK"


def test_payload_too_large(daemon: Daemon) -> None:
    refused(daemon, "small", grpc.StatusCode.INVALID_ARGUMENT, "PAYLOAD_TOO_LARGE", tool="quick",
            stdin=b"x" * 1024)
    with client_of(daemon, "small") as client:
        assert client.run_tool("quick", {}, stdin=b"x" * 512).status_name == "OK"


def test_principal_at_its_bound_is_refused_while_another_runs(daemon: Daemon) -> None:
    with client_of(daemon, "solo-a") as solo_a, client_of(daemon, "solo-b") as solo_b:
        running = solo_a.execute(tool="sleeper", params={})
        started = wait_started(running)
        error = refused(daemon, "solo-a", grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_EXECUTIONS", tool="quick",
                        params={})
        assert error.temporary
        assert solo_b.run_tool("quick", {}).status_name == "OK"  # same role, another principal
        solo_a.cancel(started.execution_id)
        assert final_status(running) == "CANCELLED"
        assert solo_a.run_tool("quick", {}).status_name == "OK"  # its slot is free again


# -- ceilings --------------------------------------------------------------------------------------------

def test_clamp_lowers_a_limit_to_the_ceiling(daemon: Daemon) -> None:
    with client_of(daemon, "clamped") as client:
        outcome = client.run_tool("quick", {}, limits={"wall_time_ms": 60_000, "memory_max_bytes": 1 << 30})
    assert outcome.status_name == "OK"
    assert outcome.started is not None
    assert outcome.started.limits.wall_time_ms == WALL_CEILING_MS
    assert outcome.started.limits.memory_max_bytes == MEMORY_CEILING_BYTES


@pytest.mark.parametrize("principal", ["capped", "clamped"])
def test_a_tool_default_above_the_role_ceiling_runs_with_the_ceiling(daemon: Daemon, principal: str) -> None:
    with client_of(daemon, principal) as client:
        [quick] = [tool for tool in client.list_tools() if tool.name == "quick"]
        assert quick.limits.wall_time_ms > WALL_CEILING_MS  # the daemon's default: 30 s
        outcome = client.run_tool("quick", {})
    assert outcome.status_name == "OK"
    assert outcome.started is not None
    assert outcome.started.limits.wall_time_ms == WALL_CEILING_MS
    assert outcome.started.limits.memory_max_bytes == MEMORY_CEILING_BYTES


# -- the rate limit at its boundary ----------------------------------------------------------------------

def test_rate_limit_boundary_with_burst(daemon: Daemon) -> None:
    """60/min with burst 3: three pass at once, the fourth waits ~1 s, and one passes after that wait."""
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        stub = pb_grpc.SandboxStub(channel)  # type: ignore[no-untyped-call]
        metadata = (("authorization", f"Bearer {token_of('metered')}"),)

        def start() -> Any:
            call = stub.Execute(pb.ExecuteRequest(tool="quick", params_json="{}"), metadata=metadata, timeout=30)
            next(call)  # the decision's audit event: the token is taken (or the call refused) by now
            return call

        def refusal() -> tuple[float, float]:
            """The retry-after hint of a refused call, and how long ago the burst began."""
            with pytest.raises(grpc.RpcError) as caught:
                start()
            trailers = dict(caught.value.trailing_metadata())
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert trailers[REASON_METADATA_KEY] == "RATE_LIMITED"
            assert trailers[TEMPORARY_METADATA_KEY] == "true"
            return float(trailers[RETRY_AFTER_METADATA_KEY]), time.monotonic() - began

        began = time.monotonic()
        burst = [start() for _ in range(3)]
        hint_s, elapsed_s = refusal()
        # The bucket is full again 3 s after the first call; 2 s of that is the burst's tolerance.
        assert 1.0 - elapsed_s - 0.001 <= hint_s <= 1.0, (hint_s, elapsed_s)
        for call in burst:
            assert pb.Status.Name(list(call)[-1].result.status) == "OK"

        # A little before the hint it is still refused (refusals take no token) ...
        if hint_s > 0.3:
            time.sleep(hint_s - 0.3)
            hint_s, _ = refusal()
            assert 0 < hint_s <= 0.301
        # ... and exactly one call passes once the hint has passed.
        time.sleep(hint_s)
        fifth = start()
        hint_s, elapsed_s = refusal()
        assert 2.0 - elapsed_s - 0.001 <= hint_s <= 1.0, (hint_s, elapsed_s)
        assert pb.Status.Name(list(fifth)[-1].result.status) == "OK"


# -- whose executions --------------------------------------------------------------------------------------

def test_a_principal_cannot_see_or_cancel_anothers_execution(daemon: Daemon) -> None:
    with client_of(daemon, "alice") as alice, client_of(daemon, "bob") as bob, daemon.client() as admin:
        running = alice.execute(tool="sleeper", params={})
        execution_id = wait_started(running).execution_id
        assert [item.execution_id for item in alice.list_executions()] == [execution_id]
        assert execution_id not in [item.execution_id for item in bob.list_executions()]
        with pytest.raises(SandboxdError) as caught:
            bob.cancel(execution_id)
        assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.NOT_FOUND, "EXECUTION_NOT_FOUND")
        [seen] = [item for item in admin.list_executions() if item.execution_id == execution_id]
        assert seen.principal == "alice"
        admin.cancel(execution_id)
        assert final_status(running) == "CANCELLED"
    [cancelled] = [record for record in daemon.audit_records()
                   if record["event"] == "execution.cancelled" and record["execution_id"] == execution_id]
    assert cancelled["details"]["by"] == "local-admin"


def test_only_an_admin_reads_the_audit_stream(daemon: Daemon) -> None:
    with client_of(daemon, "alice") as alice, pytest.raises(SandboxdError) as caught:
        list(alice.subscribe_audit(last=1))
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_ONLY")
    with daemon.client() as admin:
        assert len(list(admin.subscribe_audit(last=1))) == 1


def test_list_tools_shows_only_what_the_caller_may_run(daemon: Daemon) -> None:
    with client_of(daemon, "lister") as lister, client_of(daemon, "alice") as alice, daemon.client() as admin:
        assert [tool.name for tool in lister.list_tools()] == ["quick"]  # the glob; the expired grant is not
        assert sorted(tool.name for tool in alice.list_tools()) == ["quick", "sleeper"]
        assert {"quick", "sleeper", "legacy", "python"} <= {tool.name for tool in admin.list_tools()}


# -- the audit of decisions ------------------------------------------------------------------------------

def test_an_allowed_request_has_one_allowed_decision_with_its_role(daemon: Daemon) -> None:
    request_id = f"allowed-{uuid.uuid4().hex[:8]}"
    with client_of(daemon, "alice") as client:
        outcome = client.run_tool("quick", {}, request_id=request_id)
    assert outcome.status_name == "OK" and outcome.started is not None
    records = records_of(daemon, request_id)
    decisions = [record for record in records if record["event"] == "decision"]
    assert len(decisions) == 1, records
    assert decisions[0]["details"]["outcome"] == "allowed"
    assert decisions[0]["details"]["role"] == "runner"
    assert decisions[0]["principal"] == "alice"
    [started] = [record for record in records if record["event"] == "execution.started"]
    assert started["execution_id"] == decisions[0]["execution_id"] == outcome.started.execution_id


def test_a_denied_request_has_one_denied_decision_and_nothing_started(daemon: Daemon) -> None:
    # refused() checks the audit of every refusal; here the reason names the role that matched.
    request_id = f"denied-{uuid.uuid4().hex[:8]}"
    with client_of(daemon, "capped") as client, pytest.raises(SandboxdError):
        client.run_tool("quick", {}, limits={"memory_max_bytes": 1 << 30}, request_id=request_id)
    records = records_of(daemon, request_id)
    assert [record["event"] for record in records] == ["request.received", "decision"]
    assert records[1]["details"]["outcome"] == "denied"
    assert records[1]["details"]["reason"] == "LIMIT_ABOVE_CEILING"
    assert records[1]["details"]["role"] == "capped"
    assert records[1]["execution_id"] == ""


# -- a policy naming what does not exist -----------------------------------------------------------------

@pytest.mark.parametrize(("extra", "message"), [
    ('[roles.admin]\ntools = ["*"]\nadmin = true\n[roles.typo]\ntools = ["quick", "quik"]\n',
     "roles.typo.tools[1]: no tool named 'quik'"),
    ('[roles.admin]\ntools = ["*"]\nadmin = true\n[roles.typo]\ntools = ["nothing_*"]\n',
     "roles.typo.tools[0]: the glob 'nothing_*' matches no tool"),
    ('[principals.local-admin]\nroles = ["admin"]\n[principals.gateway]\nroles = ["ghost"]\n'
     '[roles.admin]\ntools = ["*"]\nadmin = true\n',
     "principals.gateway.roles: no role named 'ghost'"),
], ids=["unknown-tool", "glob-matching-nothing", "unknown-role"])
def test_a_policy_naming_what_does_not_exist_fails_the_start(tmp_path: Path, extra: str, message: str) -> None:
    broken = make_daemon(tmp_path, tools={"quick": QUICK}, extra=extra)
    done = subprocess.run(broken.command(), capture_output=True, timeout=30)
    assert done.returncode == 78, done.stderr
    assert f"{broken.config_path}: {message}".encode() in done.stderr, done.stderr
    assert not broken.socket.exists()
