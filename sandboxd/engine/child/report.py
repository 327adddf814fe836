"""How a child reports a failed setup step: :class:`SetupError` raised, one ``stage\\0errno\\0message`` record
written to the close-on-exec error pipe, exit 127. EOF on that pipe with nothing read means ``execve``
succeeded (CPython's ``_posixsubprocess`` pattern)."""

from __future__ import annotations

import os

REPORT_MAX_BYTES = 4000


class SetupError(Exception):
    """A step of the child path failed; ``stage`` names it for the SETUP_FAILED report."""

    def __init__(self, stage: str, err: int, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.errno = err


def report(errpipe: int, stage: str, err: int, message: str) -> None:
    try:
        os.write(errpipe, f"{stage}\0{err}\0{message}".encode(errors="replace")[:REPORT_MAX_BYTES])
    except OSError:
        pass
