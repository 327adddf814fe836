"""What an execution or a session may connect to: the target's allowlist (a tool's ``[network] allow``, a
raw command's ``allow_hosts``), narrowed by the deciding role's, with the byte budget — and how a decision
record names it."""

from __future__ import annotations

from sandboxd.base.echo import ECHO_MAX_CHARS, cut
from sandboxd.base.refusals import InvalidRequest
from sandboxd.egress.allowlist import Allowlist
from sandboxd.egress.events import ExecutionRules
from sandboxd.policy.decisions import Decision


def network_details(rules: ExecutionRules | None) -> dict[str, list[str]] | None:
    """What the decision record says of the network: the allowlist, and the role's narrowing of it."""
    if rules is None:
        return None
    details = {"allow": rules.allow.texts()}
    if rules.narrow is not None:
        details["narrow"] = rules.narrow.texts()
    return details


def network_rules(allow: Allowlist | None, decision: Decision) -> ExecutionRules | None:
    """The target's allowlist, narrowed by the deciding role's (checked at load), with the byte budget."""
    if allow is None:
        return None
    narrow = None if decision.network_allow is None else Allowlist.parse(decision.network_allow)
    return ExecutionRules(allow=allow, narrow=narrow,
                          network_max_bytes=decision.effective_limits.network_max_bytes)


def allow_hosts(items: list[str] | None) -> Allowlist | None:
    """A raw command's ``allow_hosts``: none = no network at all."""
    if not items:
        return None
    try:
        return Allowlist.parse(items)
    except ValueError as exc:
        raise InvalidRequest(f"command.allow_hosts: {cut(str(exc), ECHO_MAX_CHARS)}") from None
