"""The daemon under hostile callers and bad input, through a real daemon process: every refusal reaches its
caller with its real code and a bounded message, costs the caller's rate, and is audited small; what cannot
be decoded is INVALID_ARGUMENT; existence of a tool is not revealed to who may not see it; profiles are taken
exactly as written and only at start or reload."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from daemon_harness import Daemon, assert_nothing_left, make_daemon, reload_and_wait, running
from loopfs import ext4_on_loop, require_loop_devices

from sandboxd.cli.client import SandboxClient, SandboxdError

pytestmark = pytest.mark.root

QUICK = 'description = "exit 0"\nargv = ["/bin/true"]\n'
ECHO_SCHEMA = """description = "echo its params"
argv = ["/bin/cat"]
[params_schema]
type = "object"
properties = { word = { type = "string", maxLength = 8 }, n = { type = "integer" } }
"""
METERED_BURST = 3
POLICY = f"""
[principals.local-admin]
roles = ["admin"]
[principals.metered]
roles = ["metered"]
token_sha256 = ["{hashlib.sha256(b"metered-token").hexdigest()}"]
[principals.runner]
roles = ["runner"]
token_sha256 = ["{hashlib.sha256(b"runner-token").hexdigest()}"]
[roles.admin]
tools = ["*"]
commands = true
admin = true
[roles.metered]
tools = ["quick"]
rate_per_minute = 1
burst = {METERED_BURST}
[roles.runner]
tools = ["quick", "echo"]
"""
KILL_UNAME = {"defaultAction": "SCMP_ACT_ALLOW",
              "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}]}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    made = make_daemon(tmp_path, tools={"quick": QUICK, "echo": ECHO_SCHEMA, "secret": QUICK}, extra=POLICY,
                       limits={"file_size": "unlimited", "open_files": "unlimited"})
    (made.root / "profiles" / "kill-uname.json").write_text(json.dumps(KILL_UNAME))
    with running(made) as started:
        yield started


def refusal(call: object) -> SandboxdError:
    with pytest.raises(SandboxdError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def decisions_of(daemon: Daemon, request_id: str) -> list[dict[str, object]]:
    return [r for r in daemon.audit_records() if r["request_id"] == request_id and r["event"] == "decision"]


# -- odd input ----------------------------------------------------------------------------------------------

def test_a_huge_integer_in_params_is_invalid_params(daemon: Daemon) -> None:
    with daemon.client() as client:
        error = refusal(lambda: client.run_tool("echo", '{"n": ' + "9" * 5000 + "}", request_id="digits"))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMS"), error
    assert "too large" in error.message
    [decision] = decisions_of(daemon, "digits")
    assert decision["details"]["reason"] == "INVALID_PARAMS"  # request.received has its one decision


def test_extreme_limits_under_unlimited_ceilings_are_refused_naming_the_maximum(daemon: Daemon) -> None:
    with daemon.client() as client:
        big = refusal(lambda: client.run_command(["/bin/true"], limits={"file_size_max_bytes": 2**64 - 1}))
        many = refusal(lambda: client.run_command(["/bin/true"], limits={"open_files_max": 10**9}))
    assert (big.code, big.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert "file_size_max_bytes must be at most 9223372036854775807" in big.message
    assert "open_files_max must be at most 1048576" in many.message


def _raw_execute(daemon: Daemon, payload: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        call = channel.unary_stream("/sandboxd.v1.Sandbox/Execute", request_serializer=None,
                                    response_deserializer=None)
        with pytest.raises(grpc.RpcError) as caught:
            list(call(payload, timeout=30))
    return caught.value


@pytest.mark.parametrize(("payload", "what"), [
    (b"\x0a\x04\xff\xfe\xfd\xfc", "invalid UTF-8 in a string field (tool)"),
    (b"\x0a\x7f\x41", "a message cut short"),
])
def test_a_request_grpc_cannot_decode_is_invalid_argument(daemon: Daemon, payload: bytes, what: str) -> None:
    error = _raw_execute(daemon, payload)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, error)
    assert "could not be decoded" in (error.details() or ""), what
    metadata = dict(error.trailing_metadata() or ())
    assert metadata.get("sandboxd-reason") == "INVALID_REQUEST"
    refused = [r for r in daemon.audit_records() if r["event"] == "decision" and r["details"]["outcome"] == "denied"]
    assert refused and refused[-1]["details"]["reason"] == "INVALID_REQUEST"


# -- echoes are bounded -------------------------------------------------------------------------------------

def test_a_huge_unknown_tool_name_still_gets_not_found(daemon: Daemon) -> None:
    name = "x" * 900_000
    with daemon.client() as client:
        error = refusal(lambda: client.run_tool(name, {}, request_id="huge-name"))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOOL"), error
    assert len(error.message) < 3000 and "cut" in error.message
    records = [r for r in daemon.audit_records() if r["request_id"] == "huge-name"]
    assert len(json.dumps(records)) < 20_000, len(json.dumps(records))


def test_a_huge_value_failing_the_schema_still_gets_invalid_params(daemon: Daemon) -> None:
    with daemon.client() as client:
        error = refusal(lambda: client.run_tool("echo", {"word": "w" * 300_000}, request_id="huge-value"))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMS"), error
    assert len(error.message) < 3000
    records = [r for r in daemon.audit_records() if r["request_id"] == "huge-value"]
    assert len(json.dumps(records)) < 20_000


# -- refusals cost the caller's rate ------------------------------------------------------------------------

def test_refused_requests_cost_rate_tokens(daemon: Daemon) -> None:
    with SandboxClient(daemon.socket, token="metered-token") as client:
        reasons = [refusal(lambda: client.run_tool("no_such_tool", {})).reason for _ in range(METERED_BURST + 2)]
    # the burst pays for the first refusals; then the rate answers, and the log grows by small records only
    assert reasons[:METERED_BURST] == ["TOOL_NOT_GRANTED"] * METERED_BURST, reasons
    assert reasons[METERED_BURST:] == ["RATE_LIMITED"] * 2, reasons


def test_failed_authentications_share_a_budget(daemon: Daemon) -> None:
    with SandboxClient(daemon.socket, token="not-a-token") as client:
        reasons = [refusal(client.list_tools).reason for _ in range(25)]
    assert reasons[0] == "AUTH_FAILED" and reasons[-1] == "RATE_LIMITED", reasons
    denied = [r for r in daemon.audit_records() if r["event"] == "decision" and r["details"]["outcome"] == "denied"]
    assert denied[0]["details"]["peer"].startswith("unix:")  # an unidentified caller is recorded by its peer


# -- what a caller may not see ------------------------------------------------------------------------------

def test_a_tool_the_caller_may_not_see_is_refused_as_one_that_does_not_exist(daemon: Daemon) -> None:
    with SandboxClient(daemon.socket, token="runner-token") as client:
        hidden = refusal(lambda: client.run_tool("secret", {}))  # exists, not granted
        absent = refusal(lambda: client.run_tool("nonexistent", {}))  # does not exist
        assert {tool.name for tool in client.list_tools()} == {"quick", "echo"}
    assert (hidden.code, hidden.reason) == (absent.code, absent.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                                           "TOOL_NOT_GRANTED")
    assert hidden.message.replace("secret", "X") == absent.message.replace("nonexistent", "X")
    with daemon.client() as admin:  # an admin sees every tool, and so learns which do not exist
        assert refusal(lambda: admin.run_tool("nonexistent", {})).reason == "UNKNOWN_TOOL"


# -- what the audit says ------------------------------------------------------------------------------------

def test_a_raw_commands_decision_records_its_argv_and_clamps(daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.run_command(["/bin/echo", "one", "two"], request_id="argv").status_name == "OK"
    [decision] = decisions_of(daemon, "argv")
    assert decision["details"]["argv"] == ["/bin/echo", "one", "two"]


# -- profiles ----------------------------------------------------------------------------------------------

def test_profiles_take_effect_only_at_reload(daemon: Daemon) -> None:
    profiles = daemon.root / "profiles"
    with daemon.client() as client:
        assert client.run_command(["/bin/uname"], profile="kill-uname").status_name == "SECCOMP_VIOLATION"
        (profiles / "kill-uname.json").write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')  # edited in place
        (profiles / "added.json").write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
        assert client.run_command(["/bin/uname"], profile="kill-uname").status_name == "SECCOMP_VIOLATION"
        assert refusal(lambda: client.run_command(["/bin/true"], profile="added")).reason == "UNKNOWN_PROFILE"
        assert reload_and_wait(daemon)["event"] == "daemon.reloaded"
        assert client.run_command(["/bin/uname"], profile="kill-uname").status_name == "OK"
        assert client.run_command(["/bin/true"], profile="added").status_name == "OK"
        # a profile broken by a typo is refused whole at the reload: the old ones keep serving
        (profiles / "added.json").write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscals": []}')
        failed = reload_and_wait(daemon)
        assert client.run_command(["/bin/true"], profile="added").status_name == "OK"
    assert failed["event"] == "daemon.reload_failed"
    assert 'unknown key (did you mean \\"syscalls\\"?)' in json.dumps(failed["details"])


def test_a_profile_with_an_unknown_key_stops_the_start(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    made = make_daemon(tmp_path)
    (made.root / "profiles" / "typo.json").write_text(json.dumps(
        {"defaultAction": "SCMP_ACT_ALLOW", "syscals": [{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}]}))
    with pytest.raises(AssertionError, match="exited 78") as caught:
        made.start()
    assert f"seccomp profile {made.root / 'profiles' / 'typo.json'}" in str(caught.value)
    # (the log line is logfmt: its quotes are escaped)
    assert '\\"syscals\\": unknown key (did you mean \\"syscalls\\"?)' in str(caught.value)


# -- spawn messages ------------------------------------------------------------------------------------------

def test_a_command_of_nearly_the_largest_allowed_request_runs(daemon: Daemon) -> None:
    # The plan goes to the spawner in a memfd: its size is bounded by max_request_bytes (1 MiB), not by the
    # socket buffer (net.core.wmem_max).
    argv = ["/bin/sh", "-c", "echo $#", "sh"] + ["a" * 1000] * 900
    with daemon.client() as client:
        outcome = client.run_command(argv)
    assert (outcome.status_name, outcome.stdout) == ("OK", b"900\n"), outcome.result


# -- the audit log fails -------------------------------------------------------------------------------------

def test_a_full_audit_disk_refuses_with_audit_unavailable_not_unknown(tmp_path: Path) -> None:
    require_loop_devices()
    with contextlib.ExitStack() as stack:
        ext4_on_loop(tmp_path / "audit.img", "4M", tmp_path / "audit-fs", stack)
        made = make_daemon(tmp_path, extra=f'[audit]\npath = "{tmp_path / "audit-fs" / "audit.log"}"\n')
        made.start()
        try:
            with made.client() as client:
                assert client.run_command(["/bin/true"]).status_name == "OK"
                filler = tmp_path / "audit-fs" / "filler"
                subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
                reasons = []
                for _ in range(200):  # the records fill what is left of the log's last block first
                    try:
                        reasons.append(("OK", client.run_command(["/bin/true"]).status_name))
                    except SandboxdError as error:
                        reasons.append((error.code.name, error.reason))
                        if error.reason == "AUDIT_UNAVAILABLE" and len(reasons) > 1 and reasons[-2] == reasons[-1]:
                            break
            assert reasons[-1] == ("UNAVAILABLE", "AUDIT_UNAVAILABLE"), reasons[-5:]
            assert all(code in ("OK", "UNAVAILABLE") for code, _ in reasons), reasons
        finally:
            made.stop()
        assert_nothing_left(made)
