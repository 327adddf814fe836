"""Sessions end to end through a real daemon: state that lives in /work across calls, files in and out
checked by SHA-256 and confined to /work, interactive calls inside a session, idle expiry, another principal
refused, and nothing left after close, expiry, SIGTERM and kill -9."""

from __future__ import annotations

import hashlib
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import (
    Daemon,
    assert_nothing_left,
    cgroup_dirs,
    crash,
    make_daemon,
    running,
    sandbox_processes,
    wait_for,
)
from upstream import Upstream

from sandboxd.cli.client import SandboxClient, SandboxdError, pb
from sandboxd.cli.sessions import Session, list_sessions

pytestmark = pytest.mark.root

OTHER_TOKEN = "other-token"
POLICY = textwrap.dedent(f"""
    [principals.local-admin]
    roles = ["admin"]
    [principals.other]
    roles = ["runner"]
    token_sha256 = ["{hashlib.sha256(OTHER_TOKEN.encode()).hexdigest()}"]
    [roles.admin]
    tools = ["*"]
    commands = true
    admin = true
    [roles.runner]
    tools = ["python"]
    max_sessions = 1
    """)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    with running(make_daemon(tmp_path, extra=POLICY)) as started:
        yield started


def events_of(daemon: Daemon, session_id: str) -> list[str]:
    return [r["event"] for r in daemon.audit_records() if r["execution_id"] == session_id]


def test_a_python_computation_keeps_its_state_in_work_across_calls(daemon: Daemon) -> None:
    with daemon.client() as client, Session.create(client, tool="python", limits={"memory_max_bytes": 256 << 20}) \
            as session:
        first = session.run({"code": "import json; json.dump({'n': 1}, open('state.json', 'w')); print('set')"})
        assert (first.status_name, first.stdout) == ("OK", b"set\n"), first.stderr
        for expected in (2, 3, 4):
            step = session.run({"code": "import json\ns = json.load(open('/work/state.json'))\ns['n'] += 1\n"
                                        "json.dump(s, open('/work/state.json', 'w'))\nprint(s['n'])"})
            assert step.stdout == f"{expected}\n".encode(), step.stderr
            assert step.started is not None and step.started.uid == first.started.uid  # type: ignore[union-attr]
        [listed] = list_sessions(client)
        assert (listed.session_id, listed.tool, listed.executions) == (session.session_id, "python", 4)
        session_id = session.session_id
    assert list_sessions(daemon.client()) == []
    events = events_of(daemon, session_id)
    assert events[0] == "session.created" and events[-1] == "session.closed"


def test_files_round_trip_by_sha256_and_stay_inside_work(daemon: Daemon, tmp_path: Path) -> None:
    payload = os.urandom(1 << 20)
    digest = hashlib.sha256(payload).hexdigest()
    with daemon.client() as client, Session.create(client, tool="python") as session:
        info = session.put_file("in/data.bin", payload, mode=0o640)
        assert (info.path, info.size_bytes, info.sha256, info.mode) == ("in/data.bin", len(payload), digest, 0o640)
        inside = session.run({"code": "import hashlib; print(hashlib.sha256(open('in/data.bin','rb').read())"
                                      ".hexdigest()); open('out.txt', 'w').write('result')"})
        assert inside.stdout.decode().strip() == digest
        data, got = session.get_file("/work/out.txt")
        assert (data, got.sha256) == (b"result", hashlib.sha256(b"result").hexdigest())
        # a symlink planted inside /work, pointing at host paths
        session.run({"code": "import os; os.symlink('/etc', 'etc'); os.symlink('/etc/passwd', 'passwd')"})
        host_passwd = Path("/etc/passwd").read_bytes()
        for path in ("../x", "/etc/passwd", "/work/../etc/passwd", "etc/passwd", "passwd", "etc/hostname"):
            with pytest.raises(SandboxdError) as refused:
                session.put_file(path, b"owned")
            assert refused.value.reason in ("FILE_REFUSED", "INVALID_REQUEST"), (path, refused.value)
            with pytest.raises(SandboxdError) as refused_get:
                session.get_file(path)
            assert refused_get.value.reason == "FILE_REFUSED", (path, refused_get.value)
        assert Path("/etc/passwd").read_bytes() == host_passwd
        session_id = session.session_id
    moved = [r for r in daemon.audit_records() if r["event"].startswith("session.file_")
             and r["execution_id"] == session_id]
    assert [(r["event"], r["details"]["path"], r["details"]["sha256"]) for r in moved] == [
        ("session.file_put", "in/data.bin", digest), ("session.file_get", "out.txt", got.sha256)]


