"""Setup failures end SETUP_FAILED with the stage and a message naming what is wrong; nothing runs."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import threading
import time
from pathlib import Path, PurePosixPath

from loopfs import ext4_on_loop, require_loop_devices
from loopfs import run as run_loopfs

from sandboxd.engine.result import Started, Status
from sandboxd.engine.spec import BindMount

from .conftest import Engine


def test_missing_handler_binary(engine: Engine) -> None:
    run = engine.run(engine.spec("/usr/bin/no-such-handler", "--flag"))
    assert run.result.status is Status.SETUP_FAILED
    assert "/usr/bin/no-such-handler" in run.result.message
    assert run.result.setup_stage == "find handler"
    assert not any(isinstance(e, Started) for e in run.events)


def test_missing_handler_on_path(engine: Engine) -> None:
    run = engine.run(engine.spec("no-such-tool"))
    assert run.result.status is Status.SETUP_FAILED
    assert "no-such-tool" in run.result.message


def test_missing_bind_source_fails_closed(engine: Engine, tmp_path: Path) -> None:
    bind = BindMount(tmp_path / "absent", PurePosixPath("/data"))
    run = engine.run(engine.spec("/bin/true", binds=(bind,)))
    assert run.result.status is Status.SETUP_FAILED
    assert "absent" in run.result.message
    assert run.result.setup_errno == 2


def test_non_executable_handler(engine: Engine, tmp_path: Path) -> None:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    bind = BindMount(tmp_path, PurePosixPath("/tool"))
    run = engine.run(engine.spec("/tool/tool.sh", binds=(bind,)))
    assert run.result.status is Status.SETUP_FAILED
    assert "/tool/tool.sh" in run.result.message


def _shared_dir(engine: Engine, path: Path) -> Path:
    """A host directory every sandbox may write to: the sandboxes' shared group, setgid."""
    path.mkdir()
    os.chown(path, 0, engine.config.sandbox_ids.shared_gid)
    path.chmod(0o2770)
    return path


def test_a_fifo_planted_at_a_bind_target_is_refused_not_waited_on(engine: Engine, tmp_path: Path) -> None:
    # What one execution leaves in a writable bind must not stall the next one's setup: opening a FIFO
    # planted where a later bind lands blocked forever.
    out = _shared_dir(engine, tmp_path / "out")
    os.mkfifo(out / "x")
    data = tmp_path / "data.txt"
    data.write_text("data\n")
    binds = (BindMount(out, PurePosixPath("/out"), writable=True), BindMount(data, PurePosixPath("/out/x")))
    started = time.monotonic()
    run = engine.run(engine.spec("/bin/cat", "/out/x", binds=binds))
    assert run.result.status is Status.SETUP_FAILED, run.result
    assert run.result.setup_stage == f"bind 1: {data} -> /out/x"
    assert "not a regular file" in run.result.message
    assert time.monotonic() - started < 10


def test_a_setup_that_hangs_ends_after_the_bound_naming_its_stage(engine: Engine, tmp_path: Path) -> None:
    # A bind target created on a file system that does not answer (frozen here, a dead network mount in
    # life) holds the sandbox's setup in the kernel; the execution ends at setup_timeout naming that bind.
    require_loop_devices()
    data = tmp_path / "data.txt"
    data.write_text("data\n")
    with contextlib.ExitStack() as stack:
        ext4_on_loop(tmp_path / "disk.img", "16M", tmp_path / "fs", stack)
        out = _shared_dir(engine, tmp_path / "fs" / "out")
        binds = (BindMount(out, PurePosixPath("/out"), writable=True), BindMount(data, PurePosixPath("/out/x")))
        bounded = Engine(dataclasses.replace(engine.config, setup_timeout_ms=1000))
        run_loopfs("fsfreeze", "--freeze", str(tmp_path / "fs"))
        thaw = threading.Timer(3.0, run_loopfs, ("fsfreeze", "--unfreeze", str(tmp_path / "fs")))
        thaw.start()
        stack.callback(thaw.join)
        started = time.monotonic()
        run = bounded.run(bounded.spec("/bin/cat", "/out/x", binds=binds))
        elapsed_s = time.monotonic() - started
    assert run.result.status is Status.SETUP_FAILED, run.result
    assert run.result.setup_stage == f"bind 1: {data} -> /out/x", run.result
    assert "did not finish within 1000 ms" in run.result.message
    assert run.result.setup_errno == errno.ETIMEDOUT
    assert not any(isinstance(e, Started) for e in run.events)
    assert elapsed_s < 15, elapsed_s
