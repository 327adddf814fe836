"""The tamper-evident audit trail of a real sandboxd process, checked on the real files it writes.

It proves: after many executions (concurrent, refused, every kind of ending) the log is one hash chain that
``sandboxctl audit verify`` accepts, with the documented records per request; each kind of tampering (edit,
drop, insert, reorder, truncate; with an HMAC key, re-hashing or forging) is caught at the first bad record;
a restart continues the chain, a torn tail is cut and audited; a refusal leaves only its decision; rotation
and retention keep one verifiable chain; a stuck ``SubscribeAudit`` reader is dropped by the hub's bound
without slowing executions, a reading one gets every matching record in order, and only admins may read;
and ``sandboxctl audit tail/export`` print what is stored. (Result-after-fsync is in
``test_daemon_audit_durability.py``.)
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from daemon_harness import SANDBOXCTL, Daemon, daemon_fixture, make_daemon
from daemon_harness import running as harness_running

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2_grpc as pb_grpc
from sandboxd.cli.client import SandboxClient, SandboxdError, pb

pytestmark = pytest.mark.root

PY = "/usr/bin/python3"
FIELDS = {"details", "event", "execution_id", "hash", "prev", "principal", "request_id", "seq", "time", "tool"}
ZERO_HASH = "0" * 64
ANALYST_TOKEN = "audit-test-analyst-token"
# The file's [principals] replace the embedded ones: local-admin (the socket's principal) is restated.
PRINCIPALS = f"""
[principals.local-admin]
roles = ["admin"]
[principals.analyst-bot]
roles = ["analyst"]
token_sha256 = ["{hashlib.sha256(ANALYST_TOKEN.encode()).hexdigest()}"]
"""

daemon = daemon_fixture(extra=PRINCIPALS)


# -- helpers -------------------------------------------------------------------------------------------


def audited_daemon(tmp_path: Path, audit_keys: str) -> Daemon:
    """A daemon (not started) whose ``[audit]`` table has ``audit_keys`` besides the harness's path."""
    made = make_daemon(tmp_path, extra=PRINCIPALS)
    text = made.config_path.read_text()
    path_line = f'path = "{made.audit_log}"'
    assert path_line in text
    made.config_path.write_text(text.replace(path_line, f"{path_line}\n{audit_keys}"))
    return made


@contextlib.contextmanager
def running(made: Daemon) -> Iterator[Daemon]:
    """Start ``made``; at the end stop it and check it exited 0 and left nothing behind."""
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    with harness_running(made):
        yield made


def audit_files(made: Daemon) -> list[Path]:
    """Rotated files in chain order, then the active one."""
    return [*sorted(made.audit_log.parent.glob("audit.log.*")), made.audit_log]


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def canonical(value: Any) -> str:
    """The documented line format, written here independently of sandboxd's own code."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def rehash(record: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """``record`` with the hash a writer holding ``key`` (None: plain SHA-256) would give it."""
    body = {name: value for name, value in record.items() if name != "hash"}
    payload = canonical(body).encode()
    digest = hmac.new(key, payload, hashlib.sha256) if key is not None else hashlib.sha256(payload)
    return {**body, "hash": digest.hexdigest()}


def rechain(records: list[dict[str, Any]], key: bytes | None, prev: str) -> list[bytes]:
    """``records`` re-linked from ``prev`` and re-hashed under ``key``: a forger's consistent chain."""
    forged = []
    for record in records:
        record = rehash({**record, "prev": prev}, key)
        prev = record["hash"]
        forged.append((canonical(record) + "\n").encode())
    return forged


