"""The ``[policy]`` table: what the policy knows beyond roles and principals. Every key, with its default::

    [policy]
    classifications = ["public", "internal", "confidential", "restricted"]  # lowest first: a tool's
                                         # classification label, a role's clearance, are one of these
    unclassified = "restricted"          # what a tool without a label counts as; default: the highest

    [policy.grants]                      # runtime grants (sandboxd.policy.runtime_grants)
    max_ttl = "24h"                      # an expiry is required, and at most this far ahead
    max_per_principal = 32               # live runtime grants of one principal
    max_total = 1000                     # of all principals

A file's ``[policy]`` keys override the embedded ones one by one. The risk assessor (``[policy.risk]``) has a
table of its own, parsed by :mod:`sandboxd.policy.risk_config`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sandboxd.base.toml import TomlTable
from sandboxd.base.units import parse_positive_duration_ms

DEFAULT_CLASSIFICATIONS = ("public", "internal", "confidential", "restricted")
_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Classifications:
    """Ordered labels, lowest first; ``unclassified``: the label of a tool that has none."""

    levels: tuple[str, ...] = DEFAULT_CLASSIFICATIONS
    unclassified: str = DEFAULT_CLASSIFICATIONS[-1]

    def rank(self, label: str) -> int:
        """The place of ``label`` (``""``: ``unclassified``'s); ValueError for a label not configured."""
        return self.levels.index(label or self.unclassified)

    def effective(self, label: str) -> str:
        return label or self.unclassified


def parse_classifications(table: TomlTable, default: Classifications) -> Classifications:
    """``classifications`` and ``unclassified`` from ``table`` (the ``[policy]`` table), over ``default``."""
    levels = default.levels
    if table.has("classifications"):
        levels = table.take_str_list("classifications")
        if not levels:
            raise table.error("classifications", "needs at least one label, lowest first")
        for label in levels:
            if not _LABEL.match(label):
                raise table.error("classifications", f"{label!r} is not a label (lowercase letters, digits, "
                                                     "'_', '-')")
        if len(set(levels)) != len(levels):
            raise table.error("classifications", f"{list(levels)} names a label twice")
    fallback = default.unclassified if default.unclassified in levels else levels[-1]
    unclassified = table.take_str("unclassified", fallback)
    if unclassified not in levels:
        raise table.error("unclassified", f"{unclassified!r} is not one of classifications ({', '.join(levels)})")
    return Classifications(levels, unclassified)


@dataclass(frozen=True)
class RuntimeGrantsConfig:
    max_ttl_ms: int = 24 * 3600 * 1000
    max_per_principal: int = 32
    max_total: int = 1000


def parse_grants_config(table: TomlTable, default: RuntimeGrantsConfig) -> RuntimeGrantsConfig:
    """The ``[policy.grants]`` table over ``default``."""
    max_ttl_ms = table.take_parsed("max_ttl", default.max_ttl_ms, parse_positive_duration_ms)
    per_principal = table.take_int("max_per_principal", default.max_per_principal, minimum=1, maximum=10_000)
    total = table.take_int("max_total", default.max_total, minimum=1, maximum=1_000_000)
    table.finish()
    return RuntimeGrantsConfig(max_ttl_ms, per_principal, total)
