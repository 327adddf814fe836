"""Output pipes are widened so that a chunk — one event, one gRPC message — carries up to a MiB."""

from __future__ import annotations

import asyncio
import fcntl
import os

from sandboxd.engine.relay import OUTPUT_PIPE_BYTES, read_chunk, widen_pipe


def test_a_widened_pipe_holds_a_mib_and_gives_it_in_one_chunk() -> None:
    read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        widen_pipe(read_end)
        assert fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) == OUTPUT_PIPE_BYTES
        data = os.urandom(OUTPUT_PIPE_BYTES)
        assert os.write(write_end, data) == OUTPUT_PIPE_BYTES  # room for all of it: the writer never blocked
        assert asyncio.run(read_chunk(read_end)) == data
    finally:
        os.close(read_end)
        os.close(write_end)


def test_widening_a_descriptor_that_is_no_pipe_is_harmless(tmp_path: object) -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        widen_pipe(fd)  # EBADF from the kernel: the stream works as it is, only slower
    finally:
        os.close(fd)