def verify(*files: Path, key_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``sandboxctl audit verify`` — it reads files only: no socket given."""
    key = ["--key-file", str(key_file)] if key_file is not None else []
    return subprocess.run([str(SANDBOXCTL), "audit", "verify", *key, *map(str, files)],
                          capture_output=True, text=True, timeout=60)


def assert_verifies(*files: Path, key_file: Path | None = None) -> str:
    done = verify(*files, key_file=key_file)
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_broken(path: Path, *, seq: int, why: str, line: int, key_file: Path | None = None) -> None:
    """``audit verify`` exits 1 naming ``seq``, the reason and the file's ``line``."""
    done = verify(path, key_file=key_file)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"audit chain broken at seq {seq}: {why}" in done.stderr, done.stderr
    assert f"({path}, line {line})" in done.stderr, done.stderr


def records_after(made: Daemon, seq: int) -> list[dict[str, Any]]:
    return [record for record in made.audit_records() if record["seq"] > seq]


def last_seq(made: Daemon) -> int:
    records = made.audit_records()
    return int(records[-1]["seq"]) if records else 0


def by_request(records: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    return [record for record in records if record["request_id"] == request_id]


# -- 1. a busy log ---------------------------------------------------------------------------------------

# The limit each of these statuses names in its execution.limit_hit record.
LIMIT_BY_STATUS = {"TIMEOUT": "wall_time", "CPU_LIMIT": "cpu_time", "OUTPUT_LIMIT": "output", "MEMORY_LIMIT": "memory"}
MEMORY_HOG = "x = [bytearray(4 << 20) for _ in range(128)]; print('not limited')"
PTRACE = "import ctypes; ctypes.CDLL(None).syscall(101, 0, 0, 0, 0); print('survived')"


def _run_cancelled(client: SandboxClient, request_id: str) -> str:
    """A sleeper cancelled through the API once it has started; returns its status."""
    status = ""
    for event in client.execute(command=["/bin/sleep", "30"], request_id=request_id):
        kind = event.WhichOneof("event")
        if kind == "started":
            client.cancel(event.started.execution_id)
        elif kind == "result":
            status = pb.Status.Name(event.result.status)
    return status


def test_a_busy_log_is_one_chain_that_tells_each_request(daemon: Daemon) -> None:
    runs: dict[str, dict[str, Any]] = {}  # request id -> what to run and what its records must say
    for index in range(20):
        runs[f"ok-{index}"] = {"command": ["/bin/true"], "status": "OK"}
    for index in range(4):
        runs[f"tool-{index}"] = {"tool": "python", "params": {"code": f"print({index})"}, "status": "OK"}
        runs[f"exit-{index}"] = {"command": ["/bin/sh", "-c", "exit 3"], "status": "NONZERO_EXIT"}
    runs["segv"] = {"command": [PY, "-c", "import ctypes; ctypes.string_at(0)"], "status": "SIGNALED"}
    runs["timeout"] = {"command": ["/bin/sleep", "30"], "limits": {"wall_time_ms": 300}, "status": "TIMEOUT"}
    runs["cpu"] = {"command": [PY, "-c", "while True: pass"], "limits": {"cpu_time_ms": 300},
                   "status": "CPU_LIMIT"}
    runs["output"] = {"command": ["/usr/bin/yes"], "limits": {"output_max_bytes": 1024}, "status": "OUTPUT_LIMIT"}
    runs["memory"] = {"command": [PY, "-c", MEMORY_HOG], "limits": {"memory_max_bytes": 32 << 20},
                      "status": "MEMORY_LIMIT"}
    runs["seccomp"] = {"command": [PY, "-c", PTRACE], "profile": "kill-ptrace", "status": "SECCOMP_VIOLATION"}
    runs["missing"] = {"command": ["/no/such/program"], "status": "SETUP_FAILED"}
    runs["cancel"] = {"status": "CANCELLED"}
    runs["no-profile-0"] = {"command": ["/bin/true"], "profile": "absent", "denied": "UNKNOWN_PROFILE"}
    runs["no-profile-1"] = {"command": ["/bin/true"], "profile": "absent", "denied": "UNKNOWN_PROFILE"}
    runs["no-tool"] = {"tool": "no_such_tool", "params": {}, "denied": "UNKNOWN_TOOL"}
    runs["analyst-command"] = {"command": ["/bin/true"], "token": ANALYST_TOKEN, "denied": "COMMAND_NOT_GRANTED"}
    assert len(runs) == 40

    def run(request_id: str) -> str:
        spec = runs[request_id]
        with SandboxClient(daemon.socket, token=spec.get("token", "")) as client:
            if request_id == "cancel":
                return _run_cancelled(client, request_id)
            target = {"tool": spec["tool"], "params": spec["params"]} if "tool" in spec else {
                "command": spec["command"], "profile": spec.get("profile", "")}
            try:
                outcome = client.run(**target, limits=spec.get("limits"), request_id=request_id)
            except SandboxdError as error:
                return error.reason
            # What the stream carried as audit events are the stored records, verbatim.
            spec["streamed"] = [event.record_json for event in outcome.audit]
            return outcome.status_name

    planned = {request_id: spec.get("denied", spec.get("status")) for request_id, spec in runs.items()}
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = dict(zip(runs, pool.map(run, runs), strict=True))
    assert got == planned
    assert "the spawner died" not in daemon.logs()

    files = audit_files(daemon)
    records = daemon.audit_records()
    report = assert_verifies(*files)
    assert f"ok: {len(records)} records, seq 1..{len(records)}, 1 file(s)" in report
    prev = ZERO_HASH
    for seq, record in enumerate(records, start=1):
        assert set(record) == FIELDS and record["seq"] == seq and record["prev"] == prev
        assert rehash(record, None)["hash"] == record["hash"]  # the documented format, recomputed here
        prev = record["hash"]
    stored_lines = {json.loads(line)["seq"]: line.decode().rstrip("\n") for line in lines_of(daemon.audit_log)}

    for request_id, spec in runs.items():
        mine = by_request(records, request_id)
        events = [record["event"] for record in mine]
        received, decision = mine[0], mine[1]
        assert received["details"]["rpc"] == "Execute" and received["execution_id"] == ""
        principal = "analyst-bot" if "token" in spec else "local-admin"
        assert {record["principal"] for record in mine} == {principal}, request_id
        if "denied" in spec:
            assert events == ["request.received", "decision"], (request_id, events)
            assert decision["details"]["outcome"] == "denied"
            assert decision["details"]["reason"] == spec["denied"]
            continue
        status = got[request_id]
        outcome = []
        if status in LIMIT_BY_STATUS:
            outcome = ["execution.limit_hit"]
            assert mine[-2]["details"]["limit"] == LIMIT_BY_STATUS[status], request_id
        elif status == "SECCOMP_VIOLATION":
            outcome = ["execution.seccomp_violation"]
            assert mine[-2]["details"]["syscall"] == "ptrace" and mine[-2]["details"]["syscall_nr"] == 101
        elif status == "CANCELLED":
            outcome = ["execution.cancelled"]
            assert mine[-2]["details"]["by"] == "local-admin"
        started = [] if status == "SETUP_FAILED" else ["execution.started"]
        assert events == ["request.received", "decision", *started, *outcome, "execution.finished"], request_id
        assert decision["details"]["outcome"] == "allowed" and decision["details"]["role"] == "admin"
        assert mine[-1]["details"]["outcome"] == status
        execution_id = decision["execution_id"]
        assert execution_id and all(record["execution_id"] == execution_id for record in mine[1:])
        if "streamed" in spec:
            assert spec["streamed"] == [stored_lines[record["seq"]] for record in mine[1:]], request_id

    cancelled_id = by_request(records, "cancel")[1]["execution_id"]
    [cancel_decision] = [record for record in records
                         if record["event"] == "decision" and record["details"]["rpc"] == "Cancel"]
    assert cancel_decision["execution_id"] == cancelled_id and cancel_decision["principal"] == "local-admin"
    assert cancel_decision["details"]["outcome"] == "allowed"
    assert records[0]["event"] == "daemon.started"
    assert records[0]["details"]["pid"] == daemon.process.pid  # type: ignore[union-attr]


# -- 2. tampering -----------------------------------------------------------------------------------------


def _some_records(made: Daemon, count: int = 3) -> None:
    with made.client() as client:
        for index in range(count):
            assert client.run_command(["/bin/echo", str(index)], request_id=f"r{index}").status_name == "OK"


def test_each_kind_of_tampering_is_caught_at_the_first_bad_record(daemon: Daemon, tmp_path: Path) -> None:
    _some_records(daemon)
    original = lines_of(daemon.audit_log)
    assert len(original) >= 12 and assert_verifies(daemon.audit_log)
    k = 6  # seq k is on line k: this log starts at seq 1
    record_k = json.loads(original[k - 1])
    copy = tmp_path / "audit.log"

    def tampered(lines: list[bytes]) -> Path:
        copy.write_bytes(b"".join(lines))
        return copy

    edited = dict(record_k, time=record_k["time"].replace(record_k["time"][:4], "1999"))
    edit = [*original[:k - 1], (canonical(edited) + "\n").encode(), *original[k:]]
    assert_broken(tampered(edit), seq=k, why="hash mismatch", line=k)

    drop = original[:k - 1] + original[k:]
    assert_broken(tampered(drop), seq=k + 1, why="seq gap", line=k)

    # A well-made record slipped in after seq k: it links and hashes (no key), so the chain breaks at the
    # record that follows it, the original seq k + 1, which now repeats a seq.
    forged = rehash({**record_k, "seq": k + 1, "prev": record_k["hash"], "event": "decision",
                     "details": {"outcome": "allowed", "rpc": "Execute", "role": "admin"}}, None)
    insert = [*original[:k], (canonical(forged) + "\n").encode(), *original[k:]]
    assert_broken(tampered(insert), seq=k + 1, why="seq not increasing", line=k + 2)

    reorder = [*original[:k - 1], original[k], original[k - 1], *original[k + 1:]]
    assert_broken(tampered(reorder), seq=k + 1, why="seq gap", line=k)

    # Renumbering the swapped pair to hide it breaks their hashes instead.
    swapped = [dict(json.loads(original[k]), seq=k), dict(json.loads(original[k - 1]), seq=k + 1)]
    renumbered = [*original[:k - 1], *[(canonical(one) + "\n").encode() for one in swapped], *original[k + 1:]]
    assert_broken(tampered(renumbered), seq=k, why="hash mismatch", line=k)

    cut = b"".join(original[:k - 1]) + original[k - 1][:len(original[k - 1]) // 2]
    copy.write_bytes(cut)
    assert_broken(copy, seq=k, why="torn last line", line=k)

    # The untouched copy verifies: the failures above are the tampering's.
    assert "ok: " in assert_verifies(tampered(original))


def test_with_a_key_only_its_holder_can_write_records_that_verify(tmp_path: Path) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o600)
    made = audited_daemon(tmp_path, f'key_file = "{key_file}"')
    with running(made):
        _some_records(made)
    original = lines_of(made.audit_log)
    records = [json.loads(line) for line in original]
    assert "HMAC-SHA256" in assert_verifies(made.audit_log, key_file=key_file)
    assert_broken(made.audit_log, seq=1, why="hash mismatch", line=1)  # no key: no record's hash matches

    copy = tmp_path / "forged.log"
    k = 5
    # An edit re-hashed with plain SHA-256 and every later record re-chained: consistent without the key
    # (which is all a plain chain can show), caught at the edit with it.
    edited = [*records[:k - 1], dict(records[k - 1], principal="someone-else"), *records[k:]]
    copy.write_bytes(b"".join([*original[:k - 1], *rechain(edited[k - 1:], None, records[k - 2]["hash"])]))
    assert_broken(copy, seq=k, why="hash mismatch", line=k, key_file=key_file)

    for forger_key in (None, os.urandom(32)):  # a whole chain forged with SHA-256, or with another key
        copy.write_bytes(b"".join(rechain(records, forger_key, ZERO_HASH)))
        assert_broken(copy, seq=1, why="hash mismatch", line=1, key_file=key_file)
        if forger_key is None:
            assert "ok: " in assert_verifies(copy)

    forged = rehash({**records[k - 1], "seq": k + 1, "prev": records[k - 1]["hash"]}, None)
    copy.write_bytes(b"".join([*original[:k], (canonical(forged) + "\n").encode(), *original[k:]]))
    assert_broken(copy, seq=k + 1, why="hash mismatch", line=k + 1, key_file=key_file)  # the insert itself

    # The daemon will not build on a chain its key does not verify: it refuses to start.
    made.audit_log.write_bytes(b"".join(rechain(records, None, ZERO_HASH)))
    try:
        with pytest.raises(AssertionError, match="sandboxd exited 1 at start"):
            made.start()
    finally:
        if made.process is not None and made.process.poll() is None:
            made.stop()
    assert "do not verify with this key" in made.logs()
    made.audit_log.write_bytes(b"".join(original))
    with running(made):
        pass
    assert "ok: " in assert_verifies(made.audit_log, key_file=key_file)
    assert made.audit_log.read_bytes().startswith(b"".join(original))


# -- 3, 4. restart and repair ------------------------------------------------------------------------------


def test_a_restart_continues_the_chain(daemon: Daemon) -> None:
    _some_records(daemon, 2)
    assert daemon.stop() == 0
    before = daemon.audit_records()
    assert before[-1]["event"] == "daemon.stopped"
    assert before[-1]["details"]["executions_total"] == 2
    daemon.start()
    _some_records(daemon, 1)
    after = daemon.audit_records()
    assert after[:len(before)] == before  # nothing rewritten
    first_new = after[len(before)]
    assert first_new["event"] == "daemon.started"
    assert first_new["seq"] == before[-1]["seq"] + 1 and first_new["prev"] == before[-1]["hash"]
    assert first_new["details"]["pid"] == daemon.process.pid  # type: ignore[union-attr]
    assert [record["event"] for record in after].count("daemon.started") == 2
    assert f"seq 1..{after[-1]['seq']}, 1 file(s)" in assert_verifies(daemon.audit_log)


def test_a_torn_last_line_is_cut_and_audited(daemon: Daemon) -> None:
    _some_records(daemon, 1)
    assert daemon.stop() == 0
    before = daemon.audit_records()
    torn = b'{"details":{"auth_method":"unix-socket","peer":"unix:","rpc":"Exec'
    with daemon.audit_log.open("ab") as log:
        log.write(torn)  # what a crash in the middle of a write leaves
    assert_broken(daemon.audit_log, seq=len(before) + 1, why="torn last line", line=len(before) + 1)
    daemon.start()
    after = daemon.audit_records()
    repaired, started = after[len(before)], after[len(before) + 1]
    assert repaired["event"] == "audit.repaired"
    assert repaired["seq"] == before[-1]["seq"] + 1 and repaired["prev"] == before[-1]["hash"]
    assert repaired["details"] == {"file": str(daemon.audit_log), "bytes_removed": len(torn),
                                   "removed_text_prefix": torn.decode()}
    assert started["event"] == "daemon.started"
    assert "cut a torn last line" in daemon.logs()
    assert "ok: " in assert_verifies(daemon.audit_log)


# -- 5. refusals ----------------------------------------------------------------------------------------------


def test_a_refusal_leaves_its_decision_and_nothing_more(daemon: Daemon) -> None:
    refusals: list[tuple[str, Callable[[], SandboxClient], dict[str, Any], str]] = [
        ("unknown-profile", daemon.client, {"command": ["/bin/true"], "profile": "absent"}, "UNKNOWN_PROFILE"),
        ("analyst-tool", lambda: SandboxClient(daemon.socket, token=ANALYST_TOKEN),
         {"tool": "python", "params": {"code": "1"}}, "TOOL_NOT_GRANTED"),
        ("bad-token", lambda: SandboxClient(daemon.socket, token="nobody-has-this-token"),
         {"command": ["/bin/true"]}, "AUTH_FAILED"),
    ]
    for request_id, connect, target, reason in refusals:
        before = last_seq(daemon)
        with connect() as client, pytest.raises(SandboxdError) as refused:
            client.run(**target, request_id=request_id)
        assert refused.value.reason == reason
        # The refusal is on file when the caller hears of it, and the daemon was idle: whatever follows
        # ``before`` is this request's.
        new = records_after(daemon, before)
        decision = new[-1]
        assert decision["event"] == "decision"
        assert decision["details"]["outcome"] == "denied" and decision["details"]["reason"] == reason
        assert decision["details"]["rpc"] == "Execute" and decision["details"]["message"]
        assert decision["execution_id"] == ""
        if reason == "AUTH_FAILED":  # nobody to name and no request to echo: the decision alone
            assert [record["event"] for record in new] == ["decision"]
            assert decision["principal"] == "" and decision["request_id"] == ""
        else:
            assert [record["event"] for record in new] == ["request.received", "decision"]
            assert {record["request_id"] for record in new} == {request_id}
            assert new[0]["tool"] == decision["tool"] == target.get("tool", "")
    assert "ok: " in assert_verifies(daemon.audit_log)


# -- 7. rotation and retention ------------------------------------------------------------------------------


def test_rotation_keeps_one_chain_and_retention_expires_the_oldest_files(tmp_path: Path) -> None:
    made = audited_daemon(tmp_path, 'rotate_size = "64K"\nretention_days = 1')
    with running(made):
        with made.client() as client, ThreadPoolExecutor(max_workers=8) as pool:
            # Their statuses do not matter here (and a concurrent load can trip an engine bug): their records do.
            list(pool.map(lambda index: client.run_command(["/bin/true"], request_id=f"rot-{index}"), range(100)))
        rotated = sorted(made.audit_log.parent.glob("audit.log.*"))
        assert len(rotated) >= 3, rotated
        files = [*rotated, made.audit_log]
        assert f"{len(files)} file(s)" in assert_verifies(*files)
        assert f"ok: {len(made.audit_records())} records" in assert_verifies(*reversed(files))  # any order
        ranges = []
        prev = ZERO_HASH
        for path in rotated:
            chunk = [json.loads(line) for line in lines_of(path)]
            assert re.fullmatch(r"audit\.log\.\d{12}", path.name) and int(path.name[10:]) == chunk[0]["seq"]
            assert path.stat().st_size >= 64 * 1024
            assert chunk[0]["prev"] == prev  # the chain runs across the files
            prev = chunk[-1]["hash"]
            ranges.append((chunk[0]["seq"], chunk[-1]["seq"]))

        # Damage between files shows too: a whole file dropped, or the end of a rotated one cut off.
        middle_gone = [rotated[0], *rotated[2:], made.audit_log]
        done = verify(*middle_gone)
        assert done.returncode == 1 and f"at seq {ranges[2][0]}: seq gap" in done.stderr, done.stderr
        short = tmp_path / rotated[0].name
        short.write_bytes(b"".join(lines_of(rotated[0])[:-1]))
        done = verify(short, *rotated[1:], made.audit_log)
        assert done.returncode == 1 and f"at seq {ranges[1][0]}: seq gap" in done.stderr, done.stderr

    three_days_ago = time.time() - 3 * 86_400
    for path in rotated[:2]:
        os.utime(path, (three_days_ago, three_days_ago))
    with running(made):  # retention runs when the log is opened
        assert not rotated[0].exists() and not rotated[1].exists()
        assert all(path.exists() for path in rotated[2:])
        records = made.audit_records()
        expired = [record for record in records if record["event"] == "audit.expired"]
        assert [record["details"]["file"] for record in expired] == [str(rotated[0]), str(rotated[1])]
        assert [(record["details"]["first_seq"], record["details"]["last_seq"]) for record in expired] == ranges[:2]
        assert records[-1]["event"] == "daemon.started" and records[-2] == expired[-1]
        report = assert_verifies(*audit_files(made))
        assert f"starts mid-chain at seq {ranges[2][0]}" in report


# -- 8. live subscribers ----------------------------------------------------------------------------------------

SUBSCRIBER_QUEUE = 16
# gRPC's client transport reads ahead and, probing the bandwidth, grows its window to megabytes, so a
# client that never calls next() still drains the server for hundreds of records. With probing off and a
# 1 KiB lookahead, the transport holds about one event: a consumer that stopped reading, as over a
# congested link. What the server still cannot send then waits in the hub's queue, whose bound is tested.
STUCK_CHANNEL_OPTIONS = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]


def test_a_stuck_subscriber_is_dropped_and_does_not_slow_executions(tmp_path: Path) -> None:
    made = audited_daemon(tmp_path, f"subscriber_queue = {SUBSCRIBER_QUEUE}")
    with running(made), grpc.insecure_channel(f"unix:{made.socket}", options=STUCK_CHANNEL_OPTIONS) as channel:
        stuck = pb_grpc.SandboxStub(channel).SubscribeAudit(pb.SubscribeAuditRequest(follow=True, last=1))
        subscribed = next(stuck)  # its own decision, stored: the live subscription was taken before
        assert subscribed.event == "decision" and json.loads(subscribed.details_json)["rpc"] == "SubscribeAudit"

        started = time.monotonic()
        with made.client() as client:
            statuses = [client.run_command(["/bin/true"], request_id=f"busy-{index}").status_name
                        for index in range(30)]
        elapsed_s = time.monotonic() - started
        assert statuses == ["OK"] * 30
        # The hub never waits: were publish() to block on the stuck reader, the executions would hang.
        assert elapsed_s < 30, elapsed_s
        records = made.audit_records()
        [dropped] = [record for record in records if record["event"] == "audit.subscriber_dropped"]
        first_missed = dropped["details"]["first_missed_seq"]
        assert dropped["details"]["queue_size"] == SUBSCRIBER_QUEUE and dropped["details"]["missed"] >= 1
        assert dropped["details"]["filter"] == {"principals": [], "tools": [], "events": []}
        # Dropped early, and the executions went on: most of their records come after the drop.
        finished_after = [record for record in records
                          if record["event"] == "execution.finished" and record["seq"] > first_missed]
        assert len(finished_after) >= 20, first_missed

        received = []
        with pytest.raises(grpc.RpcError) as ended:
            for event in stuck:  # read at last: what was queued, then the end
                received.append(event.seq)
        # Every record from the subscription on, up to the one that did not fit; no more than the queue
        # and the transport's few events held: the hub's bound, not gRPC's, dropped it.
        assert received == list(range(subscribed.seq + 1, first_missed))
        assert SUBSCRIBER_QUEUE <= len(received) <= SUBSCRIBER_QUEUE + 8
        error = ended.value
        metadata = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
        assert metadata.get("sandboxd-reason") == "SUBSCRIBER_TOO_SLOW"
        missed = int(re.search(r"missed (\d+) events", error.details()).group(1))  # type: ignore[attr-defined, union-attr]
        assert missed == last_seq(made) - first_missed + 1  # everything from the drop on: nothing since
        assert "ok: " in assert_verifies(made.audit_log)
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]


