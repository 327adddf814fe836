"""Sessions on cgroup v2: the session's cgroup holds its limits and hands the controllers on — its keeper in
exec-keeper, each call in a leaf of its own below it — so the session's memory.max covers every call
together; closing the session removes the whole subtree."""

from __future__ import annotations

from sandboxd.cli.sessions import Session

from .conftest import V2_MARKS, CgroupDaemon, children, procs, read

pytestmark = V2_MARKS

HOLD = ("import sys, time; b = bytearray(int(sys.argv[1]) << 20); b[::4096] = b'x' * len(b[::4096]);"
        " print('holding', flush=True); time.sleep(30)")


def test_a_session_is_a_subtree_whose_limits_cover_its_calls(daemon: CgroupDaemon) -> None:
    with daemon.client() as client:
        session = Session.create(client, tool=None, limits={"memory_max_bytes": 128 << 20, "pids_max": 32})
        root = daemon.cgroup / f"exec-{session.session_id}"
        try:
            assert read(root / "memory.max") == str(128 << 20)
            assert set(read(root / "cgroup.subtree_control").split()) >= {"memory", "cpu", "pids"}
            assert read(root / "memory.oom.group") == "0"  # an OOM kills the call that caused it, not the session
            assert procs(root) == []  # no internal processes: the keeper is in its own leaf
            assert len(procs(root / "exec-keeper")) == 2  # the session's init and its keeper
            first = client.execute(command=["/usr/bin/python3", "-c", HOLD, "60"], session_id=session.session_id,
                                   limits={"memory_max_bytes": 110 << 20, "wall_time_ms": 20_000})
            started = next(e for e in first if e.WhichOneof("event") == "started").started
            assert next(e for e in first if e.WhichOneof("event") == "output").output.data == b"holding\n"
            assert set(children(root)) == {"exec-keeper", started.cgroup}
            assert read(root / started.cgroup / "memory.max") == str(110 << 20)
            # a second call fits its own 110 MiB but not the session's 128 MiB with the first one holding 60: the
            # OOM killer takes the largest, the second, and its leaf says so
            second = client.run_command(["/usr/bin/python3", "-c", HOLD, "100"], session_id=session.session_id,
                                        limits={"memory_max_bytes": 110 << 20, "wall_time_ms": 20_000})
            assert second.status_name == "MEMORY_LIMIT", second.result
            first.close()
        finally:
            session.close()
        assert not root.exists()  # the close returns once the subtree is gone
