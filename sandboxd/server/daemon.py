"""``sandboxd``: the root daemon, in the foreground (systemd style).

Start-up, in order: config → state dir (lock, sample data) → tools and their seccomp profiles (a bad one
fails the start) → executor (spawner, cgroups, stale leaves removed) → gRPC server on the Unix socket
(mode + group) and optional loopback TCP → ``READY=1``. On SIGTERM/SIGINT it drains: new executions are
refused (UNAVAILABLE/DRAINING, health NOT_SERVING), running ones get ``daemon.grace_period`` to finish,
then are cancelled — each still gets its Result — and the server stops. A second signal skips the grace.
SIGHUP reloads the configuration, tools, profiles and policy as one piece, or keeps the running one
(see :mod:`sandboxd.server.runtime`). Every start, stop, reload and recovery is an audit record; with
``[audit] anchor`` the chain's tip is shipped outside at an interval and once more after the stop.

This process never forks: grpc's threads make fork unsafe; the executor's spawner does all forking.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sandboxd import __version__
from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd.api.handlers import add_sandbox_service
from sandboxd.audit.anchor import AnchorShipper
from sandboxd.audit.config import AuditConfig, load_hmac_key
from sandboxd.audit.writer import AuditLog
from sandboxd.base.errors import CgroupError, ConfigError, SandboxError
from sandboxd.egress.proxy import EgressProxy
from sandboxd.engine.config import EngineConfig
from sandboxd.engine.executor import Executor
from sandboxd.engine.seccomp.profile import ProfileCache
from sandboxd.policy.tls import TlsConfig, server_credentials
from sandboxd.server import notify as sd_notify
from sandboxd.server.admission import Admission
from sandboxd.server.audit_trail import AuditTrail
from sandboxd.server.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    instance_name,
    load_config,
    restart_needed,
)
from sandboxd.server.framed_socket import FramedListener
from sandboxd.server.host_info import DaemonFacts
from sandboxd.server.logs import configure_logging
from sandboxd.server.mcp_instance_types import Daemon as McpDaemon
from sandboxd.server.mcp_servers import McpServers
from sandboxd.server.metrics import Metrics, MetricsServer
from sandboxd.server.notify import Watchdog
from sandboxd.server.pool_metrics import watch_pool
from sandboxd.server.quiet import CallClock
from sandboxd.server.runtime import Runtime, build_runtime
from sandboxd.server.service import SandboxService
from sandboxd.server.sessions import Sessions
from sandboxd.server.state_dir import StateDir, prepare_state_dir
from sandboxd.server.unix_socket import bind_aside, socket_gid

if TYPE_CHECKING:
    from sandboxd.server.mcp_http import McpListener

log = logging.getLogger("sandboxd")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Sandbox"].full_name
# Room above max_request_bytes so an oversized request reaches the servicer and is refused with a reason.
_TRANSPORT_SLACK_BYTES = 64 * 1024
_SERVER_STOP_GRACE_S = 2.0
_ANCHOR_FLUSH_TIMEOUT_S = 10.0
# The daemon's niceness: with 500 sandboxes starting on 2 cores, health p99 6-42 ms against 25-73 ms at 0
# (bench/health_under_load.py). The sandboxes run at 0 (a pool builds its own at 19).
DAEMON_NICE = -5
# Exits a restart cannot fix, each named in the unit's RestartPreventExitStatus= so systemd does not loop:
EXIT_CONFIG = 78  # EX_CONFIG: the configuration is invalid
EXIT_NOPERM = 77  # EX_NOPERM: a path it must use is closed to it
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: the host lacks what sandboxes need (delegated cgroup controllers)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sandboxd", description=(__doc__ or "").replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help=f"TOML file (default: {DEFAULT_CONFIG_PATH} if it exists)")
    parser.add_argument("--socket", type=Path, metavar="PATH", help="Unix socket (overrides daemon.socket)")
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="state directory (overrides daemon.state_dir)")
    parser.add_argument("--instance", metavar="NAME",
                        help="instance name, unique per daemon on a host (overrides daemon.instance)")
    parser.add_argument("--audit-log", type=Path, metavar="FILE", help="the audit log (overrides audit.path)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"sandboxd {__version__}")
    return parser.parse_args(argv)


def configure(args: argparse.Namespace) -> Config:
    path: Path | None = args.config
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    config = load_config(path)
    daemon = config.daemon
    if args.instance is not None:
        try:
            instance_name(args.instance)
        except ValueError as exc:
            raise ConfigError(f"--instance: {exc}") from exc
    daemon = dataclasses.replace(
        daemon,
        socket=args.socket.absolute() if args.socket else daemon.socket,
        state_dir=args.state_dir.absolute() if args.state_dir else daemon.state_dir,
        instance=args.instance or daemon.instance,
    )
    audit = config.audit
    if args.audit_log is not None:
        audit = dataclasses.replace(audit, path=args.audit_log.absolute())
    return dataclasses.replace(config, daemon=daemon, audit=audit)


def raise_open_files_limit() -> int:
    """As many descriptors as the hard limit allows (systemd's unit gives 65536; a shell's soft 1024 would not
    do): each running execution holds its pipes and pidfd here, each pooled sandbox its pipes and gate."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def raise_priority() -> None:
    """Serve at :data:`DAEMON_NICE`, before any thread starts (a thread inherits its creator's): the daemon's
    answers — health checks, admissions, Results — are not held up by the sandboxes it runs and builds, which
    the spawner starts at niceness 0 again (``engine/child/native/spawner.c``). Without CAP_SYS_NICE it serves
    at the niceness it was given, and says so."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, DAEMON_NICE)
    except OSError as error:
        log.warning("serving at niceness %d: cannot raise the daemon's priority: %s",
                    os.getpriority(os.PRIO_PROCESS, 0), error.strerror or error)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, sys.stderr)
    raise_open_files_limit()
    raise_priority()
    try:
        config = configure(args)
        return uvloop.run(serve(config, args))
    except ConfigError as error:
        log.error("configuration: %s", error.message)
        return EXIT_CONFIG
    except CgroupError as error:
        log.error("cannot start: %s (%s); fix the host, then start it again", error.message, error.reason)
        return EXIT_UNAVAILABLE
    except PermissionError as error:
        log.error("cannot start: %s; it needs root and its own directories", error)
        return EXIT_NOPERM
    except SandboxError as error:
        log.error("cannot start: %s (%s)", error.message, error.reason)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - SIGINT before the loop's handler is installed
        return 130


async def serve(config: Config, args: argparse.Namespace) -> int:
    state = prepare_state_dir(config.daemon.state_dir)
    try:
        audit = open_audit_log(config.audit)
    except SandboxError:
        state.release()
        raise
    try:
        return await _serve_audited(config, state, audit, args)
    finally:
        audit.close()
        state.release()


def open_audit_log(audit: AuditConfig) -> AuditLog:
    key = load_hmac_key(audit.key_file) if audit.key_file is not None else None
    return AuditLog.open(audit.path, hmac_key=key, rotate_bytes=audit.rotate_bytes,
                         retention_days=audit.retention_days)


async def _serve_audited(config: Config, state: StateDir, audit: AuditLog, args: argparse.Namespace) -> int:
    trail = AuditTrail(audit)
    metrics = Metrics()
    audit.on_fsync = metrics.audit_fsync_seconds.observe
    anchor = _start_anchoring(config, audit, metrics)
    try:
        return await _serve_anchored(config, state, args, trail, metrics)
    finally:
        if anchor is not None:
            await asyncio.to_thread(_stop_anchoring, anchor, audit)


def _start_anchoring(config: Config, audit: AuditLog, metrics: Metrics) -> AnchorShipper | None:
    """Ship the chain's tip to ``[audit] anchor`` at its interval (see sandboxd.audit.anchor); None without."""
    if config.audit.anchor is None:
        return None
    anchor = AnchorShipper(audit, config.audit.anchor, instance=config.daemon.instance,
                           interval_s=config.audit.anchor_interval_ms / 1000, on_shipped=metrics.audit_anchored)
    anchor.start()
    log.info("anchoring the audit chain at %s every %g s", config.audit.anchor, config.audit.anchor_interval_ms / 1000)
    return anchor


