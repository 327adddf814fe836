"""A framed call's replies, sent a step at a time: what one step of the call yields goes out in one write.

An execution's events come in bursts — Started and its record; the outcome's records, the Result and the
call's status — and each write is a send and a wake-up of the caller, who reads them one by one otherwise.
The outbox keeps the frames a step of the call puts and sends them together when the event loop turns
(``call_soon``), so the caller is woken once per burst. A frame may be *held* for the next one (the Result
waits for the status that ends the call: the caller reads neither alone). Output keeps its flow control:
once ``flush_bytes`` wait they go at once, and :meth:`Outbox.put` returns only once the writer's buffer is
under its limit (``drain``).
"""

from __future__ import annotations

import asyncio

__all__ = ["FLUSH_BYTES", "Outbox"]

FLUSH_BYTES = 64 * 1024  # an output chunk's size: a chunk is sent as it comes, never kept for the loop's turn


class Outbox:
    def __init__(self, writer: asyncio.StreamWriter, *, flush_bytes: int = FLUSH_BYTES) -> None:
        self._writer = writer
        self._flush_bytes = flush_bytes
        self._frames: list[bytes] = []
        self._waiting_bytes = 0
        self._turn: asyncio.Handle | None = None

    async def put(self, frame: bytes, *, hold: bool = False) -> None:
        """Queue ``frame``: sent when the loop turns, with whatever else this step puts; ``hold``: it and those
        before it wait for the next frame put, or :meth:`flush`."""
        self._frames.append(frame)
        self._waiting_bytes += len(frame)
        if self._waiting_bytes >= self._flush_bytes:
            self.flush()
        elif hold:
            self._cancel_turn()
        elif self._turn is None:
            self._turn = asyncio.get_running_loop().call_soon(self.flush)
        await self._writer.drain()  # waits only while the caller is over the writer's limit behind

    def flush(self) -> None:
        """Send what waits, in one write."""
        self._cancel_turn()
        if not self._frames:
            return
        data = self._frames[0] if len(self._frames) == 1 else b"".join(self._frames)
        self.discard()
        if not self._writer.is_closing():  # the caller left: nobody reads it
            self._writer.write(data)

    def discard(self) -> None:
        """Forget what waits (the caller left)."""
        self._cancel_turn()
        self._frames.clear()
        self._waiting_bytes = 0

    def _cancel_turn(self) -> None:
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
