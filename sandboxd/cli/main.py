"""``sandboxctl``: drive and debug a sandboxd from a shell.

    sandboxctl run TOOL [-i] [--param k=v ...] [--params-json JSON|@FILE] [--stdin FILE] [limits]
    sandboxctl exec [-i] [limits] [--profile NAME] [--allow-host HOST[:PORT] ...] [--stdin FILE] -- ARGV...
    sandboxctl tools | ps | cancel ID | info | health
    sandboxctl mcp      serve the tools over MCP on stdin/stdout, as this caller (see sandboxd/cli/mcp_server.py)
    sandboxctl audit tail [-n N] [-f] [filters] | audit export --since WHEN [filters] | audit verify FILE...
    sandboxctl session create (--tool T | --profile P [--allow-host H]) [limits] [--idle-timeout D]
               [--max-lifetime D] | session ls | session exec ID [run or exec options] [-- ARGV]
               | session put ID LOCAL [PATH] [--mode 0640] | session get ID PATH [LOCAL] | session close ID
    sandboxctl policy suggest [--since 7d] [--principal P] [--margin 50%] [--audit-file FILE ...]
    sandboxctl grant PRINCIPAL TOOL (--for 2h | --until WHEN) [--params-json JSON] | revoke ID | grants
    limits: --memory 64M --timeout 5s --cpu-time 2s --output-limit 1M --pids N --cpu-share 50%
            --file-size 8M --open-files N --tmpfs-size 16M --network-bytes 10M

``run``/``exec`` stream the handler's stdout/stderr live to sandboxctl's own and exit with its exit code:

    0            OK
    1-255        NONZERO_EXIT: the handler's own exit code
    128+signal   killed: SIGNALED, SECCOMP_VIOLATION (159: SIGSYS), and the limits and cancels that kill the
                 whole sandbox — TIMEOUT, CPU_LIMIT, MEMORY_LIMIT, OUTPUT_LIMIT, NETWORK_LIMIT, CANCELLED
                 (137: SIGKILL)
    125          sandboxctl or the daemon failed, including SETUP_FAILED: nothing ran
 The verdict goes to stderr when it is not OK. With ``--json``
every event is printed as one line of protobuf's JSON mapping, the result last. The socket is
``--socket``, else ``$SANDBOXD_SOCKET``, else /run/sandboxd/sandboxd.sock; ``--framed-socket`` (else
``$SANDBOXD_FRAMED_SOCKET``) sends executions to the daemon's framed socket instead of its gRPC one, the same
calls without HTTP/2, cheaper for a caller on its host; ``--address HOST:PORT`` calls the
TCP listener instead (with ``--tls-ca`` for TLS, plus ``--tls-cert``/``--tls-key`` for mTLS). ``--token``
(else ``$SANDBOXD_TOKEN``) is sent as a bearer token.

Several ``--address`` options, or one ``--address dns:///NAME:PORT``, name a fleet of daemons: calls are
spread over them (gRPC's round_robin), a call refused before it started because a daemon is draining or full
is retried on another, a session's calls go to the daemon its id names, and ``ps``, ``info`` and
``audit tail`` ask every daemon, naming each (see sandboxd/cli/fleet_view.py). Over TLS the daemons'
certificates are checked against one name: the addresses' host, the DNS name, or ``--tls-server-name``.

With ``-i`` (``--interactive``) the handler's stdin is sandboxctl's own, streamed as it comes (after the
``--stdin`` file's bytes, if any); ^C sends the handler SIGINT — a second ^C within 2 s, SIGKILL; a third
leaves — and a SIGTERM to sandboxctl sends it SIGTERM.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import signal
import stat
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from sandboxd.base.units import format_duration, format_size, parse_duration_ms, parse_percent, parse_size_bytes
from sandboxd.cli.audit import AUDIT_COMMANDS, add_audit_commands, cmd_audit_verify
from sandboxd.cli.client import SandboxClient, SandboxdError, TlsFiles, pb
from sandboxd.cli.common import UsageError, addresses_of, to_json_line
from sandboxd.cli.fleet_view import ask_each
from sandboxd.cli.framed import FRAMED_SOCKET_ENV, FRAMED_UNREACHABLE
from sandboxd.cli.grant_commands import GRANT_COMMANDS, add_grant_commands
from sandboxd.cli.interactive import run_interactive
from sandboxd.cli.policy_commands import POLICY_COMMANDS, add_policy_commands
from sandboxd.cli.session_commands import SESSION_COMMANDS, add_session_commands, session_exec_argv

EXIT_SANDBOXCTL_ERROR = 125
_KILLED_EXIT = 128 + signal.SIGKILL


def exit_code_for(result: pb.Result) -> int:
    """The shell's view of a Result: the tool's exit code, 128+signal if killed, 125 if nothing ran."""
    status = pb.Status.Name(result.status)
    if status == "OK":
        return 0
    if status == "SETUP_FAILED" or status == "STATUS_UNSPECIFIED":
        return EXIT_SANDBOXCTL_ERROR
    if result.HasField("signal"):
        return 128 + result.signal
    if result.HasField("exit_code") and 0 < result.exit_code < 256:
        return result.exit_code
    return _KILLED_EXIT  # a limit or a cancel ended it, and it reported no signal of its own


def describe_result(result: pb.Result) -> str:
    status = pb.Status.Name(result.status)
    parts = [f"sandboxctl: {status}: {result.message or status.lower()}"]
    if result.seccomp_syscall_name:
        parts.append(f"(syscall {result.seccomp_syscall_name})")
    if result.setup_stage:
        parts.append(f"(setup stage {result.setup_stage})")
    return " ".join(parts)


# -- arguments ------------------------------------------------------------------------------------------

# option, Limits field, parser, metavar, help; a call may only lower the tool's (or the daemon's) limits
_LIMIT_OPTIONS: tuple[tuple[str, str, Callable[[str], int], str, str], ...] = (
    ("--memory", "memory_max_bytes", parse_size_bytes, "SIZE", "memory limit, e.g. 64M"),
    ("--timeout", "wall_time_ms", parse_duration_ms, "DURATION", "wall time limit, e.g. 5s"),
    ("--cpu-time", "cpu_time_ms", parse_duration_ms, "DURATION", "CPU time limit, e.g. 2s"),
    ("--output-limit", "output_max_bytes", parse_size_bytes, "SIZE", "stdout+stderr limit, e.g. 1M"),
    ("--pids", "pids_max", int, "N", "most processes at once"),
    ("--cpu-share", "cpu_share_percent", parse_percent, "PERCENT", "CPU share, e.g. 50%%"),
    ("--file-size", "file_size_max_bytes", parse_size_bytes, "SIZE", "largest file the handler may write"),
    ("--open-files", "open_files_max", int, "N", "most open descriptors per process (at least 4)"),
    ("--tmpfs-size", "tmpfs_size_bytes", parse_size_bytes, "SIZE", "size of /tmp, /dev/shm and /work"),
    ("--network-bytes", "network_max_bytes", parse_size_bytes, "SIZE",
     "bytes sent + received through the egress proxy"),
)


def _typed(parse: Callable[[str], int], option: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{option}: {exc}") from exc
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{option}: must be positive")
        return value

    return convert


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--socket", default=default, help="daemon socket (default: $SANDBOXD_SOCKET or "
                        "/run/sandboxd/sandboxd.sock)")
    parser.add_argument("--framed-socket", default=default, metavar="PATH",
                        help="the daemon's framed socket ([daemon] framed_socket): executions go there, "
                             "without HTTP/2 (default: $SANDBOXD_FRAMED_SOCKET, else none)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="one JSON object per event/item on stdout (protobuf's JSON mapping)")
    # (a subcommand's own --address options are kept apart and joined to those before it: see addresses_of)
    parser.add_argument("--address", dest="sub_address" if suppress else "address", action="append",
                        default=default, metavar="HOST:PORT",
                        help="call the daemon's TCP listener instead of the socket; repeat it, or give "
                             "dns:///NAME:PORT, for a fleet of daemons")
    parser.add_argument("--tls-server-name", default=default, metavar="NAME",
                        help="the name the daemons' certificates carry, when it is not the address's host")
    parser.add_argument("--token", default=default, help="bearer token (default: $SANDBOXD_TOKEN)")
    for name, help_text in (("ca", "CA certificate (PEM) that signed the daemon's: use TLS"),
                            ("cert", "our client certificate (PEM), for mTLS"), ("key", "its private key")):
        parser.add_argument(f"--tls-{name}", dest=f"tls_{name}", type=Path, default=default, metavar="FILE",
                            help=help_text)


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    for option, dest, parse, metavar, help_text in _LIMIT_OPTIONS:
        parser.add_argument(option, dest=f"limit_{dest}", type=_typed(parse, option), metavar=metavar,
                            help=help_text)


def _add_execution_options(parser: argparse.ArgumentParser) -> None:
    _add_limit_options(parser)
    parser.add_argument("--stdin", type=Path, metavar="FILE",
                        help="file whose bytes are the handler's stdin ('-': ours)")
    parser.add_argument("-i", "--interactive", action="store_true",
                        help="stream our stdin to the handler as it comes; ^C interrupts it, ^C^C kills it")
    parser.add_argument("--session", default="", metavar="ID", help="run in this session (sandboxctl session)")
    parser.add_argument("--request-id", default="", help="your id for this call, echoed in events and ps")
    parser.add_argument("--label", action="append", default=[], metavar="K=V", help="a label (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandboxctl", description=(__doc__ or "").replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a tool")
    _add_common(run, suppress=True)
    run.add_argument("tool")
    run.add_argument("--param", action="append", default=[], metavar="K=V",
                     help="a parameter; V is JSON unless the tool's schema says the parameter is a string")
    run.add_argument("--params-json", metavar="JSON|@FILE", help="all parameters as one JSON object")
    _add_execution_options(run)

    exec_ = commands.add_parser("exec", help="run a raw command (operators)")
    _add_common(exec_, suppress=True)
    exec_.add_argument("--profile", default="", help="seccomp profile name (default: the daemon's)")
    exec_.add_argument("--allow-host", action="append", default=[], metavar="HOST[:PORT]",
                       help="a host it may connect to through the daemon's egress proxy (repeatable; * = labels)")
    _add_execution_options(exec_)
    exec_.add_argument("argv", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...]")

    tools = commands.add_parser("tools", help="list the tools")
    _add_common(tools, suppress=True)
    tools.add_argument("--wide", action="store_true", help="descriptions on one line each, whole")
    for name, help_text in (("ps", "list running executions"),
                            ("info", "show the daemon's version, cgroups, kernel features, defaults")):
        _add_common(commands.add_parser(name, help=help_text), suppress=True)
    cancel = commands.add_parser("cancel", help="cancel a running execution")
    _add_common(cancel, suppress=True)
    cancel.add_argument("execution_id")
    health = commands.add_parser("health", help="ask the standard gRPC health service")
    _add_common(health, suppress=True)
    health.add_argument("--service", default="", help="service name (default: the whole server)")
    _add_common(commands.add_parser("mcp", help="serve the tools over MCP on stdin/stdout (for MCP clients)"),
                suppress=True)
    add_audit_commands(commands, lambda sub: _add_common(sub, suppress=True))
    add_session_commands(commands, lambda sub: _add_common(sub, suppress=True), _add_limit_options)
    add_policy_commands(commands, lambda sub: _add_common(sub, suppress=True))
    add_grant_commands(commands, lambda sub: _add_common(sub, suppress=True))
    return parser


def _key_values(pairs: Sequence[str], option: str) -> list[tuple[str, str]]:
    result = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} expects K=V, got {pair!r}")
        result.append((key, value))
    return result


def _string_params(client: SandboxClient, tool: str) -> set[str]:
    """Names of the tool's parameters whose schema type is string (their --param values stay text)."""
    for item in client.list_tools():
        if item.name == tool:
            properties = json.loads(item.params_schema_json or "{}").get("properties", {})
            return {name for name, schema in properties.items()
                    if isinstance(schema, dict) and schema.get("type") == "string"}
    return set()  # an unknown tool: the daemon will say so


