"""The generated stubs in sandboxd/api/_proto are current: regenerate them into a temp dir and compare."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "sandboxd" / "api" / "_proto"


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts}


def test_stubs_are_not_stale(tmp_path: Path) -> None:
    subprocess.run([str(REPO / "protos" / "generate.sh"), str(tmp_path)], check=True,
                   env={**os.environ, "PYTHON": sys.executable}, capture_output=True)
    fresh, committed = _files(tmp_path), _files(COMMITTED)
    assert sorted(fresh) == sorted(committed), "the set of generated files changed: run protos/generate.sh"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated stubs {stale}: run protos/generate.sh and commit the result"


def test_stubs_import_under_the_private_package() -> None:
    from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2, sandbox_pb2_grpc

    assert sandbox_pb2.DESCRIPTOR.package == "sandboxd.v1"
    assert sandbox_pb2.Status.Name(sandbox_pb2.MEMORY_LIMIT) == "MEMORY_LIMIT"
    assert hasattr(sandbox_pb2_grpc, "SandboxStub")


def test_status_names_match_the_engine() -> None:
    from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2
    from sandboxd.engine.result import Status

    names = [value.name for value in sandbox_pb2.Status.DESCRIPTOR.values if value.number != 0]
    assert names == [status.value for status in Status]