def test_a_reading_subscriber_gets_every_matching_record_in_order(daemon: Daemon) -> None:
    arrived: queue.Queue[pb.AuditEvent] = queue.Queue()
    with daemon.client() as client, grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        assert client.run_tool("python", {"code": "1"}).status_name == "OK"  # a record for last=1 to send
        call = pb_grpc.SandboxStub(channel).SubscribeAudit(pb.SubscribeAuditRequest(
            tools=["python"], events=["execution."], last=1, follow=True))

        def follow() -> None:
            with contextlib.suppress(grpc.RpcError):  # cancelled at the end
                for event in call:
                    arrived.put(event)

        threading.Thread(target=follow, daemon=True).start()
        try:
            first = arrived.get(timeout=30)
            assert first.event == "execution.finished"  # stored; the subscription is live
            for index in range(3):
                assert client.run_tool("python", {"code": f"print({index})"}).status_name == "OK"
                assert client.run_command(["/bin/true"]).status_name == "OK"  # not "python": filtered out
            followed = [first] + [arrived.get(timeout=30) for _ in range(6)]
            assert client.run_command(["/bin/true"]).status_name == "OK"
            assert client.run_tool("python", {"code": "1"}).status_name == "OK"
            followed.append(arrived.get(timeout=30))  # the next that matches, and no record in between
        finally:
            call.cancel()
    expected = [record for record in daemon.audit_records() if record["seq"] >= first.seq
                and record["tool"] == "python" and record["event"].startswith("execution.")]
    assert [event.record_json for event in followed] == [canonical(record) for record in expected[:8]]
    assert [record["event"] for record in expected[:8]] == ["execution.finished", *["execution.started",
                                                                                    "execution.finished"] * 3,
                                                            "execution.started"]


