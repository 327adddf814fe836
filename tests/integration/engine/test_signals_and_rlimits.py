"""The handler starts with every signal at its default and an empty mask, and its rlimits are set on its final
descriptors: SIGPIPE ends pipelines, SIGXFSZ ends a write past the file-size limit, any open_files >= 4 runs."""

from __future__ import annotations

import signal

from sandboxd.base.limits import Limits
from sandboxd.engine.result import Status

from .conftest import Engine, status_fields

COUNT_FDS = """
import os
n = 0
try:
    while True:
        os.open('/dev/null', os.O_RDONLY)
        n += 1
except OSError as e:
    print(e.errno, n)
"""


def test_signal_dispositions_are_default_and_the_mask_empty(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/cat", "/proc/self/status"))
    assert run.result.status is Status.OK, run.result
    fields = status_fields(run.stdout.decode())
    assert (fields["SigIgn"], fields["SigBlk"], fields["SigCgt"]) == ("0" * 16,) * 3, fields


def test_sigpipe_ends_a_pipeline_quietly(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/sh", "-c", "yes | head -n 2"))
    assert run.result.status is Status.OK, run.result
    assert (run.stdout, run.stderr) == (b"y\ny\n", b"")  # no "yes: standard output: Broken pipe"


def test_a_write_past_the_file_size_limit_is_killed_by_sigxfsz(engine: Engine) -> None:
    limits = Limits(file_size_max_bytes=1 << 20, wall_time_ms=20_000)
    run = engine.run(engine.spec("/bin/sh", "-c", "head -c 3000000 /dev/zero > /tmp/big; echo after $?",
                                 limits=limits))
    # the shell survives; its child died of SIGXFSZ (128 + 25), not of EFBIG
    assert run.result.status is Status.OK, (run.result, run.stderr)
    assert run.stdout == b"after 153\n"
    as_handler = engine.run(engine.spec("/usr/bin/dd", "if=/dev/zero", "of=/tmp/big", "bs=1M", "count=3",
                                        limits=limits))
    assert (as_handler.result.status, as_handler.result.signal) == (Status.SIGNALED, signal.SIGXFSZ)
    assert "file size limit" in as_handler.result.message


def test_small_open_files_limits_run(engine: Engine) -> None:
    for open_files in (4, 5, 10):
        run = engine.run(engine.spec("/bin/sh", "-c", "echo ok", limits=Limits(open_files_max=open_files)))
        assert (run.result.status, run.stdout) == (Status.OK, b"ok\n"), (open_files, run.result)


def test_open_files_counts_only_the_handlers_own_descriptors(engine: Engine) -> None:
    run = engine.run(engine.spec("/usr/bin/python3", "-I", "-S", "-c", COUNT_FDS, limits=Limits(open_files_max=16)))
    assert run.result.status is Status.OK, (run.result, run.stderr)
    err, opened = run.stdout.split()
    assert err == b"24"  # EMFILE
    assert 10 <= int(opened) <= 13, opened  # 16 minus stdio and what the interpreter holds: nothing inherited
