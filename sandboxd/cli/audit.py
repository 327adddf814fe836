"""``sandboxctl audit``: read the daemon's audit trail, and verify audit files offline.

    sandboxctl audit tail [-n N] [-f] [--principal P] [--tool T] [--event E]
    sandboxctl audit export --since WHEN [filters]     # JSON lines, exactly as the log stores them
    sandboxctl audit verify [--key-file FILE] FILE...  # exit 1 at the first bad record

``tail`` and ``export`` ask the daemon (``SubscribeAudit``, admin only); what ``export`` prints is the stored
records verbatim, so ``audit verify`` checks an export like the file itself. ``verify`` reads files and
needs no daemon: given rotated files and the active one in any order, it checks them in chain order.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sandboxd.audit.config import load_hmac_key
from sandboxd.audit.verify import ChainBroken, chain_order, verify_files
from sandboxd.base.errors import ConfigError
from sandboxd.base.units import parse_duration_ms
from sandboxd.cli.client import SandboxClient, pb
from sandboxd.cli.common import UsageError

EXIT_CHAIN_BROKEN = 1
EXIT_UNREADABLE = 2
_DAY_S = 86_400


def add_audit_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    audit = commands.add_parser("audit", help="the audit trail: tail, export, verify")
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")
    tail = sub.add_parser("tail", help="the last records, then (-f) new ones as they come")
    tail.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="stored records to show first")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    export = sub.add_parser("export", help="stored records as JSON lines, exactly as the log keeps them")
    export.add_argument("--since", required=True, metavar="WHEN",
                        help="an ISO 8601 time (2026-11-21T08:00:00Z) or an age (90m, 12h, 7d)")
    for parser in (tail, export):
        add_common(parser)
        parser.add_argument("--principal", action="append", default=[], help="only this principal (repeatable)")
        parser.add_argument("--tool", action="append", default=[], help="only this tool (repeatable)")
        parser.add_argument("--event", action="append", default=[],
                            help="only this event, or prefix such as 'execution.' (repeatable)")
    verify = sub.add_parser("verify", help="check the hash chain of audit files (no daemon needed)")
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE")
    verify.add_argument("--key-file", type=Path, help="the daemon's audit.key_file, when the log uses HMAC")


def parse_since(text: str, *, now: float | None = None) -> float:
    """``WHEN`` as a UNIX time: an ISO 8601 time (UTC unless it says otherwise) or an age before now."""
    now = time.time() if now is None else now
    if text.endswith("d") and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * _DAY_S
    try:
        return now - parse_duration_ms(text) / 1000
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {text!r}: neither an ISO 8601 time nor an age such as 90m, 12h, 7d") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return moment.timestamp()


# Left out of the one-line view (``--json`` has everything): long, or already shown in a column.
_TERSE_SKIP = frozenset({"limits", "seccomp_profile_sha256", "outcome"})


def _describe(event: pb.AuditEvent) -> str:
    when = event.time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    details = json.loads(event.details_json or "{}")
    facts = " ".join(f"{key}={value}" for key, value in sorted(details.items())
                     if key not in _TERSE_SKIP and value not in (None, "", False))
    who = event.principal or "-"
    subject = " ".join(part for part in (event.tool, event.execution_id, event.outcome) if part)
    return f"{event.seq:>8} {when} {event.event:<26} {who:<16} {subject} {facts}".rstrip()


def _print_records(events: object, *, as_json: bool) -> int:
    for event in events:  # type: ignore[attr-defined]
        print(event.record_json if as_json else _describe(event), flush=True)
    return 0


def cmd_audit_tail(client: SandboxClient, args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise UsageError("-n must not be negative")
    events = client.subscribe_audit(principals=args.principal, tools=args.tool, events=args.event,
                                    last=args.lines, follow=args.follow)
    return _print_records(events, as_json=args.json)


def cmd_audit_export(client: SandboxClient, args: argparse.Namespace) -> int:
    events = client.subscribe_audit(principals=args.principal, tools=args.tool, events=args.event,
                                    since=parse_since(args.since))
    return _print_records(events, as_json=True)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    try:
        key = load_hmac_key(args.key_file) if args.key_file is not None else None
    except ConfigError as error:
        print(f"sandboxctl: {error.message}", file=sys.stderr)
        return EXIT_UNREADABLE
    files = chain_order(args.files)
    try:
        report = verify_files(files, hmac_key=key)
    except ChainBroken as broken:
        print(f"sandboxctl: audit chain broken at seq {broken.seq}: {broken.why} "
              f"({broken.file}, line {broken.line_no})", file=sys.stderr)
        return EXIT_CHAIN_BROKEN
    except OSError as exc:
        print(f"sandboxctl: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_UNREADABLE
    print(report.summary())
    return 0


AUDIT_COMMANDS: dict[str, Callable[[SandboxClient, argparse.Namespace], int]] = {
    "tail": cmd_audit_tail, "export": cmd_audit_export,
}
