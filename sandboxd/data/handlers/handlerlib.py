"""What every shipped handler shares: how params arrive, and how a handler fails.

The handler protocol: stdin starts with the params as one line of JSON (already validated against the
tool's schema by the daemon); whatever follows that line is the caller's own stdin. Handlers run as an
unprivileged uid inside the sandbox under the system ``/usr/bin/python3``, with the standard library only.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

EXIT_USAGE = 2


def read_params() -> dict[str, Any]:
    """The params line; the rest of stdin stays unread in ``sys.stdin`` for the handler."""
    line = sys.stdin.buffer.readline()
    if not line.endswith(b"\n"):
        fail("no params line on stdin (is this running under sandboxd?)")
    params = json.loads(line)
    if not isinstance(params, dict):
        fail("params must be a JSON object")
    return params


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False, indent=None, separators=(", ", ": "))
    sys.stdout.write("\n")