def _stop_anchoring(anchor: AnchorShipper, audit: AuditLog) -> None:
    """The last shipment, once every record (the daemon's stop among them) is on disk."""
    try:
        audit.flush(_ANCHOR_FLUSH_TIMEOUT_S)
    except SandboxError as error:  # what is on disk is still anchored
        log.error("audit log: %s", error.message)
    anchor.close()


async def _serve_anchored(config: Config, state: StateDir, args: argparse.Namespace, trail: AuditTrail,
                          metrics: Metrics) -> int:
    profiles = ProfileCache()
    runtime = build_runtime(config, state_dir=state.path, profiles=profiles)
    log.info("config %s: %d tools (%s)", runtime.source_name, len(runtime.tool_names), ", ".join(runtime.tool_names))
    executor = await Executor.create(
        EngineConfig(
            state_dir=config.daemon.state_dir,
            instance=config.daemon.instance,
            sandbox_ids=config.sandbox.ids,
            setup_timeout_ms=config.sandbox.setup_timeout_ms,
        )
    )
    if executor.recovered_leaves:
        trail.daemon("recovered", {"cgroups_removed": list(executor.recovered_leaves),
                                   "cgroup_base": executor.cgroup_base})
    try:
        holder = _RuntimeHolder(runtime, profiles, state, trail, reread=lambda: configure(args))
        return await _serve_with_executor(holder, executor, trail, metrics)
    finally:
        await executor.close()


