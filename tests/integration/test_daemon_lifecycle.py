"""The daemon as a service: bounded concurrency, draining on SIGTERM with a Result for every execution, a
slow reader that blocks only itself, several daemons on one host, health and reflection."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest
from daemon_harness import Daemon, assert_nothing_left, daemon_fixture, make_daemon
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from sandboxd.cli.client import SandboxClient, SandboxdError, pb

pytestmark = pytest.mark.root

daemon = daemon_fixture(max_concurrent_executions=2, grace_period="1s", limits={"output": "256M"})


def wait_started(events: object) -> pb.Started:
    for event in events:  # type: ignore[attr-defined]
        if event.WhichOneof("event") == "started":
            return event.started  # type: ignore[no-any-return]
        assert event.WhichOneof("event") != "result", event
    raise AssertionError("no Started event")


def test_concurrency_bound(daemon: Daemon) -> None:
    with daemon.client() as client:
        first = client.execute(command=["/bin/sleep", "30"])
        second = client.execute(command=["/bin/sleep", "30"])
        ids = {wait_started(first).execution_id, wait_started(second).execution_id}
        with pytest.raises(SandboxdError) as caught:
            client.run_command(["/bin/true"])
        assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                            "TOO_MANY_EXECUTIONS")
        assert caught.value.temporary
        assert {item.execution_id for item in client.list_executions()} == ids
        for execution_id in ids:
            client.cancel(execution_id)
        assert [event.result.status for event in first][-1] == pb.CANCELLED
        assert [event.result.status for event in second][-1] == pb.CANCELLED
        assert client.run_command(["/bin/true"]).status_name == "OK"


def test_caller_that_leaves_kills_its_execution(daemon: Daemon) -> None:
    with daemon.client() as client:
        stream = client.execute(command=["/bin/sleep", "30"])
        wait_started(stream)
        stream.close()
        deadline = time.monotonic() + 10
        while client.list_executions() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.list_executions()


def test_slow_reader_blocks_only_itself(daemon: Daemon) -> None:
    with daemon.client() as flooding, daemon.client() as other:
        flood = flooding.execute(command=["/usr/bin/yes"], limits={"output_max_bytes": 64 << 20,
                                                                   "wall_time_ms": 30_000})
        wait_started(flood)  # ... and then read nothing: the flood fills the pipes and stops there
        time.sleep(0.5)
        started = time.monotonic()
        outcome = other.run_tool("python", {"code": "print('still served')"})
        assert outcome.stdout == b"still served\n"
        assert time.monotonic() - started < 5
        [running] = [item for item in other.list_executions() if item.tool == ""]
        other.cancel(running.execution_id)
        total = sum(len(event.output.data) for event in flood if event.WhichOneof("event") == "output")
        assert total < 64 << 20  # back-pressure held the flood


def test_sigterm_lets_running_finish_then_cancels_and_still_answers(daemon: Daemon) -> None:
    with daemon.client() as client:
        short = client.execute(command=["/bin/sh", "-c", "sleep 0.3; echo finished"])
        long = client.execute(command=["/bin/sleep", "60"])
        wait_started(short)
        wait_started(long)
        daemon.signal(signal.SIGTERM)
        time.sleep(0.2)
        with pytest.raises(SandboxdError) as caught:  # draining: nothing new
            client.run_command(["/bin/true"])
        assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "DRAINING")
        short_events = list(short)
        assert short_events[-1].result.status == pb.OK  # finished within the grace period
        assert b"finished\n" in b"".join(e.output.data for e in short_events if e.WhichOneof("event") == "output")
        long_result = list(long)[-1].result
        assert long_result.status == pb.CANCELLED  # cancelled after it, and told so
    assert daemon.stop() == 0
    assert "grace period over: cancelled 1 executions" in daemon.logs()


def test_sigterm_through_sandboxctl(daemon: Daemon) -> None:
    process = daemon.ctl_popen("exec", "--json", "--", "/bin/sleep", "60")
    assert process.stdout is not None
    while "started" not in json.loads(process.stdout.readline()):
        pass
    daemon.signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert json.loads(out.splitlines()[-1])["result"]["status"] == "CANCELLED"
    assert process.returncode == 137


def test_health_and_reflection(daemon: Daemon) -> None:
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "sandboxd.v1.Sandbox"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        reflection = ProtoReflectionDescriptorDatabase(channel)
        services = reflection.get_services()
        assert "sandboxd.v1.Sandbox" in services
        assert "grpc.health.v1.Health" in services
        descriptor = reflection.FindFileContainingSymbol("sandboxd.v1.Sandbox")
        assert descriptor.package == "sandboxd.v1"
        assert [method.name for method in descriptor.service[0].method] == [
            "Execute", "Cancel", "ListExecutions", "ListTools", "GetInfo", "SubscribeAudit", "ExecuteInteractive",
            "CreateSession", "CloseSession", "ListSessions", "PutFile", "GetFile", "Grant", "Revoke", "ListGrants"]
    done = daemon.ctl("health")
    assert (done.returncode, done.stdout) == (0, b"SERVING\n")


def test_socket_mode(daemon: Daemon) -> None:
    assert daemon.socket.stat().st_mode & 0o777 == 0o660


def test_the_daemon_never_forks(daemon: Daemon) -> None:
    assert daemon.process is not None
    with daemon.client() as client:
        stream = client.execute(command=["/bin/sleep", "30"])
        started = wait_started(stream)
        children = psutil.Process(daemon.process.pid).children()
        # One child, exec'd once at start: the spawner. Sandboxes descend from it, not from the daemon.
        assert len(children) == 1, children
        assert started.pid not in [child.pid for child in children]
        assert started.pid in [p.pid for p in children[0].children(recursive=True)]
        client.cancel(started.execution_id)
        list(stream)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_several_daemons_on_one_host(tmp_path: Path, daemon: Daemon) -> None:
    port = _free_port()
    token = "tcp-callers-need-a-token"
    other = make_daemon(tmp_path, tcp_listen=f"127.0.0.1:{port}", extra=(
        "[principals.local-admin]\nroles = ['admin']\n"
        f"[principals.tcp-caller]\nroles = ['admin']\ntoken_sha256 = ['{hashlib.sha256(token.encode()).hexdigest()}']\n"
    ))
    other.start()
    try:
        results: dict[str, str] = {}

        def run(name: str, client: SandboxClient) -> None:
            with client:
                results[name] = client.run_tool("python", {"code": f"print('{name}')"}).stdout.decode()

        threads = [threading.Thread(target=run, args=("first", daemon.client())),
                   threading.Thread(target=run, args=("second", other.client())),
                   threading.Thread(target=run, args=("tcp", SandboxClient(target=f"127.0.0.1:{port}", token=token)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results == {"first": "first\n", "second": "second\n", "tcp": "tcp\n"}
        with daemon.client() as one, other.client() as two:
            assert one.info().instance == daemon.instance and two.info().instance == other.instance
            assert one.info().cgroup_base != two.info().cgroup_base
    finally:
        assert other.stop() == 0, other.logs()
    assert_nothing_left(other)


def test_a_second_daemon_refuses_a_busy_socket_or_state_dir(tmp_path: Path, daemon: Daemon) -> None:
    same_socket = make_daemon(tmp_path)
    same_socket.root = daemon.root  # same socket and state dir paths as the running one
    done = subprocess.run(same_socket.command(), capture_output=True, timeout=30)
    assert done.returncode == 78
    assert b"in use by another sandboxd" in done.stderr
    clash = make_daemon(tmp_path)
    command = clash.command()
    command[command.index("--socket") + 1] = str(daemon.socket)
    done = subprocess.run(command, capture_output=True, timeout=30)
    assert done.returncode == 78
    assert b"another daemon is listening" in done.stderr
    with daemon.client() as client:  # the first one is unharmed
        assert client.health() == "SERVING"


def test_invalid_config_fails_the_start(tmp_path: Path) -> None:
    broken = make_daemon(tmp_path, max_request_bytes="12 parsecs")
    done = subprocess.run(broken.command(), capture_output=True, timeout=30)
    assert done.returncode == 78
    assert f"{broken.config_path}: daemon.max_request_bytes: ".encode() in done.stderr


def test_the_daemon_serves_above_its_sandboxes_priority(daemon: Daemon) -> None:
    """The daemon answers at niceness -5 (health checks and Results are not held up by a machine full of
    sandboxes); what it runs does not inherit that: its spawner and every sandbox are at niceness 0."""
    assert daemon.process is not None
    serving = psutil.Process(daemon.process.pid)
    threads_nice = {psutil.Process(thread.id).nice() for thread in serving.threads()}
    spawner = next(child for child in serving.children() if child.name() == "sandboxd-spawn")
    with daemon.client() as client:
        outcome = client.run_command(["/bin/sh", "-c", "/usr/bin/nice; cut -d' ' -f19 /proc/1/stat"])
    assert outcome.status_name == "OK", outcome.result
    assert threads_nice == {-5}
    assert spawner.nice() == 0
    assert outcome.stdout == b"0\n0\n"  # the handler's niceness, then its init's
