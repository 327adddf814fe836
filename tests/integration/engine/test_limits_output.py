"""Output: a flood ends OUTPUT_LIMIT with exactly the allowed bytes delivered."""

from __future__ import annotations

from sandboxd.base.limits import Limits
from sandboxd.engine.result import Status

from .conftest import Engine

LIMIT_BYTES = 100_000


def test_output_flood_delivers_exactly_the_limit(engine: Engine) -> None:
    limits = Limits(output_max_bytes=LIMIT_BYTES, wall_time_ms=20_000)
    # The flood below is bounded only by the output limit: prove it is enforced on a bounded output first,
    # and do not flood at all when it is not.
    probe = engine.run(engine.spec("/usr/bin/head", "-c", str(3 * LIMIT_BYTES), "/dev/zero", limits=limits))
    assert (probe.result.status, len(probe.stdout)) == (Status.OUTPUT_LIMIT, LIMIT_BYTES), probe.result
    run = engine.run(engine.spec("/usr/bin/yes", "flood", limits=limits))
    assert run.result.status is Status.OUTPUT_LIMIT, run.result
    assert len(run.stdout) + len(run.stderr) == LIMIT_BYTES
    assert run.result.stdout_bytes + run.result.stderr_bytes == LIMIT_BYTES
    assert run.result.output_truncated
    assert run.stdout == (b"flood\n" * (LIMIT_BYTES // 6 + 1))[:LIMIT_BYTES]


def test_output_counts_stdout_and_stderr_together(engine: Engine) -> None:
    """600 bytes on each stream: neither alone exceeds 1000, together they do."""
    limits = Limits(output_max_bytes=1000, wall_time_ms=20_000)
    script = "import sys\nsys.stderr.write('e' * 600); sys.stderr.flush(); sys.stdout.write('o' * 600)"
    run = engine.run(engine.spec("/usr/bin/python3", "-c", script, limits=limits))
    assert run.result.status is Status.OUTPUT_LIMIT, run.result
    assert len(run.stdout) + len(run.stderr) == 1000
    assert run.result.output_truncated


def test_output_exactly_at_the_limit_is_ok(engine: Engine) -> None:
    limits = Limits(output_max_bytes=6, wall_time_ms=20_000)
    run = engine.run(engine.spec("/bin/echo", "hello", limits=limits))
    assert run.result.status is Status.OK
    assert run.stdout == b"hello\n"
    assert not run.result.output_truncated


def test_stdin_reaches_the_handler(engine: Engine) -> None:
    payload = b'{"x": 1}' * 20_000  # larger than a pipe buffer
    run = engine.run(engine.spec("/usr/bin/wc", "-c", stdin=payload))
    assert run.result.status is Status.OK
    assert int(run.stdout) == len(payload)
