"""The framed socket's outbox over a real Unix socket pair: a step's frames reach the caller in one write once
the loop turns, a held frame waits for the next, output goes at once and keeps its flow control."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from sandboxd.server.outbox import Outbox

Scenario = Callable[[Outbox, asyncio.StreamWriter, list[bytes], asyncio.StreamReader], Awaitable[None]]


def run(scenario: Scenario, *, flush_bytes: int = 64 * 1024, high_bytes: int | None = None) -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        _, writer = await asyncio.open_unix_connection(sock=ours)
        reader, their_writer = await asyncio.open_unix_connection(sock=theirs)
        if high_bytes is not None:
            writer.transport.set_write_buffer_limits(high=high_bytes)
        writes: list[bytes] = []
        write = writer.write

        def counted(data: bytes) -> None:  # what the transport is handed, one entry per send
            writes.append(bytes(data))
            write(data)

        writer.write = counted  # type: ignore[method-assign]
        try:
            await scenario(Outbox(writer, flush_bytes=flush_bytes), writer, writes, reader)
        finally:
            writer.close()
            their_writer.close()

    asyncio.run(main())


async def turn() -> None:
    await asyncio.sleep(0)


def test_the_frames_of_one_step_go_out_together_when_the_loop_turns() -> None:
    async def scenario(outbox: Outbox, _: asyncio.StreamWriter, writes: list[bytes], reader: asyncio.StreamReader
                       ) -> None:
        await outbox.put(b"started")
        await outbox.put(b"record")
        assert writes == []  # nothing before the step ends
        await turn()
        assert writes == [b"startedrecord"]
        await outbox.put(b"next")
        await turn()
        assert writes == [b"startedrecord", b"next"]
        assert await reader.readexactly(17) == b"startedrecordnext"

    run(scenario)


def test_a_held_frame_and_those_before_it_wait_for_the_next() -> None:
    async def scenario(outbox: Outbox, _: asyncio.StreamWriter, writes: list[bytes], reader: asyncio.StreamReader
                       ) -> None:
        await outbox.put(b"outcome")
        await outbox.put(b"result", hold=True)
        for _ in range(3):
            await turn()
        assert writes == []
        await outbox.put(b"status")
        outbox.flush()
        assert writes == [b"outcomeresultstatus"]
        assert await reader.readexactly(19) == b"outcomeresultstatus"

    run(scenario)


def test_output_over_the_flush_size_goes_at_once() -> None:
    async def scenario(outbox: Outbox, _: asyncio.StreamWriter, writes: list[bytes], reader: asyncio.StreamReader
                       ) -> None:
        await outbox.put(b"a" * 10)
        await outbox.put(b"b" * 30)
        assert writes == [b"a" * 10 + b"b" * 30]  # 40 bytes >= 32: written before the turn
        await turn()
        assert len(writes) == 1
        assert await reader.readexactly(40) == b"a" * 10 + b"b" * 30

    run(scenario, flush_bytes=32)


def test_a_put_returns_only_while_the_caller_keeps_up() -> None:
    chunk, high = 64 * 1024, 128 * 1024
    total = 64  # 4 MiB: far over what the socket's buffers hold

    async def scenario(outbox: Outbox, writer: asyncio.StreamWriter, writes: list[bytes],
                       reader: asyncio.StreamReader) -> None:
        buffered_after_put: list[int] = []

        async def produce() -> None:
            for _ in range(total):
                await outbox.put(b"x" * chunk)
                buffered_after_put.append(writer.transport.get_write_buffer_size())

        producer = asyncio.ensure_future(produce())
        received = 0
        while received < total * chunk:
            received += len(await reader.read(1 << 20))
        await producer
        assert len(writes) == total  # each chunk on its own, as it came
        assert max(buffered_after_put) <= high  # the producer waited whenever the caller fell behind

    run(scenario, high_bytes=high)


def test_what_waits_is_forgotten_when_the_caller_left() -> None:
    async def scenario(outbox: Outbox, _: asyncio.StreamWriter, writes: list[bytes], reader: asyncio.StreamReader
                       ) -> None:
        await outbox.put(b"started")
        outbox.discard()
        await turn()
        outbox.flush()
        assert writes == []

    run(scenario)
