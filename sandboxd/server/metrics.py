"""Prometheus metrics of one daemon, in a registry of its own, and the optional local ``/metrics`` listener.

The daemon makes one :class:`Metrics` and hands it to the service; the service reports what happened
(``decision``, ``execution_finished``, ``output_bytes``) and observes the latency histograms directly:

    request received ── queue_seconds ──▶ spawn requested ── spawn_seconds ──▶ Started ──▶ … ──▶ Result
    └───────────────────────────────── execution_seconds ─────────────────────────────────────────┘

Label values stay few: tool names come from the registry (a raw command is ``(command)``), statuses and
refusal reasons are the API's fixed words. Every name starts with ``sandboxd_``. Metrics name tools and how
callers' executions ended, so :class:`MetricsServer` listens on loopback only unless told otherwise.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest, make_wsgi_app

from sandboxd.base.errors import ConfigError
from sandboxd.engine.result import Result, Status

log = logging.getLogger("sandboxd.server.metrics")

COMMAND_TOOL_LABEL = "(command)"  # the tool label of a raw command (tool "")
ALLOWED_REASON_LABEL = "ok"  # the reason label of an allowed request (reason "")
# 1 ms … 60 s: a cached spawn takes a few ms, a handler may run up to its wall limit.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# 50 µs … 1 s: fsync of the audit log on a fast SSD up to a disk in trouble.
FSYNC_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0)
DEFAULT_METRICS_PORT = 9464


class Metrics:
    """Every metric of one daemon. Counters only go up while the process lives; restarts show as resets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.executions_total = Counter(
            "sandboxd_executions_total", "Executions that ended, by tool and Result status.",
            ["tool", "status"], registry=r)
        self.decisions_total = Counter(
            "sandboxd_decisions_total", "Requests allowed or denied by admission and policy, by refusal reason.",
            ["decision", "reason"], registry=r)
        self.queue_seconds = Histogram(
            "sandboxd_queue_seconds", "From request received to spawn requested.",
            buckets=LATENCY_BUCKETS_S, registry=r)
        self.spawn_seconds = Histogram(
            "sandboxd_spawn_seconds", "From spawn requested to the handler Started in its sandbox.",
            buckets=LATENCY_BUCKETS_S, registry=r)
        self.execution_seconds = Histogram(
            "sandboxd_execution_seconds", "From request received to its Result, for every execution.",
            buckets=LATENCY_BUCKETS_S, registry=r)
        self.active_executions = Gauge(
            "sandboxd_active_executions", "Executions admitted and not yet finished.", registry=r)
        self.output_bytes_total = Counter(
            "sandboxd_output_bytes_total", "Bytes handlers wrote, relayed to callers, by stream.",
            ["stream"], registry=r)
        self.oom_kills_total = Counter(
            "sandboxd_oom_kills_total", "Executions ended by the OOM killer (Result MEMORY_LIMIT).", registry=r)
        self.seccomp_violations_total = Counter(
            "sandboxd_seccomp_violations_total", "Executions killed by their seccomp filter.", registry=r)
        self.network_connections_total = Counter(
            "sandboxd_network_connections_total",
            "Connections through the egress proxy, by tool and outcome (allowed, denied, failed).",
            ["tool", "outcome"], registry=r)
        self.network_bytes_total = Counter(
            "sandboxd_network_bytes_total", "Bytes through the egress proxy, by tool and direction (sent, received).",
            ["tool", "direction"], registry=r)
        self.audit_fsync_seconds = Histogram(
            "sandboxd_audit_fsync_seconds", "Duration of one fsync of the audit log.",
            buckets=FSYNC_BUCKETS_S, registry=r)
        self.audit_anchors_total = Counter(
            "sandboxd_audit_anchors_total", "Shipments of the audit chain's tip to [audit] anchor, by result.",
            ["result"], registry=r)
        self.audit_anchored_seq = Gauge(
            "sandboxd_audit_anchored_seq", "The last audit seq shipped to [audit] anchor.", registry=r)
        self.risk_assessment_seconds = Histogram(
            "sandboxd_risk_assessment_seconds",
            "How long the risk assessor took to answer (or fail: ok, error, timeout).",
            ["outcome"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.risk_checks_total = Counter(
            "sandboxd_risk_checks_total",
            "Risk checks by result: ok, cached, error, timeout, busy (no slot of max_in_flight in time).",
            ["result"], registry=r)
        self.info = Info("sandboxd", "The daemon's version, instance and cgroup backend.", registry=r)
        self.start_time_seconds = Gauge(
            "sandboxd_start_time_seconds", "When the daemon started, in seconds since the Unix epoch.", registry=r)
        self.start_time_seconds.set(time.time())

    def set_info(self, *, version: str, instance: str, cgroup_backend: str) -> None:
        self.info.info({"version": version, "instance": instance, "cgroup_backend": cgroup_backend})

    def decision(self, decision: str, reason: str) -> None:
        """A request was ``allowed`` (reason "") or ``denied`` (reason: the refusal's machine reason)."""
        self.decisions_total.labels(decision=decision, reason=reason or ALLOWED_REASON_LABEL).inc()

    def risk_assessed(self, result: str, seconds: float | None) -> None:
        """A risk check ended with ``result``; ``seconds``: how long the assessor took (None: not asked)."""
        self.risk_checks_total.labels(result=result).inc()
        if seconds is not None:
            self.risk_assessment_seconds.labels(outcome=result).observe(seconds)

    def audit_anchored(self, ok: bool, seq: int) -> None:
        """A shipment of the audit tip (``seq``) to the anchor went (``ok``) or failed."""
        self.audit_anchors_total.labels(result="ok" if ok else "failed").inc()
        if ok:
            self.audit_anchored_seq.set(seq)

    def output_bytes(self, stream: str, count_bytes: int) -> None:
        """``count_bytes`` of ``stream`` (``stdout``/``stderr``) were relayed to the caller."""
        self.output_bytes_total.labels(stream=stream).inc(count_bytes)

    def network_connection(self, tool: str, outcome: str) -> None:
        """A connection of an execution of ``tool`` was ``allowed``, ``denied`` or ``failed``."""
        self.network_connections_total.labels(tool=tool or COMMAND_TOOL_LABEL, outcome=outcome).inc()

    def network_bytes(self, tool: str, *, sent_bytes: int, received_bytes: int) -> None:
        """A connection of an execution of ``tool`` ended, having moved these bytes."""
        label = tool or COMMAND_TOOL_LABEL
        self.network_bytes_total.labels(tool=label, direction="sent").inc(sent_bytes)
        self.network_bytes_total.labels(tool=label, direction="received").inc(received_bytes)

    def execution_finished(self, tool: str, result: Result, *, seconds: float) -> None:
        """An execution of ``tool`` ("" for a raw command) ended with ``result``, ``seconds`` after its request."""
        self.executions_total.labels(tool=tool or COMMAND_TOOL_LABEL, status=result.status.value).inc()
        self.execution_seconds.observe(seconds)
        if result.status is Status.MEMORY_LIMIT:
            self.oom_kills_total.inc()
        elif result.status is Status.SECCOMP_VIOLATION:
            self.seccomp_violations_total.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition format (what ``/metrics`` serves)."""
        return generate_latest(self.registry)


def parse_metrics_listen(value: object) -> str | None:
    """``daemon.metrics_listen``: "" is off, else a loopback ``host:port`` (port 0: any free port)."""
    if value == "":
        return None
    host, _ = _split_listen(value)
    if not _is_loopback(host):
        raise ValueError(f"{value!r} is not a loopback address: metrics name tools and how executions ended; "
                         f"listen on 127.0.0.1 or [::1] and put an authenticating proxy in front")
    return str(value)


def _split_listen(value: object) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``"localhost:9464"`` → (IP address, port)."""
    if not isinstance(value, str):
        raise ValueError(f"expected \"host:port\" such as \"127.0.0.1:{DEFAULT_METRICS_PORT}\", got {value!r}")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address needs brackets, as in \"[::1]:{DEFAULT_METRICS_PORT}\", got {value!r}")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected \"host:port\" such as \"127.0.0.1:{DEFAULT_METRICS_PORT}\", got {value!r}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"{host!r} is not an IP address (or localhost)") from exc
    return host, int(port)


def _is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s: " + format, self.address_string(), *args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds up stop()


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


_StartResponse = Callable[..., Any]


def _metrics_only(registry: CollectorRegistry) -> Callable[[dict[str, Any], _StartResponse], Iterable[bytes]]:
    """The registry at ``/metrics`` (GET/HEAD), 404 everywhere else: nothing else is served by accident."""
    exposition = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: metrics are at /metrics\n"]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"),
                                                      ("Content-Type", "text/plain; charset=utf-8")])
            return [b"method not allowed\n"]
        return exposition(environ, start_response)  # type: ignore[no-any-return]

    return app


