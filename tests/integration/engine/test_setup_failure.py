"""Setup failures end SETUP_FAILED with the stage and a message naming what is wrong; nothing runs."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

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
