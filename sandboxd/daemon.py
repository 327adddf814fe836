"""``sandboxd``: the root daemon, in the foreground (systemd style).

Start-up, in order: config → state dir (lock, sample data) → tools and their seccomp profiles (a bad one
fails the start) → executor (spawner, cgroups, stale leaves removed) → gRPC server on the Unix socket
(mode + group) and optional loopback TCP → ``READY=1``. On SIGTERM/SIGINT it drains: new executions are
refused (UNAVAILABLE/DRAINING, health NOT_SERVING), running ones get ``daemon.grace_period`` to finish,
then are cancelled — each still gets its Result — and the server stops. A second signal skips the grace.

This process never forks: grpc's threads make fork unsafe; the executor's spawner does all forking.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import grp
import logging
import os
import signal
import socket
import stat
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sandboxd import __version__
from sandboxd._proto.sandboxd.v1 import sandbox_pb2 as pb
from sandboxd._proto.sandboxd.v1 import sandbox_pb2_grpc as pb_grpc
from sandboxd.admission import Admission
from sandboxd.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_SOCKET_GROUP,
    SHIPPED_HANDLERS_DIR,
    Config,
    instance_name,
    load_config,
)
from sandboxd.engine_config import EngineConfig
from sandboxd.errors import ConfigError, SandboxError
from sandboxd.executor import Executor
from sandboxd.host_info import DaemonFacts
from sandboxd.registry import ToolRegistry
from sandboxd.seccomp import ProfileCache
from sandboxd.service import SandboxService
from sandboxd.state_dir import StateDir, prepare_state_dir
from sandboxd.tools import load_tools

log = logging.getLogger("sandboxd")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Sandbox"].full_name
# Room above max_request_bytes so an oversized request reaches the servicer and is refused with a reason.
_TRANSPORT_SLACK_BYTES = 64 * 1024
_SERVER_STOP_GRACE_S = 2.0
EXIT_CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus can name it


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sandboxd", description=(__doc__ or "").replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help=f"TOML file (default: {DEFAULT_CONFIG_PATH} if it exists)")
    parser.add_argument("--socket", type=Path, metavar="PATH", help="Unix socket (overrides daemon.socket)")
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="state directory (overrides daemon.state_dir)")
    parser.add_argument("--instance", metavar="NAME",
                        help="instance name, unique per daemon on a host (overrides daemon.instance)")
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
    return dataclasses.replace(config, daemon=daemon)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        config = configure(args)
        return asyncio.run(serve(config))
    except ConfigError as error:
        log.error("configuration: %s", error.message)
        return EXIT_CONFIG
    except SandboxError as error:
        log.error("cannot start: %s (%s)", error.message, error.reason)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - SIGINT before the loop's handler is installed
        return 130


async def serve(config: Config) -> int:
    state = prepare_state_dir(config.daemon.state_dir)
    try:
        return await _serve_locked(config, state)
    finally:
        state.release()


async def _serve_locked(config: Config, state: StateDir) -> int:
    placeholders = {
        "handlers_dir": str(SHIPPED_HANDLERS_DIR),
        "state_dir": str(state.path),
        "data_dir": str(SHIPPED_HANDLERS_DIR.parent),
    }
    tools = load_tools(config.tool_dirs, placeholders=placeholders, default_limits=config.sandbox.limits)
    profiles = ProfileCache()
    registry = ToolRegistry(
        tools,
        default_limits=config.sandbox.limits,
        default_profile=config.sandbox.default_profile,
        profile_dirs=config.profile_dirs,
        compile_profile=lambda path: profiles.get(path).bpf,
        host_env=os.environ,
    )
    registry.compile_all()
    log.info("config %s: %d tools (%s)", config.source or "(embedded defaults)", len(tools), ", ".join(tools))

    executor = await Executor.create(
        EngineConfig(
            state_dir=config.daemon.state_dir,
            instance=config.daemon.instance,
            sandbox_uid=config.sandbox.uid,
            sandbox_gid=config.sandbox.gid,
        )
    )
    try:
        return await _serve_with_executor(config, registry, executor)
    finally:
        await executor.close()


async def _serve_with_executor(config: Config, registry: ToolRegistry, executor: Executor) -> int:
    daemon = config.daemon
    admission = Admission(daemon.max_concurrent_executions)
    facts = DaemonFacts.gather(instance=daemon.instance, max_request_bytes=daemon.max_request_bytes)
    service = SandboxService(registry=registry, executor=executor, admission=admission, facts=facts)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", daemon.max_request_bytes + _TRANSPORT_SLACK_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_SandboxServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    listening = _bind_unix_socket(server, daemon.socket, daemon.socket_mode, daemon.socket_group)
    stop = _StopSignals()
    try:  # from here on the socket is ours to remove
        if daemon.tcp_listen:
            _add_port(server, daemon.tcp_listen, "daemon.tcp_listen")
        await server.start()
        # Renamed into place only now: whoever sees the socket can use it (no connect-before-listen race).
        os.rename(listening, daemon.socket)
        listening = daemon.socket
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "sandboxd %s instance %s listening on %s%s (cgroup %s at %s, at most %d executions)",
            __version__, daemon.instance, daemon.socket, f" and {daemon.tcp_listen}" if daemon.tcp_listen else "",
            executor.backend_name, executor.cgroup_base, daemon.max_concurrent_executions,
        )
        _sd_notify("READY=1")
        await stop.first.wait()
        log.info("stopping: refusing new executions, %d running", len(admission))
        _sd_notify("STOPPING=1")
        admission.start_draining()
        await health_servicer.enter_graceful_shutdown()
        await admission.drain(daemon.grace_period_ms / 1000, cancel_all=service.cancel_all, hurry=stop.second)
        await server.stop(_SERVER_STOP_GRACE_S)
    finally:
        stop.remove()
        with contextlib.suppress(FileNotFoundError):
            listening.unlink()
    log.info("stopped")
    return 0


class _StopSignals:
    """SIGTERM/SIGINT once: drain. Twice: stop waiting for the grace period."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.second = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        log.info("received %s", signal.Signals(signum).name)
        (self.second if self.first.is_set() else self.first).set()

    def remove(self) -> None:
        """Stop listening; a late signal while the process winds down is ignored, not fatal."""
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)


