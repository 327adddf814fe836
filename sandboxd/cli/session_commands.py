"""``sandboxctl session``: create a sandbox that lives across calls, run in it, move files in and out of its
``/work``, list and close sessions. ``session exec ID …`` is ``run --session ID TOOL …`` for a tool session
and ``exec --session ID … -- ARGV`` for a command session (``-i`` included)."""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

from sandboxd.base.units import format_duration, format_size, parse_duration_ms
from sandboxd.cli.client import SandboxClient, pb
from sandboxd.cli.common import UsageError, addresses_of, to_json_line
from sandboxd.cli.sessions import Session, list_sessions

AddOptions = Callable[[argparse.ArgumentParser], None]


def add_session_commands(commands: argparse._SubParsersAction, add_common: AddOptions,  # type: ignore[type-arg]
                         add_limits: AddOptions) -> None:
    session = commands.add_parser("session", help="sandboxes that live across calls: create, exec, put, get …")
    sub = session.add_subparsers(dest="session_command", required=True, metavar="SESSION_COMMAND")
    create = sub.add_parser("create", help="a new session; prints its id")
    create.add_argument("--tool", help="the tool its calls run (else: raw commands, for operators)")
    create.add_argument("--profile", default="", help="a command session's seccomp profile")
    create.add_argument("--allow-host", action="append", default=[], metavar="HOST[:PORT]",
                        help="a command session's network allowlist (repeatable)")
    create.add_argument("--idle-timeout", type=parse_duration_ms, default=0, metavar="DURATION")
    create.add_argument("--max-lifetime", type=parse_duration_ms, default=0, metavar="DURATION")
    add_limits(create)
    exec_ = sub.add_parser("exec", help="run in a session: [run options] for its tool, or [exec options] -- ARGV")
    exec_.add_argument("session_id")
    exec_.add_argument("rest", nargs=argparse.REMAINDER)
    put = sub.add_parser("put", help="copy a local file (or '-': stdin) into the session's /work")
    put.add_argument("session_id")
    put.add_argument("local")
    put.add_argument("path", nargs="?", help="below /work (default: the local file's name)")
    put.add_argument("--mode", type=lambda text: int(text, 8), default=0, help="permission bits, e.g. 0640")
    get = sub.add_parser("get", help="copy a file of the session's /work out (to LOCAL, or stdout)")
    get.add_argument("session_id")
    get.add_argument("path")
    get.add_argument("local", nargs="?", default="-")
    close = sub.add_parser("close", help="end a session: its processes, /work and cgroup are gone")
    close.add_argument("session_id")
    sub.add_parser("ls", help="your open sessions (admins: all)")
    for parser in (create, exec_, put, get, close, sub.choices["ls"]):
        add_common(parser)


def session_exec_argv(args: argparse.Namespace, make_client: Callable[[argparse.Namespace], SandboxClient]
                      ) -> list[str]:
    """``session exec ID REST`` as the run/exec command line it stands for."""
    common = _common_argv(args)
    with make_client(args) as client:
        found = [s for s in list_sessions(client) if s.session_id == args.session_id]
    if not found:
        raise UsageError(f"no open session {args.session_id!r} of yours; `sandboxctl session ls` lists them")
    rest = list(args.rest)
    if found[0].tool:
        return ["run", *common, "--session", args.session_id, found[0].tool, *rest]
    return ["exec", *common, "--session", args.session_id, *rest]


def _common_argv(args: argparse.Namespace) -> list[str]:
    """The connection options given (socket, addresses, token, TLS files and name), to pass on."""
    argv = []
    for address in addresses_of(args):
        argv += ["--address", address]
    for option in ("socket", "token", "tls_ca", "tls_cert", "tls_key", "tls_server_name"):
        value = getattr(args, option, None)
        if value:
            argv += ["--" + option.replace("_", "-"), str(value)]
    return argv


def cmd_create(client: SandboxClient, args: argparse.Namespace, limits: dict[str, int]) -> int:
    session = Session.create(client, tool=args.tool, profile=args.profile, allow_hosts=args.allow_host,
                             limits=limits or None, idle_timeout_ms=args.idle_timeout,
                             max_lifetime_ms=args.max_lifetime)
    print(to_json_line(session.message) if args.json else session.session_id)
    return 0


def cmd_ls(client: SandboxClient, args: argparse.Namespace, _limits: dict[str, int]) -> int:
    sessions = list_sessions(client)
    if args.json:
        for item in sessions:
            print(to_json_line(item))
        return 0
    rows = [["ID", "TOOL", "PRINCIPAL", "CALLS", "RUNNING", "MEMORY", "IDLE AFTER", "CREATED"]]
    for item in sessions:
        rows.append([item.session_id, item.tool or "(command)", item.principal, str(item.executions),
                     str(item.running), format_size(item.limits.memory_max_bytes),
                     format_duration(item.idle_timeout_ms), item.created_at.ToDatetime().strftime("%H:%M:%S")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_put(client: SandboxClient, args: argparse.Namespace, _limits: dict[str, int]) -> int:
    data = sys.stdin.buffer.read() if args.local == "-" else Path(args.local).read_bytes()
    path = args.path or ("stdin" if args.local == "-" else Path(args.local).name)
    info = Session(client, pb.Session(session_id=args.session_id)).put_file(path, data, mode=args.mode)
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise UsageError(f"the daemon wrote {info.sha256}, not the SHA-256 of what was sent")
    print(to_json_line(info) if args.json else f"/work/{info.path} {info.size_bytes} bytes sha256 {info.sha256}")
    return 0


def cmd_get(client: SandboxClient, args: argparse.Namespace, _limits: dict[str, int]) -> int:
    data, info = Session(client, pb.Session(session_id=args.session_id)).get_file(args.path)
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise UsageError(f"received {len(data)} bytes whose SHA-256 is not the daemon's {info.sha256}")
    if args.local == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(args.local).write_bytes(data)
        print(f"{args.local} {info.size_bytes} bytes sha256 {info.sha256}", file=sys.stderr)
    return 0


def cmd_close(client: SandboxClient, args: argparse.Namespace, _limits: dict[str, int]) -> int:
    Session(client, pb.Session(session_id=args.session_id)).close()
    return 0


SESSION_COMMANDS: dict[str, Callable[[SandboxClient, argparse.Namespace, dict[str, int]], int]] = {
    "create": cmd_create, "ls": cmd_ls, "put": cmd_put, "get": cmd_get, "close": cmd_close,
}