def test_an_interactive_call_inside_a_session(daemon: Daemon) -> None:
    with daemon.client() as client, Session.create(client, tool=None) as session:
        session.run_command(["/bin/sh", "-c", "echo kept > /work/kept"])
        with client.execute_interactive(command=["/usr/bin/python3", "-u", "-c",
                                                 "import sys\nfor line in sys.stdin: print(line.strip().upper(), "
                                                 "open('/work/kept').read().strip())"],
                                        session_id=session.session_id) as call:
            call.send(b"hello\n")
            call.close_stdin()
            out = b"".join(e.output.data for e in call.events() if e.WhichOneof("event") == "output")
    assert out == b"HELLO kept\n"


def test_another_principal_cannot_use_or_see_a_session(daemon: Daemon) -> None:
    with daemon.client() as admin, Session.create(admin, tool="python") as session, \
            SandboxClient(daemon.socket, token=OTHER_TOKEN) as other:
        assert list_sessions(other) == []
        for attempt in (lambda: other.run_tool("python", {"code": "print(1)"}, session_id=session.session_id),
                        lambda: Session(other, session.message).get_file("x"),
                        lambda: Session(other, session.message).put_file("x", b"x")):
            with pytest.raises(SandboxdError) as refused:
                attempt()
            assert refused.value.reason == "SESSION_NOT_FOUND"
        with pytest.raises(SandboxdError) as closing:
            other.call("CloseSession", pb.CloseSessionRequest(session_id=session.session_id))
        assert closing.value.reason == "SESSION_NOT_FOUND"
        # its own, bounded by its role's max_sessions = 1
        with Session.create(other, tool="python"), pytest.raises(SandboxdError) as second:
            Session.create(other, tool="python")
        assert second.value.reason == "TOO_MANY_SESSIONS"


def test_an_idle_session_expires(daemon: Daemon) -> None:
    with daemon.client() as client:
        session = Session.create(client, tool="python", idle_timeout_ms=500)
        session.run({"code": "print(1)"})
        wait_for(lambda: list_sessions(client) == [], 10, "the idle session to expire")
    # recorded before it is unlisted, on disk by the audit log's next group commit
    wait_for(lambda: events_of(daemon, session.session_id)[-1] == "session.expired", 10,
             "the expiry to be recorded as the session's last event")
    expired = next(r for r in daemon.audit_records() if r["event"] == "session.expired")
    assert expired["details"]["by"] == "idle"


def test_sigterm_ends_open_sessions(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, extra=POLICY)
    with running(daemon), daemon.client() as client:
        session = Session.create(client, tool="python")
        session.run({"code": "open('x', 'w').write('x')"})
    # running() stopped it with SIGTERM, checked exit 0 and that nothing is left
    closed = [r for r in daemon.audit_records() if r["event"] == "session.closed"]
    assert closed and closed[0]["details"]["by"] == "daemon-stopping"