def test_only_admins_may_read_the_audit_stream(daemon: Daemon) -> None:
    before = last_seq(daemon)
    with SandboxClient(daemon.socket, token=ANALYST_TOKEN) as client, pytest.raises(SandboxdError) as refused:
        list(client.subscribe_audit(last=5))
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED and refused.value.reason == "ADMIN_ONLY"
    [decision] = records_after(daemon, before)
    assert decision["event"] == "decision" and decision["principal"] == "analyst-bot"
    assert decision["details"]["outcome"] == "denied" and decision["details"]["rpc"] == "SubscribeAudit"
    done = daemon.ctl("audit", "tail", "-n", "1", env={**os.environ, "SANDBOXD_TOKEN": ANALYST_TOKEN})
    assert done.returncode != 0 and b"ADMIN_ONLY" in done.stderr


# -- 9. sandboxctl audit ----------------------------------------------------------------------------------------


def test_sandboxctl_tail_prints_the_last_records(daemon: Daemon) -> None:
    _some_records(daemon, 3)
    done = daemon.ctl("audit", "tail", "-n", "5")
    assert done.returncode == 0, done.stderr
    printed = done.stdout.decode().splitlines()
    records = daemon.audit_records()  # the last is tail's own decision: it was taken before reading
    assert [int(line.split()[0]) for line in printed] == [record["seq"] for record in records[-5:]]
    assert [line.split()[3] for line in printed] == [record["event"] for record in records[-5:]]
    assert printed[-1].split()[3] == "decision" and "rpc=SubscribeAudit" in printed[-1]

    filtered = daemon.ctl("audit", "tail", "-n", "100", "--json", "--event", "execution.finished")
    expected = [canonical(record) for record in daemon.audit_records() if record["event"] == "execution.finished"]
    assert filtered.stdout.decode().splitlines() == expected and len(expected) == 3


