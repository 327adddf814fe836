"""A chroot whose / is not a mount point cannot host sandboxes: the engine (and so the daemon) refuses to
start naming what is wrong and what to do, instead of failing every execution with "Invalid argument"; the
same chroot bind-mounted onto itself works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_harness import fresh_ids

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
ENGINE = """
import asyncio, sys, tempfile
from pathlib import Path
from sandboxd.base.errors import ConfigError
from sandboxd.engine.config import EngineConfig
from sandboxd.engine.executor import Executor
from sandboxd.engine.ids import IdRange
from sandboxd.engine.seccomp.profile import ProfileCache
from sandboxd.engine.spec import ExecutionSpec

async def main():
    config = EngineConfig(state_dir=Path(tempfile.mkdtemp()), instance=sys.argv[1],
                          sandbox_ids=IdRange.parse(sys.argv[2]))
    try:
        executor = await Executor.create(config)
    except ConfigError as error:
        print('refused:', error.message)
        return
    try:
        spec = ExecutionSpec(argv=('/bin/echo', 'ran'), seccomp_bpf=ProfileCache().get(sys.argv[3]).bpf)
        async for event in executor.execute(spec):
            print(type(event).__name__, getattr(event, 'status', getattr(event, 'data', '')))
    finally:
        await executor.close()

asyncio.run(main())
"""
# The chroot: the host's top-level directories bound into a plain directory (not itself a mount point).
ENTER = """
set -e
root=$1; shift
[ "$SELF_BIND" = 1 ] && mount --bind "$root" "$root"
for dir in /*; do
    [ -d "$dir" ] && [ ! -L "$dir" ] || continue
    mkdir -p "$root$dir"
    mount --rbind "$dir" "$root$dir"
done
for link in /*; do [ -L "$link" ] && cp -P "$link" "$root$link"; done
exec chroot "$root" "$@"
"""


def _in_chroot(tmp_path: Path, *, self_bind: bool) -> str:
    root = tmp_path / ("bound" if self_bind else "plain")
    root.mkdir()
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", ENTER, "enter", str(root),
         sys.executable, "-c", ENGINE, f"chroot-{os.getpid()}", str(fresh_ids()),
         str(REPO / "seccomp-profiles" / "default.json")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "SELF_BIND": str(int(self_bind))},
        cwd="/")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_chroot_that_is_not_a_mount_point_is_refused_with_the_remedy(tmp_path: Path) -> None:
    out = _in_chroot(tmp_path, self_bind=False)
    assert out.startswith("refused: the root directory / is not a mount point here (a chroot?)"), out
    assert "mount --bind DIR DIR" in out


def test_the_same_chroot_bound_onto_itself_runs_sandboxes(tmp_path: Path) -> None:
    out = _in_chroot(tmp_path, self_bind=True)
    assert "Output b'ran\\n'" in out and "Status.OK" in out, out