def test_kill_9_leaves_nothing_of_a_session_after_the_next_start(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, extra=POLICY)
    daemon.start()
    assert daemon.process is not None
    with daemon.client() as client:
        session = Session.create(client, tool="python")
        session.run({"code": "open('x', 'w').write('x')"})
    crash(daemon)
    wait_for(lambda: not sandbox_processes(daemon.ids), 20, "the session's processes to die")
    assert any(d.is_dir() and any(d.iterdir()) for d in cgroup_dirs(daemon.instance))
    daemon.start()
    try:
        recovered = [r for r in daemon.audit_records() if r["event"] == "daemon.recovered"]
        assert recovered and f"exec-{session.session_id}" in recovered[0]["details"]["cgroups_removed"]
    finally:
        assert daemon.stop() == 0
    assert_nothing_left(daemon)


def test_sandboxctl_session_commands(daemon: Daemon, tmp_path: Path) -> None:
    created = daemon.ctl("session", "create", "--tool", "python", "--memory", "128M", "--idle-timeout", "5m")
    assert created.returncode == 0, created.stderr
    session_id = created.stdout.decode().strip()
    local = tmp_path / "numbers.txt"
    local.write_text("1\n2\n3\n")
    put = daemon.ctl("session", "put", session_id, str(local))
    assert put.returncode == 0 and put.stdout.decode().startswith("/work/numbers.txt 6 bytes sha256 "), put.stderr
    code = "open('sum.txt', 'w').write(str(sum(int(x) for x in open('numbers.txt'))))"
    ran = daemon.ctl("session", "exec", session_id, "--param", f"code={code}")
    assert ran.returncode == 0, ran.stderr
    got = daemon.ctl("session", "get", session_id, "sum.txt", "-")
    assert (got.returncode, got.stdout) == (0, b"6")
    listed = daemon.ctl("session", "ls").stdout.decode()
    assert session_id in listed and "python" in listed
    assert daemon.ctl("session", "close", session_id).returncode == 0
    assert session_id not in daemon.ctl("session", "ls").stdout.decode()
    missing = daemon.ctl("session", "exec", session_id, "--param", "code=print(1)")
    assert missing.returncode == 125 and b"no open session" in missing.stderr


def test_a_session_with_an_allowlist_reaches_it_from_every_call(daemon: Daemon) -> None:
    with Upstream() as web, daemon.client() as client, \
            Session.create(client, tool=None, allow_hosts=[f"127.0.0.1:{web.port}"]) as session:
        for _ in range(2):  # the door out is the session's: every call goes through it
            fetched = session.run_command(["/usr/bin/curl", "-sS", "--noproxy", "",
                                           f"http://127.0.0.1:{web.port}/hello"])
            assert (fetched.status_name, fetched.stdout) == ("OK", b"hello from upstream\n"), fetched.stderr
        refused = session.run_command(["/usr/bin/curl", "-sS", "--noproxy", "", "-o", "/dev/null", "-w",
                                       "%{http_code}", f"http://127.0.0.1:{web.port + 1}/hello"])
        assert refused.stdout == b"403"
        session_id = session.session_id
    connects = [r["details"]["outcome"] for r in daemon.audit_records()
                if r["event"] == "network.connect" and r["execution_id"] == session_id]
    assert connects == ["allowed", "allowed", "denied"]


def test_closing_a_session_cancels_its_running_calls(daemon: Daemon) -> None:
    with daemon.client() as client:
        session = Session.create(client, tool=None)
        events = client.execute(command=["/bin/sh", "-c", "echo running; sleep 60"], session_id=session.session_id)
        assert next(e for e in events if e.WhichOneof("event") == "output").output.data == b"running\n"
        with daemon.client() as closer:
            Session(closer, session.message).close()
        result = next(e for e in events if e.WhichOneof("event") == "result").result
    assert pb.Status.Name(result.status) == "CANCELLED"
    cancelled = next(r for r in daemon.audit_records()
                     if r["event"] == "execution.cancelled" and r["execution_id"] == result.execution_id)
    assert cancelled["details"]["by"] == "local-admin"
    assert events_of(daemon, session.session_id)[-1] == "session.closed"
