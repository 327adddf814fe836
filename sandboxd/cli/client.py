"""A small typed client of the sandboxd API, for sandboxctl and for any program that calls tools::

    from sandboxd.cli.client import SandboxClient

    with SandboxClient() as client:                      # $SANDBOXD_SOCKET or /run/sandboxd/sandboxd.sock
        outcome = client.run_tool("python", {"code": "print(6 * 7)"})
        print(outcome.result.status_name, outcome.stdout)  # OK b'42\\n'
        for event in client.execute(tool="python", params={"code": "print(1)"}):
            ...                                          # ExecuteEvent messages as they come
        with client.execute_interactive(command=["/bin/cat"]) as call:   # stdin and signals as it runs
            call.send(b"hello\n"); call.close_stdin()   # or call.signal("INTERRUPT")
            for event in call.events():
                ...

Refusals raise :class:`SandboxdError` carrying the gRPC code and the machine ``reason``
(``UNKNOWN_TOOL``, ``INVALID_PARAMS``, ``TOO_MANY_EXECUTIONS``, ``DRAINING`` …). Messages are the
generated protobuf classes, re-exported here (``pb``) so callers need not reach into ``sandboxd.api._proto``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import deque
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2_grpc as pb_grpc
from sandboxd.api.status import TEMPORARY_METADATA_KEY, reason_from_metadata
from sandboxd.base.errors import ConfigError
from sandboxd.policy.tls import channel_credentials

__all__ = ["DEFAULT_SOCKET", "SOCKET_ENV", "TOKEN_ENV", "Interactive", "Outcome", "SandboxClient", "SandboxdError",
           "TlsFiles", "pb"]

DEFAULT_SOCKET = Path("/run/sandboxd/sandboxd.sock")
SOCKET_ENV = "SANDBOXD_SOCKET"
TOKEN_ENV = "SANDBOXD_TOKEN"
_UNARY_TIMEOUT_S = 30.0
FILE_CHUNK_BYTES = 64 * 1024  # one PutFile message's data
STDIN_CHUNK_BYTES = 64 * 1024  # what one stdin input of an interactive call carries at most
_STDIN_INPUTS_QUEUED = 16  # stdin inputs waiting for the channel: Interactive.send blocks beyond
_SIGNAL_NAMES = {"SIGINT": "INTERRUPT", "SIGTERM": "TERMINATE", "SIGHUP": "HANGUP", "SIGKILL": "KILL",
                 "SIGQUIT": "QUIT"}


class SandboxdError(Exception):
    """The daemon refused a call, or could not be reached (``code`` UNAVAILABLE, ``reason`` empty)."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str, *, temporary: bool = False) -> None:
        super().__init__(f"{code.name}{f' ({reason})' if reason else ''}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.temporary = temporary

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> SandboxdError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        temporary = any(key == TEMPORARY_METADATA_KEY and value == "true" for key, value in metadata or ())
        return cls(code, reason_from_metadata(metadata), details or "", temporary=temporary)


@dataclass
class Outcome:
    """Everything one execution sent, collected."""

    started: pb.Started | None = None
    result: pb.Result = field(default_factory=pb.Result)
    stdout: bytes = b""
    stderr: bytes = b""
    audit: list[pb.AuditEvent] = field(default_factory=list)

    @property
    def status_name(self) -> str:
        return pb.Status.Name(self.result.status)


def socket_path_from_env(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)


def execute_request(
    *,
    tool: str | None = None,
    command: Sequence[str] | None = None,
    profile: str = "",
    allow_hosts: Sequence[str] = (),
    params: Mapping[str, Any] | str | None = None,
    stdin: bytes = b"",
    limits: Mapping[str, int] | pb.Limits | None = None,
    request_id: str = "",
    labels: Mapping[str, str] | None = None,
    session_id: str = "",
) -> pb.ExecuteRequest:
    """The ``ExecuteRequest`` of :meth:`SandboxClient.execute`'s arguments (``session_id``: run in that session)."""
    if (tool is None) == (command is None):
        raise ValueError("name exactly one of tool= or command=")
    request = pb.ExecuteRequest(
        stdin=stdin, limits=limits_message(limits), request_id=request_id, labels=dict(labels or {}),
        session_id=session_id,
    )
    if tool is not None:
        request.tool = tool
        request.params_json = params if isinstance(params, str) else json.dumps(dict(params or {}))
    else:
        request.command.argv.extend(command or ())
        request.command.profile = profile
        request.command.allow_hosts.extend(allow_hosts)
    return request


def limits_message(limits: Mapping[str, int] | pb.Limits | None) -> pb.Limits | None:
    if limits is None or isinstance(limits, pb.Limits):
        return limits
    return pb.Limits(**dict(limits))


def signal_value(which: str | int) -> int:
    """A :class:`pb.Signal` value from its name (``"INTERRUPT"``), a signal's (``"SIGINT"``, ``"INT"``,
    :data:`signal.SIGINT`) or the value itself (``pb.INTERRUPT``)."""
    if isinstance(which, signal.Signals):  # before int: signal.SIGINT is 2, and 2 is pb.TERMINATE
        which = which.name
    if isinstance(which, int):
        if which == pb.SIGNAL_UNSPECIFIED or which not in pb.Signal.values():
            raise ValueError(f"not a sandboxd signal: {which}")
        return which
    name = which.upper()
    name = _SIGNAL_NAMES.get(name, _SIGNAL_NAMES.get(f"SIG{name}", name))
    try:
        value = int(pb.Signal.Value(name))
    except ValueError:
        value = pb.SIGNAL_UNSPECIFIED
    if value == pb.SIGNAL_UNSPECIFIED:
        raise ValueError(f"unknown signal {which!r}: INTERRUPT, TERMINATE, HANGUP, KILL or QUIT")
    return value


class Interactive:
    """One ``ExecuteInteractive`` call: :meth:`send` stdin, :meth:`close_stdin`, :meth:`signal` the handler,
    and read :meth:`events` (the Result last) — from different threads if need be.

    The inputs go out in order through the call's request iterator, fed from a queue: :meth:`send` blocks
    while the daemon is not taking stdin (the handler is not reading it); :meth:`signal` never blocks and goes
    ahead of stdin still queued here. Leaving the ``with`` block (or :meth:`cancel`) cancels the call, which
    kills the execution; once the call has ended, what is sent is dropped.
    """

    def __init__(self, start: Any, request: pb.ExecuteRequest, metadata: Sequence[tuple[str, str]]) -> None:
        # Reentrant: signal() may be called from a signal handler, which runs in the main thread between
        # two of its bytecodes — possibly while that thread holds the lock.
        self._lock = threading.Condition(threading.RLock())
        self._stdin: deque[pb.ExecuteInput] = deque()
        self._signals: deque[pb.ExecuteInput] = deque()
        self._stdin_closed = False
        self._done = False
        self._call = start(self._inputs(pb.ExecuteInput(request=request)), metadata=metadata)

    def _inputs(self, first: pb.ExecuteInput) -> Iterator[pb.ExecuteInput]:
        """The call's request iterator, run by grpc in a thread of its own; its end half-closes the call."""
        yield first
        while True:
            with self._lock:
                while not (self._signals or self._stdin or self._done):
                    self._lock.wait()
                if self._done:
                    return
                item = (self._signals or self._stdin).popleft()
                self._lock.notify_all()
            yield item

    def send(self, data: bytes) -> None:
        """More of the handler's stdin, in inputs of at most ``STDIN_CHUNK_BYTES``."""
        for start in range(0, len(data), STDIN_CHUNK_BYTES):
            chunk = data[start:start + STDIN_CHUNK_BYTES]
            with self._lock:
                if self._stdin_closed:
                    raise ValueError("stdin is closed")
                while len(self._stdin) >= _STDIN_INPUTS_QUEUED and not self._done:
                    self._lock.wait()
                if self._done:
                    return
                self._stdin.append(pb.ExecuteInput(stdin=chunk))
                self._lock.notify_all()

    def close_stdin(self) -> None:
        """EOF for the handler, once what was sent before has reached it. Idempotent."""
        with self._lock:
            if not self._stdin_closed:
                self._stdin_closed = True
                self._stdin.append(pb.ExecuteInput(stdin_eof=True))
                self._lock.notify_all()

    def signal(self, which: str | int) -> None:
        """Send the handler a signal (see :func:`signal_value`); one that arrives before it has started or
        after it has ended is ignored by the daemon."""
        value = signal_value(which)
        with self._lock:
            if not self._done:
                self._signals.append(pb.ExecuteInput(signal=value))  # type: ignore[arg-type]
                self._lock.notify_all()

    def events(self) -> Generator[pb.ExecuteEvent, None, None]:
        """The events as they arrive, as :meth:`SandboxClient.execute` yields them; the Result last. Closing
        the iterator early (``break``, garbage collection) cancels the call, as there."""
        try:
            yield from self._call
        except grpc.RpcError as error:
            raise SandboxdError.from_rpc_error(error) from None
        finally:
            self.cancel()  # a no-op once the stream is complete

    def cancel(self) -> None:
        self._call.cancel()
        with self._lock:
            self._done = True
            self._lock.notify_all()

    def __enter__(self) -> Interactive:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cancel()


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS connection: the CA that signed the daemon's certificate, and (for mTLS) ours."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        try:
            return channel_credentials(self.ca_file, self.cert_file, self.key_file)
        except ConfigError as exc:
            raise SandboxdError(grpc.StatusCode.INVALID_ARGUMENT, "", exc.message) from None


class SandboxClient:
    """One channel to one daemon: a Unix socket path, or ``target`` (any gRPC target, e.g. ``host:port``).

    ``token`` (default ``$SANDBOXD_TOKEN``) is sent as ``authorization: Bearer …`` on every call; ``tls``
    makes the channel TLS (mutual when it carries a certificate). Without either, a caller on the Unix
    socket is whoever the daemon maps the socket to (``local-admin`` by default).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        target: str | None = None,
        token: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.target = target or f"unix:{socket_path_from_env(socket_path)}"
        token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        if tls is not None:
            self._channel = grpc.secure_channel(self.target, tls.credentials())
        else:
            self._channel = grpc.insecure_channel(self.target)
        self._stub = pb_grpc.SandboxStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- executions ------------------------------------------------------------------------------------

    def execute(
        self,
        *,
        tool: str | None = None,
        command: Sequence[str] | None = None,
        profile: str = "",
        allow_hosts: Sequence[str] = (),
        params: Mapping[str, Any] | str | None = None,
        stdin: bytes = b"",
        limits: Mapping[str, int] | pb.Limits | None = None,
        request_id: str = "",
        labels: Mapping[str, str] | None = None,
        session_id: str = "",
    ) -> Generator[pb.ExecuteEvent, None, None]:
        """Start one execution and yield its events as they arrive; the last one is the Result.

        Closing the iterator early (``break``, garbage collection) cancels the call, which kills the
        execution. ``allow_hosts``: the HOST[:PORT] entries a raw command may connect to through the daemon's
        egress proxy (none: no network).
        """
        request = execute_request(tool=tool, command=command, profile=profile, allow_hosts=allow_hosts,
                                  params=params, stdin=stdin, limits=limits, request_id=request_id, labels=labels,
                                  session_id=session_id)
        call = self._stub.Execute(request, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as error:
            raise SandboxdError.from_rpc_error(error) from None
        finally:
            call.cancel()  # a no-op once the stream is complete

    def execute_interactive(self, **kwargs: Any) -> Interactive:
        """Start one execution as :meth:`execute` does (the same arguments), then feed it stdin and signals as
        it runs: see :class:`Interactive`. Its ``stdin=`` goes first, then what is sent."""
        return Interactive(self._stub.ExecuteInteractive, execute_request(**kwargs), self._metadata)

    def run(self, **kwargs: Any) -> Outcome:
        """:meth:`execute` collected into one :class:`Outcome`."""
        outcome = Outcome()
        stdout, stderr = bytearray(), bytearray()
        for event in self.execute(**kwargs):
            kind = event.WhichOneof("event")
            if kind == "started":
                outcome.started = event.started
            elif kind == "output":
                (stdout if event.output.stream == pb.STDOUT else stderr).extend(event.output.data)
            elif kind == "audit":
                outcome.audit.append(event.audit)
            elif kind == "result":
                outcome.result = event.result
        outcome.stdout, outcome.stderr = bytes(stdout), bytes(stderr)
        return outcome

    def run_tool(self, tool: str, params: Mapping[str, Any] | str | None = None, **kwargs: Any) -> Outcome:
        return self.run(tool=tool, params=params, **kwargs)

    def run_command(self, argv: Sequence[str], **kwargs: Any) -> Outcome:
        return self.run(command=argv, **kwargs)

    # -- the unary calls -------------------------------------------------------------------------------

    def _unary(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=_UNARY_TIMEOUT_S, metadata=self._metadata)
        except grpc.RpcError as error:
            raise SandboxdError.from_rpc_error(error) from None

    def cancel(self, execution_id: str) -> None:
        self._unary(self._stub.Cancel, pb.CancelRequest(execution_id=execution_id))

    def list_executions(self) -> list[pb.RunningExecution]:
        return list(self._unary(self._stub.ListExecutions, pb.ListExecutionsRequest()).executions)

    def list_tools(self) -> list[pb.Tool]:
        return list(self._unary(self._stub.ListTools, pb.ListToolsRequest()).tools)

    def call(self, name: str, request: Any, *, timeout_s: float | None = _UNARY_TIMEOUT_S) -> Any:
        """A unary or client-streaming RPC by name (``request``: a message, or an iterator of them)."""
        try:
            return getattr(self._stub, name)(request, timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            raise SandboxdError.from_rpc_error(error) from None

    def stream(self, name: str, request: Any) -> Generator[Any, None, None]:
        """A server-streaming RPC by name: its messages as they come."""
        call = getattr(self._stub, name)(request, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as error:
            raise SandboxdError.from_rpc_error(error) from None
        finally:
            call.cancel()

    def info(self) -> pb.GetInfoResponse:
        response: pb.GetInfoResponse = self._unary(self._stub.GetInfo, pb.GetInfoRequest())
        return response

    def subscribe_audit(
        self,
        *,
        principals: Sequence[str] = (),
        tools: Sequence[str] = (),
        events: Sequence[str] = (),
        since: float | None = None,
        last: int = 0,
        follow: bool = False,
    ) -> Generator[pb.AuditEvent, None, None]:
        """Stored audit records (``since`` a UNIX time, or the ``last`` N), then with ``follow`` new ones."""
        request = pb.SubscribeAuditRequest(
            principals=list(principals), tools=list(tools), events=list(events), last=last, follow=follow
        )
        if since is not None:
            request.since.FromNanoseconds(int(since * 1e9))
        call = self._stub.SubscribeAudit(request, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as error:
            raise SandboxdError.from_rpc_error(error) from None
        finally:
            call.cancel()

    def health(self, service: str = "") -> str:
        """``SERVING``, ``NOT_SERVING`` … of ``service`` (``""``: the server as a whole)."""
        response = self._unary(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
