"""``sandboxctl grant|revoke|grants``: runtime grants (admin), see :mod:`sandboxd.policy.runtime_grants`.

    sandboxctl grant PRINCIPAL TOOL (--for 2h | --until 2026-12-01T18:00:00Z) [--params-json JSON|@FILE]
                     [--reason TEXT]       # prints the grant's id
    sandboxctl revoke GRANT_ID [--reason TEXT]
    sandboxctl grants [--principal P]      # admins: all; others: their own
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sandboxd.base.units import parse_duration_ms
from sandboxd.cli.client import SandboxClient, pb
from sandboxd.cli.common import UsageError, to_json_line


def add_grant_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    grant = commands.add_parser("grant", help="let a principal run a tool until an expiry (admin)")
    add_common(grant)
    grant.add_argument("principal", help='as the daemon names it: "alice", or "jwt:SUB" for a JWT\'s subject')
    grant.add_argument("tool", help="a tool name or glob")
    until = grant.add_mutually_exclusive_group(required=True)
    until.add_argument("--for", dest="ttl", metavar="DURATION", help="how long, e.g. 2h (at most max_ttl)")
    until.add_argument("--until", metavar="WHEN", help="an ISO 8601 time, e.g. 2026-12-01T18:00:00Z")
    grant.add_argument("--params-json", metavar="JSON|@FILE",
                       help="a JSON Schema the params must also satisfy, e.g. "
                            "'{\"properties\": {\"path\": {\"pattern\": \"^reports/\"}}}'")
    grant.add_argument("--reason", default="", help="why (recorded with the grant)")
    revoke = commands.add_parser("revoke", help="end a runtime grant now (admin)")
    add_common(revoke)
    revoke.add_argument("grant_id")
    revoke.add_argument("--reason", default="", help="why (recorded)")
    grants = commands.add_parser("grants", help="list the runtime grants")
    add_common(grants)
    grants.add_argument("--principal", default="", help="only this principal's")


def _expiry(args: argparse.Namespace) -> tuple[int, float | None]:
    if args.ttl is not None:
        try:
            return parse_duration_ms(args.ttl), None
        except ValueError as exc:
            raise UsageError(f"--for: {exc}") from None
    try:
        moment = datetime.fromisoformat(args.until)
    except ValueError:
        raise UsageError(f"--until {args.until!r}: not an ISO 8601 time such as 2026-12-01T18:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return 0, moment.timestamp()


def _constraint(text: str | None) -> str | None:
    if text is None:
        return None
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"--params-json: cannot read {text[1:]}: {exc.strerror}") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--params-json: not JSON: {exc}") from None
    return text


def _when(grant: pb.RuntimeGrant) -> str:
    return datetime.fromtimestamp(grant.expires_at.ToNanoseconds() / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_grant(client: SandboxClient, args: argparse.Namespace) -> int:
    ttl_ms, expires_at = _expiry(args)
    grant = client.grant(args.principal, args.tool, ttl_ms=ttl_ms, expires_at=expires_at,
                         params_constraint=_constraint(args.params_json), reason=args.reason)
    if args.json:
        print(to_json_line(grant))
    else:
        print(grant.grant_id)
    return 0


def cmd_revoke(client: SandboxClient, args: argparse.Namespace) -> int:
    grant = client.revoke(args.grant_id, reason=args.reason)
    if args.json:
        print(to_json_line(grant))
    return 0


def _rows(grants: list[pb.RuntimeGrant]) -> list[list[str]]:
    rows = [["ID", "PRINCIPAL", "TOOL", "EXPIRES", "LEFT", "BY", "PARAMS", "REASON"]]
    now = time.time()
    for grant in grants:
        left_s = max(0, int(grant.expires_at.ToNanoseconds() / 1e9 - now))
        rows.append([grant.grant_id, grant.principal, grant.tool, _when(grant),
                     f"{left_s // 3600}h{left_s % 3600 // 60:02d}m", grant.created_by,
                     "constrained" if grant.params_constraint_json else "-", grant.reason])
    return rows


def cmd_grants(client: SandboxClient, args: argparse.Namespace) -> int:
    grants = client.list_grants(args.principal)
    if args.json:
        for grant in grants:
            print(to_json_line(grant))
        return 0
    rows = _rows(grants)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip())
    return 0


GRANT_COMMANDS: dict[str, Callable[[SandboxClient, argparse.Namespace], int]] = {
    "grant": cmd_grant, "revoke": cmd_revoke, "grants": cmd_grants,
}
