"""The ``python`` tool: run a Python snippet; what it prints is the tool's output.

Params: ``code`` (the snippet), ``args`` (its ``sys.argv[1:]``). The snippet's stdin is the caller's stdin.
It runs in this very interpreter as ``__main__`` (no second exec), and its exit status is the tool's: an
uncaught exception prints the traceback (without this runner's frames) and exits 1, like ``python -c``.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandboxd.data.handlers.handlerlib import read_params
else:  # in the sandbox the handlers directory is all there is: import the helper beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from handlerlib import read_params


def main() -> None:
    params = read_params()
    code = params["code"]
    sys.argv = ["-c", *params.get("args", [])]
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        compiled = compile(code, "<snippet>", "exec")
    except SyntaxError:
        traceback.print_exc(limit=0)
        sys.exit(1)
    try:
        exec(compiled, namespace)
    except SystemExit:
        raise
    except BaseException as exc:  # the snippet's own error: report it as python -c would
        sys.stdout.flush()
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, tb)
        sys.exit(1)


if __name__ == "__main__":
    main()