def build_params(args: argparse.Namespace, client: SandboxClient) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params_json:
        text = args.params_json
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text()
            except OSError as exc:
                raise UsageError(f"--params-json: cannot read {text[1:]}: {exc.strerror}") from exc
        try:
            params = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--params-json: not JSON: {exc}") from exc
        if not isinstance(params, dict):
            raise UsageError("--params-json must be a JSON object")
    pairs = _key_values(args.param, "--param")
    strings = _string_params(client, args.tool) if pairs else set()
    for key, value in pairs:
        if key in strings:
            params[key] = value
            continue
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _read_stdin(path: Path | None) -> bytes:
    if path is None:
        return b""
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--stdin: cannot read {path}: {exc.strerror}") from exc


def _limits(args: argparse.Namespace) -> dict[str, int]:
    return {dest: getattr(args, f"limit_{dest}") for _, dest, _, _, _ in _LIMIT_OPTIONS
            if getattr(args, f"limit_{dest}", None) is not None}


# -- output ---------------------------------------------------------------------------------------------

def stream_events(events: Iterator[pb.ExecuteEvent], *, as_json: bool, out: BinaryIO, err: BinaryIO) -> int:
    """Relay events live; return the exit code of the Result (125 if none came)."""
    result: pb.Result | None = None
    for event in events:
        kind = event.WhichOneof("event")
        if as_json:
            out.write(to_json_line(event).encode() + b"\n")
            out.flush()
        elif kind == "output":
            target = out if event.output.stream == pb.STDOUT else err
            target.write(event.output.data)
            target.flush()
        if kind == "result":
            result = event.result
    if result is None:
        err.write(b"sandboxctl: the daemon sent no result\n")
        return EXIT_SANDBOXCTL_ERROR
    if result.status != pb.OK:
        err.write(describe_result(result).encode() + b"\n")
        err.flush()
    return exit_code_for(result)