def _bind_unix_socket(server: grpc.aio.Server, path: Path, mode: int, group: str) -> Path:
    """Bind a socket with ``mode`` and ``group`` beside ``path``, to be renamed to ``path`` once the server
    listens; refuse to steal a socket another daemon serves. Returns where it was bound."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError(f"daemon.socket: {path} exists and is not a socket")
        if _socket_answers(path):
            raise ConfigError(f"daemon.socket: another daemon is listening on {path}")
        path.unlink()  # left by a daemon that died
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    gid = _socket_gid(group)
    bound = path.with_name(f".{path.name}.{os.getpid()}")
    bound.unlink(missing_ok=True)
    # The socket is born without access for anyone but root; mode and group are set right after.
    old_umask = os.umask(0o177)
    try:
        _add_port(server, f"unix:{bound}", "daemon.socket")
    finally:
        os.umask(old_umask)
    os.chown(bound, 0, gid, follow_symlinks=False)
    os.chmod(bound, mode)  # Linux has no lchmod; the path is the socket we just created
    return bound


def _add_port(server: grpc.aio.Server, address: str, key: str) -> None:
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises on a failed bind (older versions returned 0)
        raise ConfigError(f"{key}: cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise ConfigError(f"{key}: cannot listen on {address}")


def _socket_gid(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group == DEFAULT_SOCKET_GROUP:
            log.warning("group %r does not exist: the socket stays root-only "
                        "(see systemd/sandboxd.sysusers.conf)", group)
            return 0
        raise ConfigError(f"daemon.socket_group: no group named {group!r}") from None


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def _sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock, \
            contextlib.suppress(OSError):
        sock.sendto(message.encode(), address)


if __name__ == "__main__":
    sys.exit(main())
