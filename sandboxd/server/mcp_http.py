"""The daemon's MCP endpoint over streamable HTTP (``[mcp] listen``, see :mod:`sandboxd.server.mcp_config`):
sandboxd's tools for MCP clients that speak HTTP, each caller a principal with its own grants::

    /.well-known/oauth-protected-resource[PATH]   RFC 9728 metadata naming the JWT issuer (JWTs configured;
                                                  404 otherwise) — no token needed
    PATH (/mcp)   1. Origin: none (no browser), the endpoint's own, or [mcp] allowed_origins — else 403
                  2. the bearer token, identified by the servicer (static token, JWT) — else 401 with
                     WWW-Authenticate; a failure is audited (AUTH_FAILED, rpc "MCP") and rate-limited per
                     address as on gRPC (429 then)
                  3. the MCP SDK's StreamableHTTPSessionManager: sessions, each its creator's (another
                     principal's request for it is 404, as for an unknown one), at most max_sessions (503),
                     ended once idle for session_idle_timeout (the SDK's deadline, no polling)
                     └─▶ mcp_gateway's Server ─▶ InProcessSource ─▶ ListTools / Execute as that principal
    anything else 404

The SDK owns the protocol (sessions, SSE, progress, cancellation); this adds the daemon's gatekeeping around
it. uvicorn serves it in the daemon's own event loop (the servicer is grpc.aio, on that loop), started and
stopped by the daemon: its ``serve()``, which installs SIGINT/SIGTERM handlers over the daemon's own and
ticks a main loop, is never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn
from mcp import types
from mcp.server import ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from sandboxd.api.mcp_gateway import build_server, refusal_text
from sandboxd.api.status import RETRY_AFTER_METADATA_KEY
from sandboxd.base.echo import quote
from sandboxd.base.errors import ConfigError
from sandboxd.policy.tls import TlsConfig
from sandboxd.server.mcp_config import McpConfig, McpListen, normalized_origin
from sandboxd.server.mcp_source import CallAborted, CallContext, InProcessSource, peer_address
from sandboxd.server.runtime import Runtime
from sandboxd.server.service import SandboxService

__all__ = ["McpApp", "McpListener"]

log = logging.getLogger("sandboxd.mcp")

RPC = "MCP"  # the rpc an MCP caller's failed authentication is recorded under
WELL_KNOWN = "/.well-known/oauth-protected-resource"
_STOP_GRACE_S = 5  # at a stop: for the answers under way, then for HTTP connections still open
_METADATA_MAX_AGE_S = 300  # the metadata follows a reload's issuer within this long


def _error(status: int, reason: str, message: str, *, code: int = types.INVALID_REQUEST,
           headers: dict[str, str] | None = None) -> Response:
    """A JSON-RPC error body (no id), as the SDK answers: its clients show the message to the user."""
    body = types.JSONRPCError(jsonrpc="2.0", id=None,
                              error=types.ErrorData(code=code, message=message, data={"reason": reason}))
    return Response(body.model_dump_json(by_alias=True, exclude_unset=True), status_code=status,
                    media_type="application/json", headers=headers)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bearer_token(authorization: Sequence[str]) -> str:
    """The token of the one ``Bearer <token>`` value the servicer accepted."""
    scheme, _, token = authorization[0].strip().partition(" ") if len(authorization) == 1 else ("", "", "")
    return token.strip() if scheme.lower() == "bearer" else ""


class McpApp:
    """The ASGI application: routing, Origin, authentication and the session bound around the SDK's manager."""

    def __init__(self, manager: StreamableHTTPSessionManager, *, service: SandboxService,
                 runtime: Callable[[], Runtime], path: str, base_url: str, own_origins: frozenset[str],
                 max_sessions: int) -> None:
        self._manager = manager
        self._service = service
        self._runtime = runtime  # read per request: a reload's tokens, issuer and origins apply at once
        self._path = path
        self._base_url = base_url  # scheme://host:port, as bound
        self._own_origins = own_origins
        self._max_sessions = max_sessions
        self.closing = False  # set while the daemon stops: new requests are answered 503
        self._answering = 0  # requests being answered (the GET streams aside: they last as long as a session)
        self._quiet = asyncio.Event()
        self._quiet.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no lifespan (the daemon runs the manager), no websockets
            return
        path = scope["path"]
        if path == self._path:
            await self._serve_mcp(scope, receive, send)
            return
        if path in (WELL_KNOWN, WELL_KNOWN + self._path):
            response = self._metadata(Request(scope))
        else:
            response = _error(404, "NOT_FOUND", f"nothing here: the MCP endpoint is {self._path}")
        await response(scope, receive, send)

    def _resource_url(self, mcp: McpConfig) -> str:
        return mcp.resource_url or self._base_url + self._path

    def _jwt_issuer(self, runtime: Runtime) -> str | None:
        auth = runtime.config.policy.auth
        return auth.jwt_issuer if auth.jwt_key_file is not None else None

    def _metadata(self, request: Request) -> Response:
        """RFC 9728: where this resource's tokens come from — only when JWTs are configured."""
        runtime = self._runtime()
        issuer = self._jwt_issuer(runtime)
        if issuer is None:
            return _error(404, "NOT_FOUND", "no OAuth metadata: this sandboxd takes no JWTs (auth.jwt_key_file)")
        if request.method not in ("GET", "HEAD"):
            return _error(405, "METHOD_NOT_ALLOWED", "the metadata is read with GET", headers={"Allow": "GET, HEAD"})
        document = {"resource": self._resource_url(runtime.config.mcp), "authorization_servers": [issuer],
                    "bearer_methods_supported": ["header"], "resource_name": "sandboxd"}
        return JSONResponse(document, headers={"Cache-Control": f"public, max-age={_METADATA_MAX_AGE_S}",
                                               "Access-Control-Allow-Origin": "*"})

    async def _serve_mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        runtime = self._runtime()
        refusal = self._check_origin(request, runtime.config.mcp)
        if refusal is None and self.closing:
            refusal = _error(503, "DRAINING", "sandboxd is stopping", code=types.INTERNAL_ERROR)
        if refusal is None:
            refusal = await self._authenticate(request, runtime)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if MCP_SESSION_ID_HEADER not in request.headers:  # it may open a session: past the bound, say which
            send = _naming_the_session_bound(send, self._max_sessions)
        if request.method == "GET":
            await self._manager.handle_request(scope, receive, send)
            return
        self._answering += 1
        self._quiet.clear()
        try:
            await self._manager.handle_request(scope, receive, send)
        finally:
            self._answering -= 1
            if not self._answering:
                self._quiet.set()

    async def answered(self, timeout_s: float) -> None:
        """Until every request being answered is (at most ``timeout_s``): once the daemon's executions have
        ended, their results are on their way to the clients, and ending the sessions must not cut them off."""
        try:
            await asyncio.wait_for(self._quiet.wait(), timeout_s)
        except TimeoutError:
            log.warning("stopping with %d MCP requests still being answered", self._answering)

    def _check_origin(self, request: Request, mcp: McpConfig) -> Response | None:
        """DNS rebinding protection: a browser's request from a page of another origin is refused."""
        allowed = self._own_origins | set(mcp.allowed_origins)
        if mcp.resource_url:
            allowed |= {normalized_origin(mcp.resource_url)}
        for origin in request.headers.getlist("origin"):
            try:
                if normalized_origin(origin) in allowed:
                    continue
            except ValueError:
                pass
            log.info("refused an MCP request from origin %s", quote(origin))
            return _error(403, "ORIGIN_REFUSED", f"origin {quote(origin)} is not allowed: sandboxd's MCP endpoint "
                                                 f"takes browser requests only from its own origin and "
                                                 f"[mcp] allowed_origins")
        return None

    async def _authenticate(self, request: Request, runtime: Runtime) -> Response | None:
        """The caller, identified by the servicer as for an RPC, set as the request's ``user`` (the SDK ties
        each session to the principal that created it) — or the refusal to answer with."""
        authorization = request.headers.getlist("authorization")
        client = request.client
        context = CallContext(authorization=authorization,
                              peer=peer_address(client.host if client else None, client.port if client else None))
        try:
            identity = await self._service.identify_caller(context, RPC)
        except CallAborted as aborted:
            return self._refusal(aborted, runtime, token_sent=bool(authorization))
        token = _bearer_token(authorization)
        if not token:  # identified without a token: no such path over TCP, but never run a call without one
            return _error(401, "AUTH_FAILED", "AUTH_FAILED: send 'Authorization: Bearer <token>'",
                          headers={"WWW-Authenticate": 'Bearer realm="sandboxd"'})
        request.scope["user"] = AuthenticatedUser(AccessToken(token=token, client_id=identity.principal, scopes=[]))
        return None

    def _refusal(self, aborted: CallAborted, runtime: Runtime, *, token_sent: bool) -> Response:
        text = refusal_text(aborted.reason, aborted.details, temporary=aborted.temporary)
        if aborted.reason == "AUTH_FAILED":
            challenge = ['Bearer realm="sandboxd"']
            if token_sent:
                challenge.append('error="invalid_token"')
            if self._jwt_issuer(runtime) is not None:
                url = build_resource_metadata_url(AnyHttpUrl(self._resource_url(runtime.config.mcp)))
                challenge.append(f'resource_metadata="{url}"')
            return _error(401, aborted.reason, text, headers={"WWW-Authenticate": ", ".join(challenge)})
        if aborted.reason == "RATE_LIMITED":
            retry_after_s = float(aborted.metadata_value(RETRY_AFTER_METADATA_KEY) or 1)
            return _error(429, aborted.reason, text, headers={"Retry-After": str(math.ceil(retry_after_s))})
        return _error(503 if aborted.temporary else 500, aborted.reason, text, code=types.INTERNAL_ERROR)


