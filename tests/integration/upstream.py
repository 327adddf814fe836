"""A real HTTP(S) server on loopback for egress tests: the "internet" a sandbox reaches through the proxy.

    with Upstream() as web:                       # http://127.0.0.1:{web.port}
    with Upstream(tls=ca.issue_server(...)) as web:  # https, with a throw-away CA's certificate

Paths: ``/hello`` (a short text), ``/bytes/N`` (N bytes), ``/echo`` (POST: the body back), ``/hold`` (answers
the head, then keeps the connection open until the client goes — :meth:`Upstream.wait_held_closed` says when
the proxy closed it). Every request's headers are kept in ``requests``.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from types import TracebackType
from typing import Any

from certs import Issued  # tests/ is on sys.path


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self.server.upstream.requests.append((self.command, self.path, dict(self.headers.items())))
        if self.path == "/hello":
            self._send(b"hello from upstream\n")
        elif self.path.startswith("/bytes/"):
            self._send(b"x" * int(self.path.rsplit("/", 1)[1]))
        elif self.path == "/hold":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"holding\n")
            self.wfile.flush()
            self.server.upstream.held.set()
            self.rfile.read()  # until the other side closes
            self.server.upstream.held_closed.set()
            self.close_connection = True
        else:
            self._send(b"not found\n", 404)

    def do_POST(self) -> None:
        self.server.upstream.requests.append((self.command, self.path, dict(self.headers.items())))
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._send(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default of 5 overflows under a test's hundreds of concurrent connections: the kernel
    # then drops SYNs and the proxy's connects wait out retransmission back-offs of seconds
    request_queue_size = 1024
    upstream: Upstream


class Upstream:
    def __init__(self, tls: Issued | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.held = threading.Event()
        self.held_closed = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.upstream = self
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert_file, tls.key_file)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
