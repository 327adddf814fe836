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

A fleet of daemons is one client too, spreading its calls with gRPC's ``round_robin``::

    SandboxClient(addresses=["10.0.0.5:7070", "10.0.0.6:7070"], tls=TlsFiles(ca), token=...)
    SandboxClient(target="dns:///sandboxd.sandboxd.svc.cluster.local:7070", tls=TlsFiles(ca), token=...)

There a call a daemon refused before it started, saying the refusal is temporary (DRAINING,
TOO_MANY_EXECUTIONS …), is retried on another daemon with backoff (see :mod:`sandboxd.cli.retry`); a call that
started never is. A session's id names its daemon (:mod:`sandboxd.api.session_ids`), and every call of the
session goes there. :meth:`SandboxClient.daemons` gives a client per daemon, for views of the whole fleet.

Refusals raise :class:`SandboxdError` carrying the gRPC code and the machine ``reason``
(``UNKNOWN_TOOL``, ``INVALID_PARAMS``, ``TOO_MANY_EXECUTIONS``, ``DRAINING`` …). Messages are the
generated protobuf classes, re-exported here (``pb``) so callers need not reach into ``sandboxd.api._proto``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2_grpc as pb_grpc
from sandboxd.api.session_ids import daemon_of
from sandboxd.base.errors import ConfigError
from sandboxd.cli.errors import SandboxdError
from sandboxd.cli.fleet import Fleet, NoSuchDaemon
from sandboxd.cli.framed import FramedChannel
from sandboxd.cli.retry import DEFAULT_RETRY, NO_RETRY, RetryPolicy
from sandboxd.cli.targets import DEFAULT_SOCKET, SOCKET_ENV, Endpoint, parse_targets, socket_path_from_env
from sandboxd.policy.tls import channel_credentials

__all__ = ["DEFAULT_SOCKET", "NO_RETRY", "SOCKET_ENV", "TOKEN_ENV", "Interactive", "Outcome", "RetryPolicy",
           "SandboxClient", "SandboxdError", "TlsFiles", "pb", "socket_path_from_env"]

log = logging.getLogger("sandboxd.client")
T = TypeVar("T")

