"""Role conditions: what a caller must be, beyond holding the role, for the role's grants to count.

    [roles.analyst]
    require_claims = { amr = "mfa" }   # each claim of the caller's JWT must equal the value or, when the claim
                                       # is a list, contain it; a caller without a JWT has no claims  MFA_REQUIRED
    clearance = "internal"             # the highest classification (see [policy] classifications) of the
                                       # tools it grants; a tool above it is refused     CLASSIFICATION_DENIED

A role without them has no such condition. Tool labels are checked against the configured classifications at
start and reload (:func:`check_tool_classifications`), so a typo fails there, not at a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sandboxd.base.echo import quote
from sandboxd.base.errors import ConfigError
from sandboxd.base.refusals import ClassificationDenied, MfaRequired, PolicyDenied
from sandboxd.policy.auth import Identity
from sandboxd.policy.config import PolicyConfig, RoleConfig
from sandboxd.policy.settings import Classifications


def has_claim(claims: Mapping[str, object], name: str, value: str) -> bool:
    actual = claims.get(name)
    if isinstance(actual, list):
        return value in actual
    return actual == value


def condition_refusal(role: RoleConfig, identity: Identity, tool: str, classification: str | None,
                      levels: Classifications) -> PolicyDenied | None:
    """Why ``role`` may not grant ``tool`` to ``identity``, or None. ``classification``: the tool's label
    (``""``: none), None when there is no such tool to look at."""
    for name, value in role.require_claims.items():
        if not has_claim(identity.claims, name, value):
            held = (f"its token's {name} claim is {quote(identity.claims.get(name))}" if identity.method == "jwt"
                    else f"it authenticated by {identity.method}, which carries no token claims")
            return MfaRequired(
                f"role {role.name!r} grants tool {quote(tool)} only to callers whose token's {name} claim holds "
                f"{value!r} (sign in again with that: e.g. multi-factor); principal {identity.principal!r}: {held}",
                role=role.name,
            )
    if role.clearance is not None and classification is not None:
        label = levels.effective(classification)
        if levels.rank(label) > levels.rank(role.clearance):
            what = f"classified {label!r}" if classification else f"unclassified (which counts as {label!r})"
            return ClassificationDenied(
                f"tool {quote(tool)} is {what}, above role {role.name!r}'s clearance {role.clearance!r}",
                role=role.name,
            )
    return None


def check_tool_classifications(policy: PolicyConfig, tools: Mapping[str, tuple[str, Path | None]]) -> None:
    """Each tool's label (name → (label, its file)) is one of the configured classifications."""
    levels = policy.classifications
    for name, (label, source) in tools.items():
        if label and label not in levels.levels:
            raise ConfigError(f"{source or name}: classification: {label!r} is not one of the classifications "
                              f"({', '.join(levels.levels)}; [policy] classifications of {policy.source})")