def _limits_text(limits: pb.Limits) -> str:
    parts = []
    if limits.HasField("memory_max_bytes"):
        parts.append(f"mem {format_size(limits.memory_max_bytes)}")
    if limits.HasField("wall_time_ms"):
        parts.append(f"wall {format_duration(limits.wall_time_ms)}")
    if limits.HasField("cpu_time_ms"):
        parts.append(f"cpu {format_duration(limits.cpu_time_ms)}")
    if limits.HasField("output_max_bytes"):
        parts.append(f"out {format_size(limits.output_max_bytes)}")
    if limits.HasField("pids_max"):
        parts.append(f"pids {limits.pids_max}")
    return ", ".join(parts)


DESCRIPTION_WIDTH = 60


def print_table(rows: list[list[str]], *, wrap_last: int | None = None) -> None:
    """Aligned columns; with ``wrap_last`` the last column is wrapped at word boundaries to that width, its
    continuation lines indented under it (nothing is cut)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        lines = textwrap.wrap(row[-1], wrap_last) if wrap_last and row[-1] else [row[-1]]
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        print("  ".join([*cells, lines[0]]).rstrip())
        indent = " " * (sum(widths) + 2 * len(widths))
        for line in lines[1:]:
            print(indent + line)


# -- commands -------------------------------------------------------------------------------------------

def cmd_run(client: SandboxClient, args: argparse.Namespace) -> int:
    labels = dict(_key_values(args.label, "--label"))
    if args.interactive and args.stdin is not None and str(args.stdin) == "-":
        raise UsageError("-i streams our stdin already: --stdin - would read it twice")
    common = {"stdin": _read_stdin(args.stdin), "limits": _limits(args), "request_id": args.request_id,
              "labels": labels, "session_id": args.session}
    if args.command == "run":
        target: dict[str, Any] = {"tool": args.tool, "params": build_params(args, client)}
    else:
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            raise UsageError("exec needs a command: sandboxctl exec [options] -- PROGRAM [ARGS...]")
        target = {"command": argv, "profile": args.profile, "allow_hosts": args.allow_host}

    def relay(events: Iterator[pb.ExecuteEvent]) -> int:
        return stream_events(events, as_json=args.json, out=sys.stdout.buffer, err=sys.stderr.buffer)

    if args.interactive:
        return run_interactive(client.execute_interactive(**target, **common), relay)
    return relay(client.execute(**target, **common))


def cmd_tools(client: SandboxClient, args: argparse.Namespace) -> int:
    tools = client.list_tools()
    if args.json:
        for tool in tools:
            print(to_json_line(tool))
        return 0
    rows = [["NAME", "PROFILE", "NETWORK", "LIMITS", "DESCRIPTION"]]
    rows += [[t.name, t.seccomp_profile, _network_text(t), _limits_text(t.limits), " ".join(t.description.split())]
             for t in tools]
    print_table(rows, wrap_last=None if args.wide else DESCRIPTION_WIDTH)
    return 0


def _network_text(tool: pb.Tool) -> str:
    """``none``, or the allowlist (``allow: -`` when it is empty: every connection refused)."""
    if tool.network != "allowlist":
        return tool.network or "none"
    return "allow: " + (",".join(tool.network_allow) or "-")


def cmd_ps(client: SandboxClient, args: argparse.Namespace) -> int:
    """The running executions; of a fleet, every daemon's, each row naming its instance."""
    fleet = ask_each(client, lambda daemon: daemon.list_executions())
    if args.json:
        for instance, executions in fleet.answers:
            for item in executions:
                print(to_json_line(item, instance=instance))
    else:
        rows = [[*(["INSTANCE"] if client.is_fleet else []),
                 "ID", "TOOL", "PID", "STARTED", "CPU", "MEMORY", "PRINCIPAL", "REQUEST"]]
        for instance, executions in fleet.answers:
            for item in executions:
                started = item.started_at.ToDatetime().strftime("%H:%M:%S")
                rows.append([*([instance] if client.is_fleet else []),
                             item.execution_id, item.tool or "(command)", str(item.pid or "-"), started,
                             format_duration(item.cpu_usec // 1000), format_size(item.memory_peak_bytes),
                             item.principal, item.request_id])
        print_table(rows)
    fleet.report_failures()
    return fleet.exit_code


def cmd_cancel(client: SandboxClient, args: argparse.Namespace) -> int:
    client.cancel(args.execution_id)
    if args.json:
        print(to_json_line(pb.CancelResponse()))
    return 0


def _uptime_text(seconds: int) -> str:
    """3723 → ``"1h02m03s"``; 42 → ``"42s"``."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def cmd_info(client: SandboxClient, args: argparse.Namespace) -> int:
    """The daemon's facts; of a fleet, each daemon's (a block each, its instance first)."""
    fleet = ask_each(client, lambda daemon: daemon.info())
    for number, (_, info) in enumerate(fleet.answers):
        if args.json:
            print(to_json_line(info))
            continue
        if number:
            print()
        _print_info(info)
    fleet.report_failures()
    return fleet.exit_code


def _pool_text(pool: pb.PoolInfo) -> str:
    if not pool.size:
        return "off"
    return (f"{pool.ready} ready, {pool.building} building ({pool.size} per kind, {pool.kinds} kinds); "
            f"{pool.hits} hits, {pool.misses} misses; {pool.built} built in {pool.build_ms_mean} ms each, "
            f"{pool.failed} failed")


def _print_info(info: pb.GetInfoResponse) -> None:
    features = " ".join(f"{name}={'yes' if on else 'no'}"
                        for name, on in sorted(info.kernel_features.items()))
    uptime = _uptime_text(info.uptime_ms // 1000)
    for key, value in (
        ("version", info.version), ("instance", info.instance),
        ("uptime", f"{uptime} (since {info.started_at.ToDatetime():%Y-%m-%d %H:%M:%S} UTC)"),
        ("config", f"{info.config_source}, loaded {info.config_loaded_at.ToDatetime():%Y-%m-%d %H:%M:%S} UTC"),
        ("you are", f"{info.principal} ({', '.join(info.roles) or 'no roles'})"),
        ("cgroup", f"{info.cgroup_backend} ({info.cgroup_mode}) at {info.cgroup_base}"),
        ("kernel", info.kernel_release), ("features", features),
        ("default limits", _limits_text(info.default_limits)),
        ("executions", f"{info.running_executions} running, at most {info.max_concurrent_executions}; "
                       f"{info.executions_total} finished, {info.denied_total} refused since start"),
        ("max request", format_size(info.max_request_bytes)),
        ("audit log", f"{info.audit_log} (last seq {info.audit_last_seq})"),
        ("draining", "yes" if info.draining else "no"),
        ("pool", _pool_text(info.pool)),
    ):
        print(f"{key + ':':16}{value}")


def cmd_health(client: SandboxClient, args: argparse.Namespace) -> int:
    status = client.health(args.service)
    print(json.dumps({"status": status}) if args.json else status)
    return 0 if status == "SERVING" else 1


def cmd_mcp(client: SandboxClient, args: argparse.Namespace) -> int:
    from sandboxd.cli.mcp_server import serve  # the MCP SDK takes a second to import: only this command pays it

    return serve(client, connect=lambda: make_client(args))  # each tools/call gets a channel of its own


COMMANDS: dict[str, Callable[[SandboxClient, argparse.Namespace], int]] = {
    "run": cmd_run, "exec": cmd_run, "tools": cmd_tools, "ps": cmd_ps, "cancel": cmd_cancel,
    "info": cmd_info, "health": cmd_health, "mcp": cmd_mcp, **GRANT_COMMANDS,
}


def make_client(args: argparse.Namespace) -> SandboxClient:
    addresses = addresses_of(args)
    if args.tls_ca is None and (args.tls_cert is not None or args.tls_key is not None):
        raise UsageError("--tls-cert/--tls-key need --tls-ca (the CA that signed the daemon's certificate)")
    if args.tls_ca is not None and not addresses:
        raise UsageError("TLS is for the TCP listener: name it with --address HOST:PORT")
    tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca is not None else None
    framed_socket = args.framed_socket or os.environ.get(FRAMED_SOCKET_ENV) or None
    if framed_socket is not None and addresses:
        raise UsageError("--framed-socket is the local daemon's, beside its socket: not with --address")
    # (an address wins over the socket, which is then unused)
    return SandboxClient(args.socket, addresses=addresses, token=args.token, tls=tls,
                         tls_server_name=args.tls_server_name, framed_socket=framed_socket)


def unreachable_socket_hint(path: Path, *, named_by: str = "--socket, $SANDBOXD_SOCKET") -> str:
    """Why the daemon's socket cannot be reached, and what to do: it is not there (the daemon is not running,
    or listens elsewhere), or this user may not open it (not in its group)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return (f"no socket at {path}: sandboxd is not running, or listens elsewhere ({named_by}; "
                "systemctl status sandboxd)")
    except PermissionError:
        return f"cannot reach {path}: a directory on the way is closed to this user (use sudo)"
    if not os.access(path, os.R_OK | os.W_OK):
        owner = _name(pwd.getpwuid, st.st_uid)
        group = _name(grp.getgrgid, st.st_gid)
        return (f"permission denied on {path} (owner {owner}:{group}, mode {stat.S_IMODE(st.st_mode):04o}): "
                f"join the group {group} (usermod -aG {group} $USER, then log in again) or use sudo")
    return f"connect to {path} failed: is sandboxd running? (systemctl status sandboxd)"