TOKEN_ENV = "SANDBOXD_TOKEN"
_UNARY_TIMEOUT_S = 30.0
_PROBE_TIMEOUT_S = 5.0  # asking a fleet's member its instance name
FILE_CHUNK_BYTES = 64 * 1024  # one PutFile message's data
STDIN_CHUNK_BYTES = 64 * 1024  # what one stdin input of an interactive call carries at most
_STDIN_INPUTS_QUEUED = 16  # stdin inputs waiting for the channel: Interactive.send blocks beyond
_SIGNAL_NAMES = {"SIGINT": "INTERRUPT", "SIGTERM": "TERMINATE", "SIGHUP": "HANGUP", "SIGKILL": "KILL",
                 "SIGQUIT": "QUIT"}


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
    """One channel to one daemon — a Unix socket path, or ``target`` (any gRPC target, e.g. ``host:port``) —
    or to a fleet: several ``addresses``, or a ``dns:///NAME:PORT`` target (see :mod:`sandboxd.cli.targets`).

    ``token`` (default ``$SANDBOXD_TOKEN``) is sent as ``authorization: Bearer …`` on every call; ``tls``
    makes the channel TLS (mutual when it carries a certificate); ``tls_server_name``: the name a fleet's
    certificates carry, when it is not the addresses' one host name (or the DNS name). Without token or TLS, a
    caller on the Unix socket is whoever the daemon maps the socket to (``local-admin`` by default).
    ``retry``: how a fleet retries a call refused before it started (a single daemon has no other to try).
    ``framed_socket``: the daemon's ``[daemon] framed_socket``, where :meth:`execute` (and what is built on it)
    goes instead of gRPC — the same messages without HTTP/2, for a caller on the daemon's host; the other
    calls stay on gRPC. Only beside a Unix socket.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        target: str | None = None,
        addresses: Sequence[str] = (),
        token: str | None = None,
        tls: TlsFiles | None = None,
        tls_server_name: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        framed_socket: str | os.PathLike[str] | None = None,
    ) -> None:
        try:
            targets = parse_targets(socket_path=socket_path, target=target, addresses=addresses,
                                    tls_server_name=tls_server_name)
        except ValueError as exc:
            raise SandboxdError(grpc.StatusCode.INVALID_ARGUMENT, "", str(exc)) from None
        if tls is not None and targets.addresses and targets.tls_server_name is None:
            raise SandboxdError(grpc.StatusCode.INVALID_ARGUMENT, "", (
                f"over TLS the daemons at {', '.join(addresses)} are checked against one name, and their host "
                "names differ: give the name their certificates carry (tls_server_name=, --tls-server-name)"))
        self.target = targets.channel_target
        self._targets = targets
        self._token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        self._tls = tls
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {self._token}"),) if self._token else ())
        options = targets.channel_options()
        if tls is not None:
            self._channel = grpc.secure_channel(self.target, tls.credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=options)
        self._stub = pb_grpc.SandboxStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)
        if framed_socket is not None and not self.target.startswith("unix:"):
            raise SandboxdError(grpc.StatusCode.INVALID_ARGUMENT, "", (
                "a framed socket is the local daemon's: give its Unix socket too, not an address"))
        self._framed = FramedChannel(framed_socket) if framed_socket is not None else None
        self._retry = retry if targets.fleet else NO_RETRY
        self._fleet: Fleet[SandboxClient] | None = Fleet(targets, self._member) if targets.fleet else None
        self._instance: str | None = None
        self._connectivity: grpc.ChannelConnectivity | None = None  # watched for a fleet's members only

    def _member(self, endpoint: Endpoint) -> SandboxClient:
        """A client of one daemon of this fleet, with our token and TLS, kept connected and watched: a retry
        goes only to a daemon whose channel is ready."""
        member = SandboxClient(target=endpoint.target, token=self._token, tls=self._tls,
                               tls_server_name=self._targets.tls_server_name, retry=NO_RETRY)
        member._connectivity = grpc.ChannelConnectivity.IDLE
        member._channel.subscribe(member._connectivity_changed, try_to_connect=True)
        return member

    def _connectivity_changed(self, state: grpc.ChannelConnectivity) -> None:
        self._connectivity = state  # (called in a grpc thread)

    def is_ready(self) -> bool:
        """Whether the channel is connected (always true of a channel not watched: any but a fleet's members)."""
        return self._connectivity is None or self._connectivity == grpc.ChannelConnectivity.READY

    @property
    def framed_socket(self) -> str | None:
        """Where :meth:`execute` goes instead of gRPC (``framed_socket=``), or None."""
        return None if self._framed is None else self._framed.path

    def close(self) -> None:
        if self._framed is not None:
            self._framed.close()
        if self._fleet is not None:
            self._fleet.close()
        if self._connectivity is not None:
            self._channel.unsubscribe(self._connectivity_changed)
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
        egress proxy (none: no network). In a fleet, a call in a session goes to the session's daemon (and is
        not retried elsewhere); any other call to the daemon round_robin picks, and is retried on another when
        refused before it started (see :mod:`sandboxd.cli.retry`).
        """
        request = execute_request(tool=tool, command=command, profile=profile, allow_hosts=allow_hosts,
                                  params=params, stdin=stdin, limits=limits, request_id=request_id, labels=labels,
                                  session_id=session_id)
        if request.session_id:
            yield from self.for_session(request.session_id)._execute_once(request)
            return
        yield from self._spread(lambda daemon: daemon._execute_once(request))

    def _execute_once(self, request: pb.ExecuteRequest) -> Generator[pb.ExecuteEvent, None, None]:
        if self._framed is not None:
            yield from self._framed.execute(request, self._metadata)
            return
        call = self._stub.Execute(request, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as error:
            raise SandboxdError.from_rpc_error(error) from None
        finally:
            call.cancel()  # a no-op once the stream is complete

    def execute_interactive(self, **kwargs: Any) -> Interactive:
        """Start one execution as :meth:`execute` does (the same arguments), then feed it stdin and signals as
        it runs: see :class:`Interactive`. Its ``stdin=`` goes first, then what is sent. In a fleet it goes to
        the session's daemon, or the one round_robin picks; it is never retried (its stdin is the caller's)."""
        request = execute_request(**kwargs)
        daemon = self.for_session(request.session_id) if request.session_id else self
        return Interactive(daemon._stub.ExecuteInteractive, request, self._metadata)

    # -- a fleet ---------------------------------------------------------------------------------------

    @property
    def is_fleet(self) -> bool:
        """Whether this client spreads its calls over several daemons (several addresses, or DNS)."""
        return self._fleet is not None

    def daemons(self) -> list[SandboxClient]:
        """A client per daemon: each of a fleet (behind DNS, the name's addresses now), or this one."""
        if self._fleet is None:
            return [self]
        try:
            return self._fleet.members(refresh=True)
        except NoSuchDaemon as exc:
            raise SandboxdError(grpc.StatusCode.UNAVAILABLE, "", str(exc)) from None

    def instance(self) -> str:
        """The daemon's instance name (``[daemon] instance``), asked once. A fleet's: whichever daemon
        round_robin picks — ask :meth:`daemons` each instead."""
        if self._instance is not None:
            return self._instance
        response = self._unary(lambda stub: stub.GetInfo, pb.GetInfoRequest(), timeout_s=_PROBE_TIMEOUT_S)
        if self._fleet is None:
            self._instance = str(response.instance)
        return str(response.instance)

    def for_session(self, session_id: str) -> SandboxClient:
        """The client of the daemon that keeps ``session_id``: in a fleet, the daemon its id names (see
        :mod:`sandboxd.api.session_ids`); otherwise this one."""
        if self._fleet is None:
            return self
        instance = daemon_of(session_id)
        if instance is None:
            raise SandboxdError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST",
                                f"the session id {session_id[:80]!r} names no daemon (INSTANCE.HEX): a fleet "
                                "cannot tell which of its daemons keeps it")
        try:
            return self._fleet.find(instance)
        except NoSuchDaemon as exc:
            raise SandboxdError(grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND",
                                f"session {session_id}: {exc}") from None

    def _spread(self, attempt: Callable[[SandboxClient], Generator[T, None, None]]) -> Generator[T, None, None]:
        """What ``attempt`` yields on this client's channel (a fleet's: round_robin), or — when a daemon
        refused it before it started, temporarily, and nothing was yielded yet — on another daemon after a
        backoff, as long as the retry policy allows (see :mod:`sandboxd.cli.retry`)."""
        daemon: SandboxClient = self
        refused: set[str] = set()  # the instances that refused this call in this round
        attempts = 0
        while True:
            attempts += 1
            delivered = False
            try:
                with contextlib.closing(attempt(daemon)) as items:
                    for item in items:
                        delivered = True
                        yield item
                return
            except SandboxdError as error:
                # A daemon a retry was sent to that stopped meanwhile (its channel looked ready a moment
                # before): nothing reached it, so the call goes on to another as if it had refused.
                gone = daemon is not self and error.never_sent
                if delivered or not (error.temporary or gone) or not self._retry.allows(attempts):
                    raise
                failure = error
                if gone:
                    refused.add(_name_of(daemon))
            daemon = self._before_retry(failure, refused, attempts)

    def _before_retry(self, failure: SandboxdError, refused: set[str], attempts: int) -> SandboxClient:
        """Wait, and name the daemon the next attempt goes to: one that has not refused this call, else (all
        have) this client's channel again, in a new round."""
        if failure.instance:
            refused.add(failure.instance)
        other = self._fleet.other_than(refused) if self._fleet is not None else None
        pause_s = self._retry.backoff_s(attempts)
        if other is None:
            refused.clear()
            pause_s = max(pause_s, failure.retry_after_s or 0.0)  # the same daemons again: heed their word
        log.info("%s refused a call (%s: %s); attempt %d in %.3f s on %s", failure.instance or "a daemon",
                 failure.reason, failure.message, attempts + 1, pause_s,
                 other.target if other is not None else "the daemon round_robin picks")
        time.sleep(pause_s)
        return other if other is not None else self

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

    def _unary(self, method: Callable[[Any], Any], request: Any, *,
               timeout_s: float | None = _UNARY_TIMEOUT_S) -> Any:
        """``method(stub)(request)``, a unary call; a fleet retries it on another daemon when refused before it
        started (see :meth:`_spread`)."""

        def attempt(daemon: SandboxClient) -> Generator[Any, None, None]:
            try:
                yield method(daemon._stub)(request, timeout=timeout_s, metadata=self._metadata)
            except grpc.RpcError as error:
                raise SandboxdError.from_rpc_error(error) from None

        with contextlib.closing(self._spread(attempt)) as answers:
            return next(answers)

    def cancel(self, execution_id: str) -> None:
        """Cancel a running execution; a fleet asks its daemons in turn until the one running it takes it."""
        if self._fleet is None:
            self._unary(lambda stub: stub.Cancel, pb.CancelRequest(execution_id=execution_id))
            return
        unreachable = []
        for daemon in self.daemons():
            try:
                daemon.cancel(execution_id)
                return
            except SandboxdError as error:
                if error.reason == "EXECUTION_NOT_FOUND":
                    continue
                if error.code == grpc.StatusCode.UNAVAILABLE and not error.reason:
                    unreachable.append(daemon.target)
                    continue
                raise
        also = f" ({', '.join(unreachable)} did not answer)" if unreachable else ""
        raise SandboxdError(grpc.StatusCode.NOT_FOUND, "EXECUTION_NOT_FOUND",
                            f"no daemon of the fleet runs execution {execution_id[:80]!r}{also}")

    def list_executions(self) -> list[pb.RunningExecution]:
        """The running executions the caller may see; a fleet's, of every daemon (see :meth:`daemons` for
        which runs what)."""
        if self._fleet is not None:
            return [item for daemon in self.daemons() for item in daemon.list_executions()]
        return list(self._unary(lambda stub: stub.ListExecutions, pb.ListExecutionsRequest()).executions)

    def list_tools(self) -> list[pb.Tool]:
        return list(self._unary(lambda stub: stub.ListTools, pb.ListToolsRequest()).tools)

    # -- runtime grants (admin) ------------------------------------------------------------------------

    def grant(self, principal: str, tool: str, *, ttl_ms: int = 0, expires_at: float | None = None,
              params_constraint: Mapping[str, Any] | str | None = None, reason: str = "",
              request_id: str = "") -> pb.RuntimeGrant:
        """Let ``principal`` run ``tool`` (a name or glob) for ``ttl_ms`` or until ``expires_at`` (Unix s),
        only for params ``params_constraint`` (a JSON Schema) admits, when given."""
        request = pb.GrantRequest(principal=principal, tool=tool, ttl_ms=ttl_ms, reason=reason,
                                  request_id=request_id)
        if params_constraint is not None:
            request.params_constraint_json = (params_constraint if isinstance(params_constraint, str)
                                              else json.dumps(dict(params_constraint)))
        if expires_at is not None:
            request.expires_at.FromNanoseconds(int(expires_at * 1e9))
        response: pb.RuntimeGrant = self._unary(lambda stub: stub.Grant, request)
        return response

    def revoke(self, grant_id: str, *, reason: str = "", request_id: str = "") -> pb.RuntimeGrant:
        """End a runtime grant now; the grant as it was."""
        request = pb.RevokeRequest(grant_id=grant_id, reason=reason, request_id=request_id)
        response: pb.RevokeResponse = self._unary(lambda stub: stub.Revoke, request)
        return response.grant

    def list_grants(self, principal: str = "") -> list[pb.RuntimeGrant]:
        """The live runtime grants (an admin sees all, others their own), oldest first."""
        return list(self._unary(lambda stub: stub.ListGrants, pb.ListGrantsRequest(principal=principal)).grants)

    def call(self, name: str, request: Any, *, timeout_s: float | None = _UNARY_TIMEOUT_S) -> Any:
        """A unary or client-streaming RPC by name (``request``: a message, or an iterator of them). A fleet
        retries a message (not an iterator: it is consumed) on another daemon when refused before it started."""
        if isinstance(request, Message):
            return self._unary(lambda stub: getattr(stub, name), request, timeout_s=timeout_s)
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
        response: pb.GetInfoResponse = self._unary(lambda stub: stub.GetInfo, pb.GetInfoRequest())
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
        try:
            response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=_UNARY_TIMEOUT_S,
                                          metadata=self._metadata)
        except grpc.RpcError as error:
            raise SandboxdError.from_rpc_error(error) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def _name_of(member: SandboxClient) -> str:
    """A fleet member's instance name: known already (other_than asked it before choosing it), else ""."""
    try:
        return member.instance()
    except SandboxdError:
        return ""
