"""How an execution is ended from outside, and why: a cancel token that carries its reason.

A plain :class:`asyncio.Event` handed to :meth:`Executor.execute` ends the execution CANCELLED once set; a
:class:`StopToken` may say another reason — NETWORK_LIMIT, when the egress proxy saw the byte budget spent.
The first reason is the one reported, whoever sets it later.
"""

from __future__ import annotations

import asyncio

from sandboxd.engine.result import Status


class StopToken(asyncio.Event):
    def __init__(self) -> None:
        super().__init__()
        self.reason = Status.CANCELLED
        self.message: str | None = None  # the Result's message, when the status alone does not say enough

    def stop(self, reason: Status = Status.CANCELLED, message: str | None = None) -> None:
        if not self.is_set():
            self.reason, self.message = reason, message
        self.set()


def stop_reason(token: asyncio.Event) -> tuple[Status, str | None]:
    """Why ``token`` (once set) ends an execution: CANCELLED for a plain event."""
    if isinstance(token, StopToken):
        return token.reason, token.message
    return Status.CANCELLED, None