def test_sandboxctl_export_prints_the_stored_lines_verbatim(daemon: Daemon, tmp_path: Path) -> None:
    _some_records(daemon, 3)
    done = daemon.ctl("audit", "export", "--since", "1h")
    assert done.returncode == 0, done.stderr
    assert done.stdout == daemon.audit_log.read_bytes()  # the export's own decision included
    export = tmp_path / "export.jsonl"
    export.write_bytes(done.stdout)
    assert f"ok: {len(daemon.audit_records())} records, seq 1.." in assert_verifies(export)

    middle = daemon.audit_records()[6]
    done = daemon.ctl("audit", "export", "--since", middle["time"])
    exported = [json.loads(line) for line in done.stdout.splitlines()]
    assert exported[0]["seq"] <= middle["seq"] and exported[-1]["event"] == "decision"
    export.write_bytes(done.stdout)
    assert f"starts mid-chain at seq {exported[0]['seq']}" in assert_verifies(export)


def test_sandboxctl_tail_follow_shows_a_new_record(daemon: Daemon) -> None:
    tail = daemon.ctl_popen("audit", "tail", "-n", "1", "-f", "--json")
    lines: queue.Queue[bytes] = queue.Queue()
    assert tail.stdout is not None
    output = tail.stdout

    def read() -> None:
        for line in output:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        own = json.loads(lines.get(timeout=30))  # its own decision: the subscription is live
        assert own["event"] == "decision" and own["details"]["rpc"] == "SubscribeAudit"
        with daemon.client() as client:
            assert client.run_command(["/bin/true"], request_id="follow-me").status_name == "OK"
        deadline = time.monotonic() + 30
        seen = []
        while not any(r["request_id"] == "follow-me" and r["event"] == "execution.finished" for r in seen):
            seen.append(json.loads(lines.get(timeout=max(0.1, deadline - time.monotonic()))))
        assert [r["event"] for r in seen] == ["request.received", "decision", "execution.started",
                                              "execution.finished"]
        assert [canonical(r) for r in seen] == [canonical(r) for r in records_after(daemon, own["seq"])]
    finally:
        tail.terminate()
        tail.communicate(timeout=30)
