"""What the handler-to-be's launch (``native/launch.c``) reads to start the handler: the search path, the argv and the
environment, as NUL-terminated strings — ``PATH\\0ARGC\\0ARG…\\0KEY=VALUE…\\0`` — so the native side parses
nothing but counts. The daemon writes it to a pooled sandbox's gate; for a sandbox built on the request it is
part of the plan, and the handler-to-be puts it in a memory file for itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def encode_launch(argv: Sequence[str], env: Mapping[str, str]) -> bytes:
    """The launch message; ValueError naming the string that cannot be passed to ``execve`` (a NUL byte, an
    empty argv, a variable name that is empty or holds ``=``)."""
    if not argv:
        raise ValueError("the argv is empty")
    strings = [env.get("PATH", DEFAULT_PATH), str(len(argv)), *argv]
    for key, value in env.items():
        if not key or "=" in key:
            raise ValueError(f"environment variable name {key!r} is empty or holds '='")
        strings.append(f"{key}={value}")
    return nul_terminated(strings, ", which execve cannot pass")


def nul_terminated(strings: list[str], why: str) -> bytes:
    """Each string then a NUL, as UTF-8 (surrogate escapes back to their bytes); ValueError naming a string
    that holds a NUL itself (``why`` ends the message)."""
    text = "\0".join(strings) + "\0" if strings else ""
    if text.count("\0") != len(strings):
        culprit = next(string for string in strings if "\0" in string)
        raise ValueError(f"{culprit[:64]!r} holds a NUL byte{why}")
    return text.encode("utf-8", "surrogateescape")