class MetricsServer:
    """HTTP ``/metrics`` of one :class:`Metrics`, served by a thread (no fork) until :meth:`stop`.

    Not prometheus_client's ``start_http_server``: that serves the registry on every path and binds
    whatever it is given; this one answers 404 off ``/metrics`` and refuses non-loopback addresses.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, listen: str, *, allow_remote: bool = False) -> tuple[str, int]:
        """Listen on ``host:port`` (port 0: a free one); returns the bound (host, port)."""
        if self._server is not None:
            raise RuntimeError("the metrics server is already started")
        try:
            host, port = _split_listen(listen)
        except ValueError as exc:
            raise ConfigError(f"daemon.metrics_listen: {exc}") from exc
        if not allow_remote and not _is_loopback(host):
            raise ConfigError(f"daemon.metrics_listen: {listen!r} is not a loopback address "
                              f"and remote scraping was not allowed")
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        try:
            server = make_server(host, port, _metrics_only(self._metrics.registry),
                                 server_class=server_class, handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(f"daemon.metrics_listen: cannot listen on {listen}: {exc.strerror or exc}") from exc
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="sandboxd-metrics", daemon=True)
        self._thread.start()
        bound_host, bound_port = server.server_address[:2]
        return str(bound_host), int(bound_port)

    def stop(self) -> None:
        """Stop serving and close the socket (the port is free when this returns). Idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
