"""``sandboxctl run -i`` and ``exec -i``: our stdin becomes the handler's as it comes, and ^C reaches it::

    our stdin ── reader thread, os.read of up to 64 KiB ──▶ the handler's stdin;  its end ──▶ the handler's EOF
    ^C (SIGINT) ──▶ INTERRUPT;  ^C again within 2 s ──▶ KILL;  a third ──▶ sandboxctl leaves (the daemon kills it)
    SIGTERM     ──▶ TERMINATE
    the events  ──▶ relayed as run and exec relay them, with the same exit codes

No terminal mode is changed: a terminal still hands over whole lines, and ^D at the start of one is EOF.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from sandboxd.cli.client import Interactive, pb

READ_BYTES = 64 * 1024
KILL_WITHIN_S = 2.0  # a second ^C this soon after the first kills the handler


class _Forwarder:
    """Our SIGINT and SIGTERM, turned into signals for the handler while the call runs."""

    def __init__(self, call: Interactive) -> None:
        self._call = call
        self._last_interrupt_at = -KILL_WITHIN_S
        self._interrupts = 0  # ^C presses in a row, each within KILL_WITHIN_S of the one before
        self._previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def __enter__(self) -> _Forwarder:
        self._previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGTERM:
            self._send("TERMINATE")
            return
        now = time.monotonic()
        in_a_row = now - self._last_interrupt_at < KILL_WITHIN_S
        self._interrupts = self._interrupts + 1 if in_a_row else 1
        self._last_interrupt_at = now
        if self._interrupts == 1:
            self._send("INTERRUPT", f"^C again within {KILL_WITHIN_S:g}s kills it")
        elif self._interrupts == 2:
            self._send("KILL", "^C once more leaves it to the daemon to end")
        else:
            raise KeyboardInterrupt  # the call is cancelled: the daemon kills what is left

    def _send(self, name: str, hint: str = "") -> None:
        self._call.signal(name)
        if hint and sys.stderr.isatty():
            sys.stderr.write(f"\nsandboxctl: sent {name} ({hint})\n")
            sys.stderr.flush()


def pump_stdin(call: Interactive, fd: int) -> None:
    """Send what ``fd`` yields as it comes (not line by line), then EOF."""
    try:
        while data := os.read(fd, READ_BYTES):
            call.send(data)
    except OSError:  # our stdin broke (EIO from a terminal gone away): that is its end too
        pass
    finally:
        call.close_stdin()


def run_interactive(call: Interactive, relay: Callable[[Iterator[pb.ExecuteEvent]], int], *,
                    stdin_fd: int = 0) -> int:
    """Drive ``call`` with our stdin and signals; ``relay`` prints its events and returns the exit code."""
    with call, _Forwarder(call):
        # A daemon thread: a terminal may never say EOF, and the call's end must not wait for it.
        threading.Thread(target=pump_stdin, args=(call, stdin_fd), name="sandboxctl-stdin", daemon=True).start()
        return relay(call.events())
