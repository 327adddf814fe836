"""The servicer over a real gRPC socket, with a fake engine: conversions, refusals and their codes, admission,
cancellation, and the promise of exactly one Result per accepted execution. No root needed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2_grpc as pb_grpc
from sandboxd.api.handlers import add_sandbox_service
from sandboxd.api.status import reason_from_metadata
from sandboxd.audit.writer import AuditLog
from sandboxd.base.errors import SpawnerError
from sandboxd.base.limits import Limits
from sandboxd.cli.client import SandboxClient, SandboxdError, pb
from sandboxd.engine.pool import PoolStats
from sandboxd.engine.result import Event, Output, Result, Started, Status, Stream
from sandboxd.engine.spec import ExecutionSpec
from sandboxd.policy.auth import Authenticator
from sandboxd.policy.decisions import Policy
from sandboxd.server.admission import Admission
from sandboxd.server.audit_trail import AuditTrail
from sandboxd.server.config import SHIPPED_HANDLERS_DIR, SHIPPED_PROFILES_DIR, SHIPPED_TOOLS_DIR, Config, DaemonConfig
from sandboxd.server.host_info import DaemonFacts
from sandboxd.server.metrics import Metrics
from sandboxd.server.registry import ToolRegistry
from sandboxd.server.runtime import Runtime
from sandboxd.server.service import SandboxService
from sandboxd.server.tools import load_tools

MAX_REQUEST_BYTES = 8192


@dataclass
class FakeRunning:
    execution_id: str
    started_at: float
    pid: int = 4242
    cpu_usec: int = 1500
    memory_peak_bytes: int = 2048


async def until_set(chunks: AsyncIterator[bytes] | None, gate: asyncio.Event) -> AsyncIterator[bytes]:
    """``chunks`` until they end or ``gate`` is set (a cancel), whichever comes first."""
    if chunks is None:
        return
    chunks = aiter(chunks)
    while True:
        following = asyncio.ensure_future(anext(chunks, b""))
        stop = asyncio.ensure_future(gate.wait())
        await asyncio.wait({following, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not following.done():
            following.cancel()
            return
        if not (chunk := following.result()):
            return
        yield chunk


@dataclass
class FakeExecutor:
    """Commands name their behaviour: /wait blocks until cancelled, /explode raises, /cat echoes its stdin
    stream, anything else echoes."""

    backend_name: str = "fake"
    cgroup_base: str = "/fake/cgroup"
    specs: list[ExecutionSpec] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    running_ids: dict[str, float] = field(default_factory=dict)
    signals: list[tuple[str, int]] = field(default_factory=list)

    async def execute(
        self, spec: ExecutionSpec, *, execution_id: str | None = None, cancel: asyncio.Event | None = None,
        stdin_stream: AsyncIterator[bytes] | None = None, session: object = None,
        record: Callable[[Result], Awaitable[None]] | None = None,
    ) -> AsyncIterator[Event]:
        """As the engine does: ``record`` gets each Result before it is yielded."""
        assert session is None  # sessions need the real engine: tests/integration/test_daemon_sessions.py
        eid = execution_id or "x"
        self.specs.append(spec)
        gate = self.gates[eid] = cancel or asyncio.Event()
        try:
            if spec.argv[0] == "/explode":
                raise SpawnerError("the spawner died")
            self.running_ids[eid] = time.time()
            yield Started(eid, 4242, spec.limits, f"exec-{eid}")
            yield Output(eid, Stream.STDOUT, b"hello")
            yield Output(eid, Stream.STDERR, b"warn")
            if spec.argv[0] == "/cat":
                yield Output(eid, Stream.STDOUT, spec.stdin)
                async for chunk in until_set(stdin_stream, gate):
                    yield Output(eid, Stream.STDOUT, chunk)
                if gate.is_set():
                    yield await _recorded(Result(eid, Status.CANCELLED, "cancelled", signal=9), record)
                    return
            if spec.argv[0] == "/wait":
                await gate.wait()
                yield await _recorded(Result(eid, Status.CANCELLED, "cancelled", signal=9), record)
                return
            ok = Result(eid, Status.OK, "exited 0", exit_code=0, stdout_bytes=5, stderr_bytes=4)
            yield await _recorded(ok, record)
        finally:
            self.running_ids.pop(eid, None)
            self.closed.append(eid)

    def cancel(self, execution_id: str) -> bool:
        gate = self.gates.get(execution_id)
        if gate is None:
            return False
        gate.set()
        return True

    def pool_stats(self) -> PoolStats:
        return PoolStats()

    def signal(self, execution_id: str, signum: int) -> bool:
        if execution_id not in self.running_ids:
            return False
        self.signals.append((execution_id, signum))
        return True

    def running(self) -> list[FakeRunning]:
        return [FakeRunning(eid, started) for eid, started in self.running_ids.items()]


@dataclass
class Harness:
    client: SandboxClient
    executor: FakeExecutor
    admission: Admission
    loop: asyncio.AbstractEventLoop

    def call_soon(self, fn: Any) -> None:
        self.loop.call_soon_threadsafe(fn)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    (tmp_path / "files").mkdir()
    (tmp_path / "sqlite").mkdir()
    tools = load_tools([SHIPPED_TOOLS_DIR], placeholders={"handlers_dir": str(SHIPPED_HANDLERS_DIR),
                       "state_dir": str(tmp_path), "data_dir": str(tmp_path)}, default_limits=Limits())
    registry = ToolRegistry(tools, default_limits=Limits(), default_profile="default",
                            profile_dirs=(SHIPPED_PROFILES_DIR,), compile_profile=lambda path: b"bpf",
                            host_env={})
    registry.compile_all()
    executor = FakeExecutor()
    admission = Admission(max_concurrent_executions=1)
    socket_path = tmp_path / "s.sock"
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Event | None = None
    logs: list[AuditLog] = []

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        server = grpc.aio.server()
        facts = DaemonFacts(instance="unit", cgroup_mode="hybrid")
        config = Config(daemon=DaemonConfig(max_request_bytes=MAX_REQUEST_BYTES))
        runtime = Runtime(config, registry, Policy(config.policy), Authenticator.from_config(config.policy))
        audit = AuditLog.open(tmp_path / "audit" / "audit.log", hmac_key=None, rotate_bytes=1 << 20,
                              retention_days=None)
        logs.append(audit)
        service = SandboxService(runtime=lambda: runtime, executor=executor, admission=admission, facts=facts,
                                 trail=AuditTrail(audit), hub=audit.hub, metrics=Metrics())
        add_sandbox_service(service, server)
        server.add_insecure_port(f"unix:{socket_path}")
        await server.start()
        ready.set()
        await stop.wait()
        await server.stop(0.5)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    client = SandboxClient(socket_path)
    try:
        yield Harness(client, executor, admission, loop)
    finally:
        client.close()
        loop.call_soon_threadsafe(stop.set)  # type: ignore[union-attr]
        thread.join(10)
        loop.close()
        for audit in logs:
            audit.close()


def refusal(fn: Any) -> SandboxdError:
    with pytest.raises(SandboxdError) as caught:
        fn()
    return caught.value


def test_execute_streams_events_and_one_result(harness: Harness) -> None:
    events = list(harness.client.execute(tool="python", params={"code": "print(1)"}, stdin=b"in",
                                         limits={"wall_time_ms": 1000}, request_id="r-1", labels={"a": "b"}))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds == ["audit", "started", "audit", "output", "output", "audit", "result"]
    started, result = events[1].started, events[-1].result
    assert started.tool == "python" and started.request_id == "r-1" and started.seccomp_profile == "python"
    assert started.limits.wall_time_ms == 1000 and started.limits.memory_max_bytes == 256 * 1024**2
    assert started.execution_id == result.execution_id == events[0].audit.execution_id
    assert result.status == pb.OK and result.exit_code == 0 and result.usage.stdout_bytes == 5
    assert events[5].audit.outcome == "OK"
    spec = harness.executor.specs[0]
    assert spec.stdin == b'{"code":"print(1)"}\nin'
    assert dict(spec.labels) == {"a": "b"}


def test_run_collects_an_outcome(harness: Harness) -> None:
    outcome = harness.client.run_command(["/bin/echo"])
    assert (outcome.stdout, outcome.stderr, outcome.status_name) == (b"hello", b"warn", "OK")
    assert outcome.started is not None and outcome.started.tool == ""
    assert [audit.event for audit in outcome.audit] == ["decision", "execution.started", "execution.finished"]


@pytest.mark.parametrize(
    ("kwargs", "code", "reason", "words"),
    [
        ({"tool": "nope"}, grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOOL", "no tool named 'nope'"),
        ({"tool": "python", "params": {"code": 7}}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMS", "$.code"),
        ({"tool": "python", "params": "{"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMS", "not valid JSON"),
        ({"tool": "python", "params": {"code": "1"}, "limits": {"memory_max_bytes": 2**40}},
         grpc.StatusCode.PERMISSION_DENIED, "LIMIT_ABOVE_CEILING", "ceiling"),
        ({"tool": "python", "params": {"code": "x" * MAX_REQUEST_BYTES}},
         grpc.StatusCode.INVALID_ARGUMENT, "PAYLOAD_TOO_LARGE", "max_request_bytes"),
        ({"command": []}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", "must name a program"),
        ({"command": ["/bin/true"], "profile": "absent"}, grpc.StatusCode.NOT_FOUND, "UNKNOWN_PROFILE", "absent"),
    ],
)
def test_refusals(harness: Harness, kwargs: dict[str, Any], code: grpc.StatusCode, reason: str, words: str) -> None:
    error = refusal(lambda: list(harness.client.execute(**kwargs)))
    assert (error.code, error.reason) == (code, reason)
    assert words in error.message
    assert not harness.executor.specs  # nothing ran
    assert len(harness.admission) == 0


def test_concurrency_bound_and_cancel(harness: Harness) -> None:
    stream = harness.client.execute(command=["/wait"], request_id="slow")
    assert next(stream).WhichOneof("event") == "audit"
    started = next(stream).started
    error = refusal(lambda: list(harness.client.execute(command=["/bin/true"])))
    assert (error.code, error.reason, error.temporary) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                            "TOO_MANY_EXECUTIONS", True)
    [running] = harness.client.list_executions()
    assert (running.execution_id, running.request_id, running.pid) == (started.execution_id, "slow", 4242)
    assert running.principal == "local-admin"  # the Unix socket's principal in the embedded policy
    assert harness.client.info().running_executions == 1
    harness.client.cancel(started.execution_id)
    rest = list(stream)
    assert rest[-1].result.status == pb.CANCELLED
    assert sum(1 for event in rest if event.WhichOneof("event") == "result") == 1
    assert harness.client.run_command(["/bin/true"]).status_name == "OK"  # the slot is free again


def test_cancel_unknown_execution(harness: Harness) -> None:
    error = refusal(lambda: harness.client.cancel("0123456789abcdef"))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "EXECUTION_NOT_FOUND")


def test_draining_refuses_new_work(harness: Harness) -> None:
    harness.call_soon(harness.admission.start_draining)
    time.sleep(0.1)
    error = refusal(lambda: list(harness.client.execute(tool="python", params={"code": "1"})))
    assert (error.code, error.reason, error.temporary) == (grpc.StatusCode.UNAVAILABLE, "DRAINING", True)
    assert harness.client.info().draining


def test_engine_failure_still_ends_with_a_result(harness: Harness) -> None:
    outcome = harness.client.run_command(["/explode"])
    assert outcome.status_name == "SETUP_FAILED"
    assert "the spawner died" in outcome.result.message
    assert len(harness.admission) == 0


def test_caller_leaving_closes_the_execution(harness: Harness) -> None:
    stream = harness.client.execute(command=["/wait"])
    next(stream)
    eid = next(stream).started.execution_id
    stream.close()  # the caller goes away before the Result
    deadline = time.monotonic() + 5
    while eid not in harness.executor.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert eid in harness.executor.closed
    while len(harness.admission) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(harness.admission) == 0


def test_list_tools_and_info(harness: Harness) -> None:
    tools = {tool.name: tool for tool in harness.client.list_tools()}
    assert sorted(tools) == ["file_processor", "http_fetch", "python", "sqlite_query"]
    assert '"required": ["code"]' in tools["python"].params_schema_json
    assert tools["python"].limits.memory_max_bytes == 256 * 1024**2
    assert [bind.target for bind in tools["sqlite_query"].binds] == ["/opt/sandboxd/handlers", "/data/sqlite"]
    info = harness.client.info()
    assert (info.cgroup_backend, info.cgroup_base, info.instance) == ("fake", "/fake/cgroup", "unit")
    assert info.max_concurrent_executions == 1 and info.max_request_bytes == MAX_REQUEST_BYTES
    assert info.default_limits.wall_time_ms == Limits().wall_time_ms


# -- ExecuteInteractive ---------------------------------------------------------------------------------------


def test_interactive_feeds_stdin_as_it_comes_and_forwards_signals(harness: Harness) -> None:
    with harness.client.execute_interactive(command=["/cat"], stdin=b"first") as call:
        events = call.events()
        outputs = []
        for event in events:
            if event.WhichOneof("event") == "output":
                outputs.append(event.output.data)
                if event.output.data == b"first":
                    call.signal("INTERRUPT")
                    call.send(b"second")
                elif event.output.data == b"second":
                    call.close_stdin()
            if event.WhichOneof("event") == "result":
                result = event.result
    assert outputs == [b"hello", b"warn", b"first", b"second"]
    assert result.status == pb.OK
    assert harness.executor.signals == [(result.execution_id, 2)]  # SIGINT
    assert harness.executor.specs[-1].stdin == b"first"


def raw_interactive(harness: Harness, inputs: list[bytes]) -> grpc.RpcError:
    """ExecuteInteractive with ``inputs`` as they are on the wire (undecodable ones too): the error it ends with."""
    with grpc.insecure_channel(harness.client.target) as channel:
        call = channel.stream_stream("/sandboxd.v1.Sandbox/ExecuteInteractive", request_serializer=bytes,
                                     response_deserializer=pb.ExecuteEvent.FromString)
        with pytest.raises(grpc.RpcError) as caught:
            list(call(iter(inputs)))
    return caught.value


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ([pb.ExecuteInput(stdin=b"x").SerializeToString()], "must be its request, not stdin"),
        ([], "must be its request, not nothing"),
        ([pb.ExecuteInput(signal=pb.INTERRUPT).SerializeToString()], "must be its request, not signal"),
        ([b"\x0a\x05\x12"], "could not be decoded"),
    ],
)
def test_interactive_first_input_must_be_the_request(harness: Harness, inputs: list[bytes], words: str) -> None:
    error = raw_interactive(harness, inputs)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in (error.details() or "")
    assert not harness.executor.specs


@pytest.mark.parametrize(
    ("bad", "reason", "words"),
    [
        (pb.ExecuteInput(request=pb.ExecuteRequest(command=pb.Command(argv=["/cat"]))), "INVALID_REQUEST",
         "the request comes once"),
        (pb.ExecuteInput(stdin=b"x" * (MAX_REQUEST_BYTES + 1)), "PAYLOAD_TOO_LARGE", "max_request_bytes"),
        (pb.ExecuteInput(signal=99), "INVALID_REQUEST", "unknown signal 99"),  # type: ignore[arg-type]
        (pb.ExecuteInput(), "INVALID_REQUEST", "nothing in it"),
    ],
)
def test_an_invalid_input_mid_stream_ends_the_execution_then_the_call(
    harness: Harness, bad: pb.ExecuteInput, reason: str, words: str
) -> None:
    request = pb.ExecuteInput(request=pb.ExecuteRequest(command=pb.Command(argv=["/cat"])))
    seen: list[pb.ExecuteEvent] = []
    with grpc.insecure_channel(harness.client.target) as channel:
        call = pb_grpc.SandboxStub(channel).ExecuteInteractive(iter([request, bad]))  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as caught:
            for event in call:
                seen.append(event)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in (caught.value.details() or "")
    assert reason_from_metadata(caught.value.trailing_metadata()) == reason
    assert seen[-1].result.status == pb.CANCELLED  # its Result came first, as ever
    assert [e.audit.event for e in seen if e.WhichOneof("event") == "audit"][-2:] == [
        "execution.cancelled", "execution.finished"]
    wait_released(harness)


def wait_released(harness: Harness) -> None:
    """The slot is released once the call has ended, which the caller may learn of a moment before."""
    deadline = time.monotonic() + 5
    while len(harness.admission) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(harness.admission) == 0


def test_an_undecodable_input_mid_stream_is_invalid_argument(harness: Harness) -> None:
    request = pb.ExecuteInput(request=pb.ExecuteRequest(command=pb.Command(argv=["/cat"]))).SerializeToString()
    error = raw_interactive(harness, [request, b"\x0a\x05\x12"])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "an input could not be decoded" in (error.details() or "")
    wait_released(harness)


async def _recorded(result: Result, record: Callable[[Result], Awaitable[None]] | None) -> Result:
    if record is not None:
        await record(result)
    return result
