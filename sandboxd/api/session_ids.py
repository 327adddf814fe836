"""Session ids that name their daemon: ``<instance>.<16 hex digits>``, e.g. ``node-a.3f9c0e1d2b4a5968``.

A session lives in one daemon (its sandbox, its ``/work``), so a client of a fleet must send every call of a
session there. The id says where: the daemon's ``[daemon] instance`` (which GetInfo reports), then a dot and
16 random hex digits. An instance may itself hold dots; the random part never does, so the instance is
everything before the last dot. An id without a dot (one made before ids named their daemon) names none.
"""

from __future__ import annotations

import re
import uuid

_RANDOM_HEX_DIGITS = 16
_SESSION_ID = re.compile(rf"^(?P<instance>[A-Za-z0-9][A-Za-z0-9_.-]*)\.[0-9a-f]{{{_RANDOM_HEX_DIGITS}}}$")


def new_session_id(instance: str) -> str:
    """A fresh id for a session of the daemon ``instance``."""
    return f"{instance}.{uuid.uuid4().hex[:_RANDOM_HEX_DIGITS]}"


def daemon_of(session_id: str) -> str | None:
    """The instance a session id names, or None when it names none."""
    match = _SESSION_ID.match(session_id)
    return match.group("instance") if match else None