class _RuntimeHolder:
    """The current :class:`Runtime`, and SIGHUP's atomic replacement of it."""

    def __init__(self, runtime: Runtime, profiles: ProfileCache, state: StateDir, trail: AuditTrail, *,
                 reread: Callable[[], Config]) -> None:
        self.current = runtime
        self._profiles = profiles
        self._state = state
        self._trail = trail
        self._reread = reread  # the file and command line, read again

    def __call__(self) -> Runtime:
        return self.current

    def reload(self) -> None:
        """Re-read the configuration and everything it names; keep the running one on any error."""
        running = self.current
        try:
            config = self._reread()
            blocked = restart_needed(running.config, config)
            if blocked:
                raise ConfigError(f"{', '.join(blocked)} changed: only a restart applies that; "
                                  "the reload was rejected as a whole")
            new = build_runtime(config, state_dir=self._state.path, profiles=self._profiles, previous=running)
        except SandboxError as error:
            log.error("reload rejected, the running configuration stays: %s", error.message)
            self._trail.daemon("reload_failed", {"reason": error.reason, "message": error.message})
            return
        self.current = new
        log.info("reloaded %s: %d tools (%s)", new.source_name, len(new.tool_names), ", ".join(new.tool_names))
        self._trail.daemon("reloaded", {"config": new.source_name, "tools": new.tool_names,
                                        "roles": sorted(new.config.policy.roles)})


