"""Quoting what a caller sent back to it — in status details, metadata and audit records — bounded.

A refusal must reach its caller with its real code: gRPC carries the status message in trailing metadata
(8 KiB by default), so a 900 KB tool name echoed whole turns NOT_FOUND into RESOURCE_EXHAUSTED, and one
such refusal would write megabytes of audit. Everything echoed is cut, and says so.
"""

from __future__ import annotations

ECHO_MAX_CHARS = 200  # one echoed value (a name, an id, a failing value)
MESSAGE_MAX_CHARS = 2000  # a whole status message or audit string


def cut(text: str, max_chars: int = MESSAGE_MAX_CHARS) -> str:
    """``text``, or its first ``max_chars`` characters and a note of how long it was."""
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}… (cut: {len(text)} characters in all)"


def quote(value: object, max_chars: int = ECHO_MAX_CHARS) -> str:
    """``repr(value)`` for a message, at most about ``max_chars`` characters."""
    return cut(repr(value), max_chars)
