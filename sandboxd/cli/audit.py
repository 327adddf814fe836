"""``sandboxctl audit``: read the daemon's audit trail, and verify audit files offline.

    sandboxctl audit tail [-n N] [-f] [--principal P] [--tool T] [--event E]
    sandboxctl audit export --since WHEN [filters]     # JSON lines, exactly as the log stores them
    sandboxctl audit verify [--key-file FILE] [--anchors FILE] FILE...|DIR...  # exit 1 at a bad record

``tail`` and ``export`` ask the daemon (``SubscribeAudit``, admin only); what ``export`` prints is the stored
records verbatim, so ``audit verify`` checks an export like the file itself. ``verify`` reads files and
needs no daemon: given rotated files and the active one in any order, it checks them in chain order. Given
directories — each daemon of a fleet keeps its own chain — it checks each chain in them and names each by the
instance that wrote it. With ``--anchors`` (what the daemons shipped to ``[audit] anchor``), a chain must
also reach its instance's last anchor, with the same hash: records cut off the end show.

With several daemons (``--address`` repeated, or ``dns:///``), ``tail`` shows every daemon's records, each
line starting with its instance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from sandboxd.audit.anchor import last_anchors
from sandboxd.audit.config import load_hmac_key
from sandboxd.audit.verify import ChainBroken, Why, chains_of, verify_files
from sandboxd.base.errors import ConfigError
from sandboxd.base.units import parse_duration_ms
from sandboxd.cli.client import SandboxClient, SandboxdError, pb
from sandboxd.cli.common import UsageError
from sandboxd.cli.fleet_view import EXIT_INCOMPLETE, ask_each, follow_each

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
    verify = sub.add_parser("verify", help="check the hash chains of audit files (no daemon needed)")
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE|DIR",
                        help="the files of one chain, or directories: each a daemon's audit directory")
    verify.add_argument("--key-file", type=Path, help="the daemon's audit.key_file, when the log uses HMAC")
    verify.add_argument("--anchors", type=Path, metavar="FILE",
                        help="the anchors the daemons shipped ([audit] anchor): a chain must reach its last one")


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
    """The last records (then, with -f, new ones); of a fleet, every daemon's, each line naming its instance —
    merged in time order, or as they come with -f."""
    if args.lines < 0:
        raise UsageError("-n must not be negative")

    def records(daemon: SandboxClient) -> Iterator[pb.AuditEvent]:
        return daemon.subscribe_audit(principals=args.principal, tools=args.tool, events=args.event,
                                      last=args.lines, follow=args.follow)

    if not client.is_fleet:
        return _print_records(records(client), as_json=args.json)
    if args.follow:
        incomplete = False
        for instance, item in follow_each(client, records):
            if isinstance(item, SandboxdError):
                print(f"sandboxctl: {instance}: {item}", file=sys.stderr)
                incomplete = True
            else:
                print(_fleet_line(instance, item, as_json=args.json), flush=True)
        return EXIT_INCOMPLETE if incomplete else 0
    fleet = ask_each(client, lambda daemon: list(records(daemon)))
    merged = sorted(((event.time.ToNanoseconds(), instance, event.seq, event)
                     for instance, events in fleet.answers for event in events), key=lambda item: item[:3])
    for _, instance, _, event in merged:
        print(_fleet_line(instance, event, as_json=args.json))
    fleet.report_failures()
    return fleet.exit_code


def _fleet_line(instance: str, event: pb.AuditEvent, *, as_json: bool) -> str:
    """One record of a fleet's: ``{"instance": …, "record": <the stored line>}``, or the one-line view after
    the instance."""
    if as_json:
        return f'{{"instance":{json.dumps(instance)},"record":{event.record_json}}}'
    return f"{instance} {_describe(event)}"


def cmd_audit_export(client: SandboxClient, args: argparse.Namespace) -> int:
    if client.is_fleet:
        raise UsageError("audit export prints one daemon's chain, verbatim: name one daemon (one --address)")
    events = client.subscribe_audit(principals=args.principal, tools=args.tool, events=args.event,
                                    since=parse_since(args.since))
    return _print_records(events, as_json=True)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """One chain (the files given): its summary, or where it breaks on stderr. Several (directories, a
    fleet's): a line per chain naming its instance, ``ok: …`` or ``BROKEN at seq …``. Exit 1 if any is
    broken, 2 if a file, the key or the anchors cannot be read."""
    try:
        key = load_hmac_key(args.key_file) if args.key_file is not None else None
        anchors = last_anchors(args.anchors) if args.anchors is not None else None
    except ConfigError as error:
        print(f"sandboxctl: {error.message}", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        chains = chains_of(args.files)
    except OSError as exc:
        print(f"sandboxctl: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_UNREADABLE
    status = 0
    for label, files in chains:
        try:
            report = verify_files(files, hmac_key=key, anchors=anchors)
        except ChainBroken as broken:
            where = f"{broken.why}" + (f": {broken.detail}" if broken.why in _ANCHOR_WHYS else "")
            if len(chains) == 1:
                print(f"sandboxctl: audit chain broken at seq {broken.seq}: {where} "
                      f"({broken.file}, line {broken.line_no})", file=sys.stderr)
            else:
                print(f"{broken.instance or label}: BROKEN at seq {broken.seq}: {where} "
                      f"({broken.file}, line {broken.line_no})")
            status = max(status, EXIT_CHAIN_BROKEN)
            continue
        except OSError as exc:
            print(f"sandboxctl: {exc.filename}: {exc.strerror}", file=sys.stderr)
            status = EXIT_UNREADABLE
            continue
        unanchored = anchors is not None and report.anchor is None
        note = f" (no anchor of instance {report.instance or '?'})" if unanchored else ""
        print(report.summary() + note if len(chains) == 1 else f"{report.instance or label}: {report.summary()}{note}")
    return status


_ANCHOR_WHYS = frozenset({Why.CUT_OFF, Why.ANCHOR_MISMATCH})


AUDIT_COMMANDS: dict[str, Callable[[SandboxClient, argparse.Namespace], int]] = {
    "tail": cmd_audit_tail, "export": cmd_audit_export,
}
