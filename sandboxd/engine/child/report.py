"""How a child says where it is and what failed.

Where: each step names itself (:func:`enter`) in the process's ``comm`` (15 bytes, ``/proc/PID/comm``), so a
sandbox that hangs before ``execve`` can be named by the stage it hangs in without any traffic on the way.

What failed: :class:`SetupError` raised, one ``stage\\0errno\\0message`` record written to the close-on-exec
error pipe, exit 127. EOF on that pipe with nothing read means ``execve`` succeeded (CPython's
``_posixsubprocess`` pattern).
"""

from __future__ import annotations

import os

import prctl

REPORT_MAX_BYTES = 4000
COMM_MAX_BYTES = 15


class SetupError(Exception):
    """A step of the child path failed; ``stage`` names it for the SETUP_FAILED report."""

    def __init__(self, stage: str, err: int, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.errno = err


def enter(stage: str) -> str:
    """Name the step about to run in ``/proc/self/comm``; returns ``stage``."""
    prctl.set_name(stage[:COMM_MAX_BYTES])
    return stage


def report(errpipe: int, stage: str, err: int, message: str) -> None:
    try:
        os.write(errpipe, f"{stage}\0{err}\0{message}".encode(errors="replace")[:REPORT_MAX_BYTES])
    except OSError:
        pass