def _name(lookup: Callable[[int], Any], number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


def main(argv: list[str] | None = None) -> int:
    # ^C cancels a running execution: restore Python's handler even when launched with SIGINT ignored
    # (nohup, CI runners and service managers start children that way, and the ignore is inherited).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    if args.command == "audit" and args.audit_command == "verify":
        return cmd_audit_verify(args)  # reads files; no daemon involved
    if args.command == "session" and args.session_command == "exec":
        try:
            return main(session_exec_argv(args, make_client))  # run/exec --session ID …
        except (UsageError, SandboxdError) as exc:
            print(f"sandboxctl: {exc}", file=sys.stderr)
            return EXIT_SANDBOXCTL_ERROR
    try:
        client = make_client(args)
    except (UsageError, SandboxdError) as exc:
        print(f"sandboxctl: {exc}", file=sys.stderr)
        return EXIT_SANDBOXCTL_ERROR
    try:
        if args.command == "audit":
            return AUDIT_COMMANDS[args.audit_command](client, args)
        if args.command == "session":
            return SESSION_COMMANDS[args.session_command](client, args, _limits(args))
        if args.command == "policy":
            return POLICY_COMMANDS[args.policy_command](client, args)
        return COMMANDS[args.command](client, args)
    except UsageError as exc:
        print(f"sandboxctl: {exc}", file=sys.stderr)
        return EXIT_SANDBOXCTL_ERROR
    except SandboxdError as exc:
        unreachable = exc.code.name == "UNAVAILABLE" and not exc.reason
        framed_socket = client.framed_socket
        if unreachable and framed_socket is not None and exc.message.startswith(FRAMED_UNREACHABLE):
            hint = unreachable_socket_hint(Path(framed_socket), named_by="--framed-socket, "
                                           f"${FRAMED_SOCKET_ENV}, [daemon] framed_socket")
            print(f"sandboxctl: {hint}", file=sys.stderr)
        elif unreachable and client.target.startswith("unix:"):
            print(f"sandboxctl: {unreachable_socket_hint(Path(client.target.removeprefix('unix:')))}",
                  file=sys.stderr)
        else:
            hint = f" (is sandboxd running on {client.target}?)" if unreachable else ""
            print(f"sandboxctl: {exc}{hint}", file=sys.stderr)
        return EXIT_SANDBOXCTL_ERROR
    except KeyboardInterrupt:  # the call is cancelled with the channel: the daemon kills the execution
        return 128 + signal.SIGINT
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