async def _serve_with_executor(holder: _RuntimeHolder, executor: Executor, trail: AuditTrail,
                               metrics: Metrics) -> int:
    config = holder.current.config
    daemon = config.daemon
    admission = Admission(daemon.max_concurrent_executions)
    facts = DaemonFacts.gather(instance=daemon.instance)
    hub = trail.log.hub
    egress = EgressProxy(config.egress)  # [egress] is read at start only (a restart key)
    sessions = Sessions(executor=executor, admission=admission, trail=trail, metrics=metrics, egress=egress,
                        instance=daemon.instance)
    mcp_servers = McpServers(McpDaemon(engine=executor, admission=admission, trail=trail, metrics=metrics,
                                       egress=egress))
    service = SandboxService(runtime=holder, executor=executor, admission=admission, facts=facts, trail=trail,
                             hub=hub, metrics=metrics, egress=egress, sessions=sessions,
                             mcp_servers=mcp_servers)
    metrics.set_info(version=__version__, instance=daemon.instance, cgroup_backend=executor.backend_name)
    watch_pool(metrics.registry, executor.pool_stats)
    _configure_pool(executor, holder.current)
    calls = CallClock()
    server = grpc.aio.server(
        interceptors=[calls],
        options=[
            ("grpc.max_receive_message_length", daemon.max_request_bytes + _TRANSPORT_SLACK_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    add_sandbox_service(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    socket_group_id = socket_gid(daemon.socket_group)
    # Bound beside its path, renamed into place once the server listens; another daemon's socket is not taken.
    listening = bind_aside(daemon.socket, "daemon.socket", mode=daemon.socket_mode, gid=socket_group_id,
                           bind=lambda bound: _add_port(server, f"unix:{bound}", "daemon.socket"))
    stop = _StopSignals()
    mcp_listener: McpListener | None = None
    if config.mcp.listen is not None:  # the MCP SDK and its web stack are loaded only to serve MCP over HTTP
        from sandboxd.server.mcp_http import McpListener

        mcp_listener = McpListener(config.mcp, service=service, runtime=holder, tls=daemon.tls)
    framed: FramedListener | None = None
    if daemon.framed_socket is not None:
        framed = FramedListener(service, daemon.framed_socket, mode=daemon.socket_mode,
                                gid=socket_group_id,
                                max_call_bytes=daemon.max_request_bytes + _TRANSPORT_SLACK_BYTES)
    metrics_server: MetricsServer | None = None
    watchdog: Watchdog | None = None
    health_server: grpc.aio.Server | None = None
    try:  # from here on the socket is ours to remove
        if daemon.tcp_listen:
            _add_port(server, daemon.tcp_listen, "daemon.tcp_listen", tls=daemon.tls)
        if daemon.health_listen:
            health_server = _health_server(health_servicer, daemon.health_listen)
        if daemon.metrics_listen:
            metrics_server = MetricsServer(metrics)
            host, port = metrics_server.start(daemon.metrics_listen)
            log.info("metrics on http://%s:%d/metrics", host, port)
        if mcp_listener is not None:
            await mcp_listener.start()
        await server.start()
        if health_server is not None:
            await health_server.start()
        if framed is not None:  # before the gRPC socket appears: whoever sees that one can use both
            await framed.start()
        # Renamed into place only now: whoever sees the socket can use it (no connect-before-listen race).
        os.rename(listening, daemon.socket)
        listening = daemon.socket
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "sandboxd %s instance %s listening on %s%s (cgroup %s at %s, at most %d executions)",
            __version__, daemon.instance, daemon.socket, f" and {daemon.tcp_listen}" if daemon.tcp_listen else "",
            executor.backend_name, executor.cgroup_base, daemon.max_concurrent_executions,
        )
        trail.daemon("started", {"version": __version__, "instance": daemon.instance,
                                 "config": holder.current.source_name, "cgroup_backend": executor.backend_name,
                                 "cgroup_base": executor.cgroup_base, "pid": os.getpid()})
        await trail.log.wait_durable(trail.log.last_seq)
        # What start-up made (modules, descriptors, the config: most of the heap) lives as long as the daemon: out
        # of the collector's sight, so a full collection under load goes through what the executions made only.
        gc.freeze()
        sd_notify.ready(f"serving {len(holder.current.tool_names)} tools")
        mcp_servers.prefetch(holder.current)
        watchdog = Watchdog.from_env(trail.log.healthy)
        if watchdog is not None:
            watchdog.start()
        while True:
            await stop.wait_first_or_hangup()
            if stop.first.is_set():
                break
            sd_notify.reloading()
            holder.reload()
            _configure_pool(executor, holder.current)
            mcp_servers.prefetch(holder.current)
            sd_notify.ready(f"serving {len(holder.current.tool_names)} tools")
        log.info("stopping: refusing new executions, %d running", len(admission))
        sd_notify.stopping(f"draining {len(admission)} executions")
        admission.start_draining()
        await health_servicer.enter_graceful_shutdown()
        mcp_drained = asyncio.create_task(mcp_servers.drain(daemon.grace_period_ms / 1000))
        await admission.drain(daemon.grace_period_ms / 1000, cancel_all=service.cancel_all, hurry=stop.second)
        await mcp_drained
        await sessions.close_all(by="daemon-stopping")
        await mcp_servers.close_all()
        if mcp_listener is not None:
            await mcp_listener.stop()
        if framed is not None:
            await framed.stop()
        if not await calls.wait_quiet():  # (see sandboxd.server.quiet: a call arriving as it stops is lost)
            log.warning("calls kept coming while stopping; stopping the server anyway")
        await server.stop(_SERVER_STOP_GRACE_S)
        trail.daemon("stopped", {"executions_total": service.executions_total,
                                 "denied_total": service.denied_total})
    finally:
        if mcp_listener is not None:
            await mcp_listener.stop()
        if framed is not None:
            await framed.stop()
        await sessions.close_all(by="daemon-stopping")
        await mcp_servers.close_all()
        await egress.close()
        if watchdog is not None:
            watchdog.stop()
        if metrics_server is not None:
            metrics_server.stop()
        if health_server is not None:  # last: probes see NOT_SERVING while it drains
            await health_server.stop(None)
        stop.remove()
        with contextlib.suppress(FileNotFoundError):
            listening.unlink()
    log.info("stopped")
    return 0


def _health_server(servicer: health.aio.HealthServicer, listen: str) -> grpc.aio.Server:
    """A plaintext server of grpc.health.v1 alone, sharing the main server's health states, for probes that
    cannot speak TLS (Kubernetes' grpc probes): it tells whether the daemon serves, and nothing else."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    _add_port(server, listen, "daemon.health_listen")
    return server


def _configure_pool(executor: Executor, runtime: Runtime) -> None:
    """What the warm pool keeps built: the current tools' sandboxes and raw commands' (a reload releases
    the sandboxes built from what it changed)."""
    sandbox = runtime.config.sandbox
    executor.configure_pool(runtime.registry.pool_specs(), per_spec=sandbox.pool_size, total=sandbox.pool_total)


class _StopSignals:
    """SIGTERM/SIGINT once: drain. Twice: stop waiting for the grace period. SIGHUP: reload."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.second = asyncio.Event()
        self.hangup = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        log.info("received %s", signal.Signals(signum).name)
        if signum == signal.SIGHUP:
            self.hangup.set()
            return
        (self.second if self.first.is_set() else self.first).set()

    async def wait_first_or_hangup(self) -> None:
        """Until a stop signal, or a SIGHUP (consumed: the next one waits again)."""
        first = asyncio.ensure_future(self.first.wait())
        hangup = asyncio.ensure_future(self.hangup.wait())
        try:
            await asyncio.wait({first, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            first.cancel()
            hangup.cancel()
        self.hangup.clear()

    def remove(self) -> None:
        """Stop listening; a late signal while the process winds down is ignored, not fatal."""
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)


def _add_port(server: grpc.aio.Server, address: str, key: str, *, tls: TlsConfig | None = None) -> None:
    try:
        if tls is not None:
            port = server.add_secure_port(address, server_credentials(tls))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises on a failed bind (older versions returned 0)
        raise ConfigError(f"{key}: cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise ConfigError(f"{key}: cannot listen on {address}")


if __name__ == "__main__":
    sys.exit(main())