def _naming_the_session_bound(send: Send, max_sessions: int) -> Send:
    """``send``, with the SDK's 503 for a session past ``max_sessions`` (its only 503) answered by one that
    names the bound and the key."""
    replaced = False

    async def wrapped(message: Message) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start" and message["status"] == 503:
            replaced = True
            response = _error(503, "TOO_MANY_SESSIONS",
                              f"TOO_MANY_SESSIONS: {max_sessions} MCP sessions are open, the most this sandboxd "
                              f"keeps ([mcp] max_sessions); retry once one ends or idles out",
                              code=types.INTERNAL_ERROR)
            await send({"type": "http.response.start", "status": 503, "headers": response.raw_headers})
            await send({"type": "http.response.body", "body": response.body})
        elif not replaced:
            await send(message)

    return wrapped


def _source_for(service: SandboxService) -> Callable[[ServerRequestContext[Any]], InProcessSource]:
    def source_for(ctx: ServerRequestContext[Any]) -> InProcessSource:
        request = ctx.request
        user = request.scope.get("user") if isinstance(request, Request) else None
        if not isinstance(user, AuthenticatedUser):
            raise RuntimeError("an MCP request reached the gateway without its caller identified")
        client = request.client if isinstance(request, Request) else None
        peer = peer_address(client.host if client else None, client.port if client else None)
        return InProcessSource(service, user.access_token.token, peer)

    return source_for


