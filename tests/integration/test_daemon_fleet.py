"""A fleet of three real daemons on loopback TCP with TLS, and one client that spreads its calls over them.

It proves: a few thousand calls through one client (gRPC's round_robin over the three addresses) reach every
daemon; the calls round_robin sends a full daemon are refused before they start (TOO_MANY_EXECUTIONS, in its
own audit log) and each runs once on another; while one daemon is stopped in the middle (SIGTERM, as
Kubernetes stops a pod: it drains, finishes what runs, refuses what comes, and its plaintext health port says
NOT_SERVING), every call gets exactly one Result or a clear error before it started — never two Results,
never an error after it started — each runs exactly once, and what the stopping daemon refused (DRAINING) ran
on another daemon; a session's calls all run on the daemon its id names;
``sandboxctl ps``, ``info`` and ``audit tail`` with three ``--address`` options show every daemon by instance;
and ``sandboxctl audit verify`` checks the three chains at once, naming each instance and the one tampered.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import CertificateAuthority, make_ca
from daemon_harness import SANDBOXCTL, Daemon, make_daemon, running, wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_daemon_auth import free_port

from sandboxd.api.session_ids import daemon_of
from sandboxd.cli.client import SandboxClient, SandboxdError, TlsFiles, pb
from sandboxd.cli.sessions import Session, list_sessions

pytestmark = pytest.mark.root

TOKEN = "fleet-test-operator-token-0123456789"
CALLS_SPREAD = 900  # spread over three daemons
CALLS_WHILE_FULL = 300  # one daemon has no free slot
CALLS_ACROSS_THE_STOP = 1200  # one daemon is stopped while these run
PARALLEL_CALLERS = 12
LONG_CALL_S = 3  # keeps the stopping daemon draining (and refusing) for this long
MAX_CONCURRENT = 8  # per daemon: the callers also meet TOO_MANY_EXECUTIONS, which is retried elsewhere

POLICY = f"""
[principals.local-admin]
roles = ["operator"]
[principals.fleet-operator]
roles = ["operator"]
token_sha256 = ["{hashlib.sha256(TOKEN.encode()).hexdigest()}"]
[roles.operator]
tools = ["*"]
commands = true
admin = true
rate_per_minute = 1000000
burst = 100000
"""


@dataclass(frozen=True)
class Fleet:
    daemons: list[Daemon]
    addresses: list[str]
    ca: CertificateAuthority
    health_addresses: list[str]  # each daemon's plaintext grpc.health.v1 listener (as Kubernetes probes it)

    def health_of(self, index: int, service: str = "sandboxd.v1.Sandbox") -> str:
        with grpc.insecure_channel(self.health_addresses[index]) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                  timeout=10)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def client(self) -> SandboxClient:
        return SandboxClient(addresses=self.addresses, tls=TlsFiles(self.ca.cert_file), token=TOKEN)

    def client_of(self, index: int) -> SandboxClient:
        return SandboxClient(target=self.addresses[index], tls=TlsFiles(self.ca.cert_file), token=TOKEN)

    def ctl(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """``sandboxctl --address A --address B --address C --tls-ca CA ARGS`` (the token in the environment)."""
        fleet = [option for address in self.addresses for option in ("--address", address)]
        return subprocess.run([str(SANDBOXCTL), *fleet, "--tls-ca", str(self.ca.cert_file), *args],
                              capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, "SANDBOXD_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    tmp = tmp_path_factory.mktemp("fleet")
    ca = make_ca(tmp / "pki")
    server = ca.issue_server()
    daemons, addresses, health = [], [], []
    for _ in range(3):
        address, health_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        tls = f'[daemon.tls]\ncert_file = "{server.cert_file}"\nkey_file = "{server.key_file}"\n'
        daemons.append(make_daemon(tmp, tcp_listen=address, health_listen=health_address,
                                   max_concurrent_executions=MAX_CONCURRENT, grace_period="20s", extra=tls + POLICY))
        addresses.append(address)
        health.append(health_address)
    with running(daemons[0]), running(daemons[1]), running(daemons[2]):
        yield Fleet(daemons, addresses, ca, health)


# -- what the daemons recorded ---------------------------------------------------------------------------


def finished_by_request(daemon: Daemon, prefix: str) -> Counter[str]:
    """How many executions of each request id (starting with ``prefix``) this daemon finished."""
    return Counter(record["request_id"] for record in daemon.audit_records()
                   if record["event"] == "execution.finished" and record["request_id"].startswith(prefix))


def refused_by_request(daemon: Daemon, prefix: str, reason: str) -> set[str]:
    return {record["request_id"] for record in daemon.audit_records()
            if record["event"] == "decision" and record["details"].get("reason") == reason
            and record["request_id"].startswith(prefix)}


# -- calls -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    request_id: str
    results: int  # Result events received
    events: int  # events of any kind received
    status: str  # of the Result, when one came
    error: SandboxdError | None


def one_call(client: SandboxClient, request_id: str, argv: tuple[str, ...] = ("/bin/true",)) -> Call:
    results, events, status = 0, 0, ""
    try:
        for event in client.execute(command=list(argv), request_id=request_id):
            events += 1
            if event.WhichOneof("event") == "result":
                results += 1
                status = pb.Status.Name(event.result.status)
    except SandboxdError as error:
        return Call(request_id, results, events, status, error)
    return Call(request_id, results, events, status, None)


def check_each_got_one_result_or_a_refusal(calls: list[Call]) -> list[Call]:
    """Every call: exactly one Result (OK), or an error that came before anything else and says the daemon
    refused it before it started. Returns the refused ones."""
    refused = []
    for call in calls:
        if call.error is None:
            assert (call.results, call.status) == (1, "OK"), call
        else:
            assert call.events == 0 and call.error.temporary, call  # a clear refusal, before it started
            refused.append(call)
    return refused


def test_calls_spread_over_the_fleet_and_a_full_daemons_refusals_go_elsewhere(fleet: Fleet) -> None:
    with fleet.client() as client, ThreadPoolExecutor(PARALLEL_CALLERS) as pool:
        calls = list(pool.map(lambda i: one_call(client, f"spread-{i}"), range(CALLS_SPREAD)))
        assert not check_each_got_one_result_or_a_refusal(calls)
        shares = [sum(finished_by_request(daemon, "spread-").values()) for daemon in fleet.daemons]
        assert sum(shares) == CALLS_SPREAD, shares
        assert min(shares) >= CALLS_SPREAD // 6, f"round_robin left a daemon out: {shares}"

        # Daemon 0 is full (its every slot held by a long call): what round_robin sends it is refused
        # TOO_MANY_EXECUTIONS before it starts, and retried on another daemon.
        with fleet.client_of(0) as full_one:
            holders = [full_one.execute(command=["/bin/sleep", "60"], request_id=f"hold-{i}")
                       for i in range(MAX_CONCURRENT)]
            for holder in holders:
                assert any(event.WhichOneof("event") == "started" for event in holder)
            calls = list(pool.map(lambda i: one_call(client, f"full-{i}"), range(CALLS_WHILE_FULL)))
            for holder in holders:
                holder.close()  # cancels it
    assert not check_each_got_one_result_or_a_refusal(calls)
    ran = [finished_by_request(daemon, "full-") for daemon in fleet.daemons]
    assert not ran[0], "the full daemon ran a call"
    total = ran[1] + ran[2]
    assert set(total) == {f"full-{i}" for i in range(CALLS_WHILE_FULL)} and max(total.values()) == 1
    refused = refused_by_request(fleet.daemons[0], "full-", "TOO_MANY_EXECUTIONS")
    assert len(refused) >= CALLS_WHILE_FULL // 6, f"round_robin sent the full daemon only {len(refused)} calls"


@pytest.fixture
def victim(fleet: Fleet) -> Iterator[Daemon]:
    """The daemon a test stops; started again afterwards (the other tests use three daemons)."""
    yield fleet.daemons[2]
    if fleet.daemons[2].process is None or fleet.daemons[2].process.poll() is not None:
        fleet.daemons[2].start()


def test_every_call_gets_one_result_or_a_refusal_while_a_daemon_stops(fleet: Fleet, victim: Daemon) -> None:
    with fleet.client() as client, ThreadPoolExecutor(PARALLEL_CALLERS) as pool, \
            ThreadPoolExecutor(1) as stopper, fleet.client_of(2) as victim_client:
        # A call that had started on the stopping daemon keeps it draining for a while, then finishes.
        long_call = victim_client.execute(command=["/bin/sleep", str(LONG_CALL_S)], request_id="long")
        assert any(event.WhichOneof("event") == "started" for event in long_call)  # (stops at Started)
        done = Counter[str]()
        lock = threading.Lock()

        def counted(i: int) -> Call:
            call = one_call(client, f"across-{i}")
            with lock:
                done["calls"] += 1
            return call

        across = [pool.submit(counted, i) for i in range(CALLS_ACROSS_THE_STOP)]
        wait_for(lambda: done["calls"] >= CALLS_ACROSS_THE_STOP // 5, 120, "a fifth of the calls")
        assert fleet.health_of(2) == "SERVING"
        stopping = stopper.submit(victim.stop)  # SIGTERM
        # Draining (the long call holds it): its plaintext health port, which the kubelet probes, says so.
        wait_for(lambda: fleet.health_of(2) == "NOT_SERVING", 10, "the stopping daemon's NOT_SERVING")
        assert fleet.health_of(2, service="") == "NOT_SERVING" and fleet.health_of(0) == "SERVING"
        long_events = list(long_call)
        calls = [future.result(timeout=300) for future in across]
        assert stopping.result(timeout=120) == 0, victim.logs()
    assert pb.Status.Name(long_events[-1].result.status) == "OK"  # the call that had started finished
    refused = check_each_got_one_result_or_a_refusal(calls)
    assert not refused, f"{len(refused)} calls refused everywhere: {refused[:3]}"
    # Every call ran exactly once, somewhere; after the stop, on the others; what the stopping daemon
    # refused (DRAINING), on another.
    ran = [finished_by_request(daemon, "across-") for daemon in fleet.daemons]
    total = sum(ran, Counter[str]())
    assert set(total) == {f"across-{i}" for i in range(CALLS_ACROSS_THE_STOP)}
    assert max(total.values()) == 1, [rid for rid, n in total.items() if n > 1][:5]
    assert all(ran[index] for index in range(2))
    drained = refused_by_request(victim, "across-", "DRAINING")
    assert not drained & set(ran[2]) and drained <= set(ran[0]) | set(ran[1])
    assert "calls kept coming while stopping" not in victim.logs()


def test_a_sessions_calls_stay_on_its_daemon(fleet: Fleet) -> None:
    instances = [daemon.instance for daemon in fleet.daemons]
    with fleet.client() as client, Session.create(client, limits={"memory_max_bytes": 64 << 20}) as session:
        home = daemon_of(session.session_id)
        assert home in instances, session.session_id
        session.put_file("note.txt", b"kept here\n")
        calls = [session.run_command(["/bin/cat", "note.txt"], request_id=f"session-{i}") for i in range(12)]
        assert {(c.status_name, c.stdout) for c in calls} == {("OK", b"kept here\n")}
        assert session.get_file("note.txt")[0] == b"kept here\n"
        listed = {s.session_id for s in list_sessions(client)}
        assert session.session_id in listed
    for daemon in fleet.daemons:
        count = sum(finished_by_request(daemon, "session-").values())
        assert count == (12 if daemon.instance == home else 0), (daemon.instance, home, count)


def test_fleet_view_names_every_daemon(fleet: Fleet) -> None:
    instances = {daemon.instance for daemon in fleet.daemons}
    with fleet.client_of(1) as one:
        running_call = one.execute(command=["/bin/sleep", "30"], request_id="fleet-view")
        started = next(event.started for event in running_call if event.WhichOneof("event") == "started")
        try:
            done = fleet.ctl("ps")
            assert done.returncode == 0, done.stderr
            header, *rows = done.stdout.splitlines()
            assert header.split()[:2] == ["INSTANCE", "ID"]
            assert [row.split()[:2] for row in rows if "fleet-view" in row] == [
                [fleet.daemons[1].instance, started.execution_id]]
            done = fleet.ctl("ps", "--json")
            lines = [json.loads(line) for line in done.stdout.splitlines()]
            assert {(item["instance"], item["executionId"]) for item in lines
                    if item.get("requestId") == "fleet-view"} == {(fleet.daemons[1].instance, started.execution_id)}
            done = fleet.ctl("cancel", started.execution_id)  # whichever daemon runs it
            assert done.returncode == 0, done.stderr
        finally:
            running_call.close()
    done = fleet.ctl("info", "--json")
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["instance"] for line in done.stdout.splitlines()} == instances
    done = fleet.ctl("info")
    assert {line.split()[1] for line in done.stdout.splitlines() if line.startswith("instance:")} == instances
    done = fleet.ctl("audit", "tail", "-n", "2")
    assert done.returncode == 0, done.stderr
    assert Counter(line.split()[0] for line in done.stdout.splitlines()) == dict.fromkeys(instances, 2)
    done = fleet.ctl("audit", "tail", "-n", "1", "--json")
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert {item["instance"] for item in records} == instances and all("hash" in r["record"] for r in records)


def test_a_fleet_view_reports_a_daemon_that_does_not_answer(fleet: Fleet, tmp_path: Path) -> None:
    silent = f"127.0.0.1:{free_port()}"
    fleet_options = [option for address in [*fleet.addresses, silent] for option in ("--address", address)]
    done = subprocess.run([str(SANDBOXCTL), *fleet_options, "--tls-ca", str(fleet.ca.cert_file), "info", "--json"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "SANDBOXD_TOKEN": TOKEN})
    assert done.returncode == 1, (done.stdout, done.stderr)  # incomplete, not failed
    assert len(done.stdout.splitlines()) == 3
    assert f"ipv4:{silent}" in done.stderr and "UNAVAILABLE" in done.stderr


def test_audit_verify_checks_the_three_chains_at_once(fleet: Fleet, tmp_path: Path) -> None:
    copies = []
    for index, daemon in enumerate(fleet.daemons):
        with fleet.client_of(index) as client:
            assert client.run_command(["/bin/true"]).status_name == "OK"  # (records to tamper with)
        copy = tmp_path / daemon.instance
        shutil.copytree(daemon.audit_log.parent, copy)
        copies.append(copy)
    done = fleet.ctl("audit", "verify", *map(str, copies))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == sorted(d.instance for d in fleet.daemons)
    assert all(": ok: " in line for line in lines), lines
    # One chain edited: that instance is named broken, the others still check out.
    tampered = copies[1] / "audit.log"
    records = tampered.read_text().splitlines(keepends=True)
    edited: dict[str, Any] = json.loads(records[-2])
    edited["principal"] = "someone-else"
    records[-2] = json.dumps(edited, separators=(",", ":")) + "\n"
    tampered.write_text("".join(records))
    done = fleet.ctl("audit", "verify", *map(str, copies))
    assert done.returncode == 1
    assert f"{fleet.daemons[1].instance}: BROKEN at seq" in done.stdout
    assert sum(": ok: " in line for line in done.stdout.splitlines()) == 2, done.stdout


def test_several_addresses_over_tls_need_one_name(fleet: Fleet) -> None:
    with pytest.raises(SandboxdError, match="tls-server-name"):
        SandboxClient(addresses=["127.0.0.1:1", "127.0.0.2:2"], tls=TlsFiles(fleet.ca.cert_file))
    start = time.monotonic()
    with SandboxClient(addresses=["localhost:" + a.rpartition(":")[2] for a in fleet.addresses],
                       tls=TlsFiles(fleet.ca.cert_file), token=TOKEN) as client:
        assert client.is_fleet
        assert {d.instance() for d in client.daemons()} == {d.instance for d in fleet.daemons}
    assert time.monotonic() - start < 30
