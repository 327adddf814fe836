"""cgroup v1 backend on the real host: limits land in the kernel's files and take effect.

Each test uses its own instance name, so its base (``sandboxd-test-<uuid8>``) is created below this process's
cgroup in each hierarchy and removed afterwards; nothing else is touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.base.errors import CgroupError
from sandboxd.engine.cgroups import CgroupLimits
from sandboxd.engine.cgroups.detect import detect_backend
from sandboxd.engine.cgroups.v1 import V1Backend, V1ExecCgroup

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v1]

MIB = 1 << 20
# Joins every hierarchy (the child's first act, as the spawner's child does), then runs the payload.
JOIN = "import os,sys\nfor p in sys.argv[1:]:\n    with open(p, 'w') as f: f.write(str(os.getpid()))\n"
SLEEP = JOIN + "os.execv('/bin/sleep', ['sleep', '30'])\n"
_FORK_UP_TO_20 = """
r, w = os.pipe()
kids = []
for _ in range(20):
    try:
        pid = os.fork()
    except BlockingIOError:
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    kids.append(pid)
os.close(w)
for k in kids:
    os.waitpid(k, 0)
print(len(kids))
"""
FORKS = JOIN + _FORK_UP_TO_20
HOG = JOIN + "blocks = [b'\\x01' * (1 << 20) for _ in range(256)]\nprint('survived')\n"


def _v1_backend() -> V1Backend:
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    if not Path("/sys/fs/cgroup/memory").is_dir():
        pytest.skip("host has no cgroup v1 memory hierarchy")
    try:
        backend = detect_backend(instance=f"test-{uuid.uuid4().hex[:8]}")
    except CgroupError as e:
        pytest.skip(f"no usable cgroups here: {e}")
    if not isinstance(backend, V1Backend):
        pytest.skip(f"host's cgroups are {backend.name}, not v1")
    return backend


@pytest.fixture
def backend() -> Iterator[V1Backend]:
    backend = _v1_backend()
    backend.prepare()
    bases = backend.base.split(", ")
    try:
        yield backend
    finally:
        for leaf in backend.stale_leaves():
            backend.remove_leaf(leaf)
        assert backend.remove_base() is True
        assert [b for b in bases if os.path.exists(b)] == []


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        if child.poll() is None:  # still our unreaped child, so its pid cannot have been reused
            child.kill()
            child.wait(timeout=5)


def start(children: list[subprocess.Popen[bytes]], code: str, cg: V1ExecCgroup) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", code, *cg.procs_files], stdout=subprocess.PIPE)
    children.append(child)
    return child


def leaf_file(cg: V1ExecCgroup, hierarchy_marker: str, name: str) -> str:
    leaf_dir = next(os.path.dirname(p) for p in cg.procs_files if hierarchy_marker in p)
    return Path(leaf_dir, name).read_text().strip()


def wait_for_pid(cg: V1ExecCgroup, pid: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while pid not in cg.pids():
        assert time.monotonic() < deadline, f"pid {pid} never showed up in {cg.procs_files}"
        time.sleep(0.01)


def test_limits_kill_and_remove(backend: V1Backend, children: list[subprocess.Popen[bytes]]) -> None:
    cg = backend.create("limits", CgroupLimits(memory_max_bytes=64 * MIB, cpu_share_percent=25, pids_max=16))
    assert leaf_file(cg, "/memory/", "memory.limit_in_bytes") == str(64 * MIB)
    assert leaf_file(cg, "/memory/", "memory.memsw.limit_in_bytes") == str(64 * MIB)
    assert leaf_file(cg, "/cpu/", "cpu.cfs_period_us") == "100000"
    assert leaf_file(cg, "/cpu/", "cpu.cfs_quota_us") == "25000"
    assert leaf_file(cg, "/pids/", "pids.max") == "16"
    assert backend.stale_leaves() == ["exec-limits"]

    sleeper = start(children, SLEEP, cg)
    wait_for_pid(cg, sleeper.pid)
    for procs in cg.procs_files:
        assert sleeper.pid in [int(p) for p in Path(procs).read_text().split()]
    cg.kill()
    assert sleeper.wait(timeout=5) == -signal.SIGKILL
    assert leaf_file(cg, "/freezer/", "freezer.state") == "THAWED"

    cg.remove()
    assert [p for p in cg.procs_files if os.path.exists(os.path.dirname(p))] == []
    cg.remove()  # idempotent
    assert backend.stale_leaves() == []


def test_remove_kills_what_is_left(backend: V1Backend, children: list[subprocess.Popen[bytes]]) -> None:
    cg = backend.create("left", CgroupLimits(None, None, None))
    sleeper = start(children, SLEEP, cg)
    wait_for_pid(cg, sleeper.pid)
    backend.remove_leaf(cg.name)
    assert sleeper.wait(timeout=5) == -signal.SIGKILL
    assert backend.stale_leaves() == []


def test_pids_limit_stops_forks(backend: V1Backend, children: list[subprocess.Popen[bytes]]) -> None:
    cg = backend.create("forks", CgroupLimits(None, None, pids_max=8))
    assert leaf_file(cg, "/pids/", "pids.max") == "8"
    child = start(children, FORKS, cg)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0
    assert int(out) == 7  # 8 tasks: the child itself and 7 forks; the 8th fork fails with EAGAIN
    cg.remove()


def test_memory_limit_oom_kills(backend: V1Backend, children: list[subprocess.Popen[bytes]]) -> None:
    limit_bytes = 32 * MIB
    cg = backend.create("oom", CgroupLimits(memory_max_bytes=limit_bytes, cpu_share_percent=None, pids_max=8))
    assert leaf_file(cg, "/memory/", "memory.limit_in_bytes") == str(limit_bytes)
    hog = start(children, HOG, cg)
    out, _ = hog.communicate(timeout=60)
    assert hog.returncode == -signal.SIGKILL, out
    stats = cg.stats()
    assert stats.oom_kill_count >= 1
    assert 0.9 * limit_bytes <= stats.memory_peak_bytes <= 1.1 * limit_bytes
    cg.remove()
