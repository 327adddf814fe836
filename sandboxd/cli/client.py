"""A small typed client of the sandboxd API, for sandboxctl and for any program that calls tools::

    from sandboxd.cli.client import SandboxClient

    with SandboxClient() as client:                      # $SANDBOXD_SOCKET or /run/sandboxd/sandboxd.sock
        outcome = client.run_tool("python", {"code": "print(6 * 7)"})
        print(outcome.result.status_name, outcome.stdout)  # OK b'42\\n'
        for event in client.execute(tool="python", params={"code": "print(1)"}):
            ...                                          # ExecuteEvent messages as they come

Refusals raise :class:`SandboxdError` carrying the gRPC code and the machine ``reason``
(``UNKNOWN_TOOL``, ``INVALID_PARAMS``, ``TOO_MANY_EXECUTIONS``, ``DRAINING`` …). Messages are the
generated protobuf classes, re-exported here (``pb``) so callers need not reach into ``sandboxd.api._proto``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Mapping, Sequence
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

__all__ = ["DEFAULT_SOCKET", "SOCKET_ENV", "TOKEN_ENV", "Outcome", "SandboxClient", "SandboxdError", "TlsFiles", "pb"]

DEFAULT_SOCKET = Path("/run/sandboxd/sandboxd.sock")
SOCKET_ENV = "SANDBOXD_SOCKET"
TOKEN_ENV = "SANDBOXD_TOKEN"
_UNARY_TIMEOUT_S = 30.0


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


def limits_message(limits: Mapping[str, int] | pb.Limits | None) -> pb.Limits | None:
    if limits is None or isinstance(limits, pb.Limits):
        return limits
    return pb.Limits(**dict(limits))


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
    ) -> Generator[pb.ExecuteEvent, None, None]:
        """Start one execution and yield its events as they arrive; the last one is the Result.

        Closing the iterator early (``break``, garbage collection) cancels the call, which kills the
        execution. ``allow_hosts``: the HOST[:PORT] entries a raw command may connect to through the daemon's
        egress proxy (none: no network).
        """
        if (tool is None) == (command is None):
            raise ValueError("name exactly one of tool= or command=")
        request = pb.ExecuteRequest(
            stdin=stdin, limits=limits_message(limits), request_id=request_id, labels=dict(labels or {})
        )
        if tool is not None:
            request.tool = tool
            request.params_json = params if isinstance(params, str) else json.dumps(dict(params or {}))
        else:
            request.command.argv.extend(command or ())
            request.command.profile = profile
            request.command.allow_hosts.extend(allow_hosts)
        call = self._stub.Execute(request, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as error:
            raise SandboxdError.from_rpc_error(error) from None
        finally:
            call.cancel()  # a no-op once the stream is complete

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