def _session_id(ctx: ServerRequestContext[Any]) -> str:
    request = ctx.request
    return request.headers.get(MCP_SESSION_ID_HEADER, "") if isinstance(request, Request) else ""


class _InLoopServer(uvicorn.Server):
    """uvicorn's HTTP serving without its process management: started on a socket the daemon bound and
    stopped by the daemon, in the daemon's event loop. Nothing here installs a signal handler."""

    async def start(self, sock: socket.socket) -> None:
        try:
            self.config.load()
        except OSError as exc:  # the TLS files (ssl.SSLError is an OSError)
            raise ConfigError(f"daemon.tls: cannot serve mcp.listen with {self.config.ssl_certfile}: {exc}") from exc
        self.lifespan = self.config.lifespan_class(self.config)  # "off": the daemon runs the session manager
        self._sockets = [sock]
        await self.startup(sockets=self._sockets)

    async def stop(self) -> None:
        if self.started:
            await self.shutdown(sockets=self._sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The daemon's SIGTERM/SIGINT/SIGHUP handlers stay the only ones, even if ``serve()`` were called."""
        yield


def _bind(listen: McpListen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind((listen.host, listen.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"mcp.listen: cannot listen on {listen}: {exc.strerror or exc}") from exc
    return sock


class McpListener:
    """The endpoint in the daemon: :meth:`start` before the daemon reports ready, :meth:`stop` before its
    gRPC server stops. Both do nothing without ``[mcp] listen``."""

    def __init__(self, config: McpConfig, *, service: SandboxService, runtime: Callable[[], Runtime],
                 tls: TlsConfig | None) -> None:
        self._config = config
        self._service = service
        self._runtime = runtime
        self._tls = tls
        self._app: McpApp | None = None
        self._http: _InLoopServer | None = None
        self._sessions: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.url = ""  # the endpoint, once started: scheme://host:port/path

    async def start(self) -> None:
        listen = self._config.listen
        if listen is None:
            return
        sock = _bind(listen)
        try:
            await self._start_on(listen, sock)
        except BaseException:
            await self.stop()
            sock.close()
            raise
        log.info("mcp on %s", self.url)

    async def _start_on(self, listen: McpListen, sock: socket.socket) -> None:
        config, tls = self._config, self._tls
        port = int(sock.getsockname()[1])
        scheme = "https" if tls is not None else "http"
        base_url = f"{scheme}://{_url_host(listen.host)}:{port}"
        self.url = base_url + config.path
        own = {base_url, *(f"{scheme}://{host}:{port}" for host in ("localhost", "127.0.0.1", "[::1]"))}
        manager = StreamableHTTPSessionManager(
            build_server(_source_for(self._service), session_id=_session_id),
            session_idle_timeout=config.session_idle_timeout_ms / 1000, max_sessions=config.max_sessions,
        )
        self._app = McpApp(manager, service=self._service, runtime=self._runtime, path=config.path,
                           base_url=base_url, own_origins=frozenset(own), max_sessions=config.max_sessions)
        running = asyncio.get_running_loop().create_future()
        self._sessions = asyncio.create_task(self._keep_sessions(manager, running), name="sandboxd-mcp-sessions")
        await asyncio.wait({running, self._sessions}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            self._sessions.result()  # its error
            raise RuntimeError("the MCP session manager ended as it started")
        tls_options: dict[str, Any] = {}
        if tls is not None:
            tls_options = {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)}
            if tls.client_ca_file is not None:  # as on tcp_listen: the handshake demands a client certificate
                tls_options |= {"ssl_ca_certs": str(tls.client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        self._http = _InLoopServer(uvicorn.Config(
            self._app, lifespan="off", interface="asgi3", http="h11", ws="none", log_config=None,
            log_level="warning", access_log=False, proxy_headers=False, server_header=False, date_header=False,
            timeout_graceful_shutdown=_STOP_GRACE_S, **tls_options,
        ))
        await self._http.start(sock)

    async def _keep_sessions(self, manager: StreamableHTTPSessionManager, running: asyncio.Future[None]) -> None:
        """The manager's task group, in a task of its own: its scope never covers the daemon's main task."""
        async with manager.run():
            running.set_result(None)
            await self._stopping.wait()

    async def stop(self) -> None:
        """Refuse new requests, let the answers under way finish, end every session (a call still running is
        cancelled, so its execution is killed and recorded), then close the HTTP connections. Idempotent."""
        if self._app is not None:
            self._app.closing = True
            await self._app.answered(_STOP_GRACE_S)
        self._stopping.set()
        sessions, self._sessions = self._sessions, None
        if sessions is not None:
            try:
                await sessions
            except Exception:
                log.exception("the MCP sessions ended with an error")
        http, self._http = self._http, None
        if http is not None:
            await http.stop()
