"""``sandboxctl policy suggest``: least-privilege roles from the audit trail (see :mod:`sandboxd.policy.suggest`).

    sandboxctl policy suggest [--since 7d] [--principal P ...] [--margin 50%] [--audit-file FILE ...]
                              [--assessor [--config /etc/sandboxd/sandboxd.toml]]

It reads the trail from the daemon (``SubscribeAudit``, admin only), or with ``--audit-file`` from audit files
(the active one and rotated ones, in any order; no daemon needed), and prints TOML roles on stdout. The roles
need no model; with ``--assessor`` the chat-completions endpoint of the daemon's ``[policy.risk]`` is asked to
comment on anomalies, and its answer is printed as comments above the roles (an assessor that fails leaves a
warning on stderr, and the roles are printed all the same).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sandboxd.audit.reader import chain_order, iter_records
from sandboxd.audit.record import MalformedRecord
from sandboxd.base.errors import ConfigError
from sandboxd.base.toml import TomlTable, read_toml
from sandboxd.base.units import parse_duration_ms, parse_percent
from sandboxd.cli.audit import parse_since
from sandboxd.cli.client import SandboxClient
from sandboxd.cli.common import UsageError
from sandboxd.policy.assessors import AssessorError, ChatCompletionsAssessor, load_api_key
from sandboxd.policy.risk_config import parse_risk
from sandboxd.policy.suggest import DEFAULT_MARGIN, REVIEW_PROMPT, Observed, as_comments, observe, suggest_toml, summary

SUGGEST_EVENTS = ("execution.finished", "decision")
DEFAULT_CONFIG = Path("/etc/sandboxd/sandboxd.toml")


def add_policy_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_common: Callable[[argparse.ArgumentParser], None],
) -> None:
    policy = commands.add_parser("policy", help="policy tools: suggest least-privilege roles from the audit")
    sub = policy.add_subparsers(dest="policy_command", required=True, metavar="POLICY_COMMAND")
    suggest = sub.add_parser("suggest", help="TOML roles granting each principal what it actually used")
    add_common(suggest)
    suggest.add_argument("--since", default="7d", metavar="WHEN",
                         help="from this ISO 8601 time or age (90m, 12h, 7d; default 7d)")
    suggest.add_argument("--principal", action="append", default=[], help="only this principal (repeatable)")
    suggest.add_argument("--margin", default=f"{round(DEFAULT_MARGIN * 100)}%", metavar="PERCENT",
                         help="ceilings this much above the peaks seen (default 50%%)")
    suggest.add_argument("--audit-file", action="append", default=[], type=Path, metavar="FILE",
                         help="read these audit files instead of asking the daemon (repeatable)")
    suggest.add_argument("--assessor", action="store_true",
                         help="ask the chat-completions assessor of the daemon's [policy.risk] to comment on anomalies")
    suggest.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                         help=f"the daemon's configuration, for --assessor (default {DEFAULT_CONFIG})")
    suggest.add_argument("--assessor-timeout", default="60s", metavar="DURATION",
                         help="how long --assessor may take (default 60s)")


def _from_files(files: list[Path], since: float) -> Iterator[Mapping[str, Any]]:
    try:
        for record in iter_records(chain_order(files), since=since):
            yield record.fields()
    except OSError as exc:
        raise UsageError(f"--audit-file: {exc.filename}: {exc.strerror}") from None
    except MalformedRecord as exc:
        raise UsageError(f"--audit-file: {exc}") from None


def _from_daemon(client: SandboxClient, principals: list[str], since: float) -> Iterator[Mapping[str, Any]]:
    for event in client.subscribe_audit(principals=principals, events=SUGGEST_EVENTS, since=since):
        yield json.loads(event.record_json)


def cmd_policy_suggest(client: SandboxClient, args: argparse.Namespace) -> int:
    try:
        margin = parse_percent(args.margin) / 100
    except ValueError as exc:
        raise UsageError(f"--margin: {exc}") from None
    since = parse_since(args.since)
    if args.audit_file:
        wanted = set(args.principal)
        records: Iterator[Mapping[str, Any]] = (
            record for record in _from_files(args.audit_file, since)
            if record.get("event") in SUGGEST_EVENTS and (not wanted or record.get("principal") in wanted))
    else:
        records = _from_daemon(client, args.principal, since)
    observed = observe(records)
    if args.assessor:
        review = _review(observed, args.config, args.assessor_timeout)
        if review:
            print("# What the assessor's model makes of it (a comment to weigh, not a decision):")
            print(as_comments(review, "#   "), end="")
    print(suggest_toml(observed, margin=margin), end="")
    return 0


def _chat_assessor(config_path: Path) -> ChatCompletionsAssessor:
    """The chat-completions assessor ``[policy.risk]`` of the daemon's configuration names."""
    try:
        top = read_toml(config_path)
        settings = top.get("policy", {}).get("risk") if isinstance(top.get("policy"), dict) else None
        if not isinstance(settings, dict):
            raise UsageError(f"--assessor: {config_path} has no [policy.risk] table")
        config = parse_risk(TomlTable(settings, file=config_path, prefix="policy.risk"))
        if config.assessor != "chat-completions":
            raise UsageError(f"--assessor: {config_path}: policy.risk.assessor is {config.assessor!r}; comments "
                             "need \"chat-completions\"")
        key = load_api_key(config.api_key_file) if config.api_key_file is not None else ""
    except ConfigError as exc:
        raise UsageError(f"--assessor: {exc.message}") from None
    except ValueError as exc:
        raise UsageError(f"--assessor: {config_path}: policy.risk.api_key_file: {exc}") from None
    return ChatCompletionsAssessor(config, key)


def _review(observed: Observed, config_path: Path, timeout_text: str) -> str:
    """The model's comments on ``observed``; "" (and a warning on stderr) when it gives none."""
    try:
        timeout_s = parse_duration_ms(timeout_text) / 1000
    except ValueError as exc:
        raise UsageError(f"--assessor-timeout: {exc}") from None
    assessor = _chat_assessor(config_path)
    body = assessor.request_body(summary(observed))
    body["messages"][0]["content"] = REVIEW_PROMPT
    body.pop("response_format", None)  # plain text, not a JSON assessment

    async def ask() -> str:
        async with asyncio.timeout(timeout_s):
            return await assessor.complete(body)

    try:
        return asyncio.run(ask())
    except (AssessorError, TimeoutError) as exc:
        print(f"sandboxctl: the assessor gave no comment: {exc or 'no answer in time'}", file=sys.stderr)
        return ""


POLICY_COMMANDS: dict[str, Callable[[SandboxClient, argparse.Namespace], int]] = {
    "suggest": cmd_policy_suggest,
}
