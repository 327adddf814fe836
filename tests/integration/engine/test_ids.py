"""A uid and gid of its own for every running execution: per-user kernel quotas are not shared, the audit
login uid is set before the handler runs, and an id returns to the pool only once its processes are gone."""

from __future__ import annotations

from pathlib import Path

from sandboxd.base.limits import Limits
from sandboxd.engine.result import Status

from .conftest import Engine

# Open most of the per-user inotify quota, hold it while the other execution does the same, report.
HOLD_INOTIFY = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
want = int(open('/proc/sys/fs/inotify/max_user_instances').read()) * 3 // 4
held = []
for _ in range(want):
    fd = libc.inotify_init1(0)
    if fd < 0:
        print('EMFILE after', len(held)); raise SystemExit(1)
    held.append(fd)
time.sleep(1.5)
print('held', len(held), os.getuid())
"""


def test_concurrent_executions_do_not_share_per_user_quotas(engine: Engine) -> None:
    # With one shared uid the second execution would get EMFILE: 2 x 3/4 of max_user_instances.
    limits = Limits(open_files_max=1024, wall_time_ms=20_000)
    runs = engine.run_concurrently([engine.spec("/usr/bin/python3", "-c", HOLD_INOTIFY, limits=limits)
                                    for _ in range(2)])
    uids = set()
    for run in runs:
        assert run.result.status is Status.OK, (run.result, run.stdout, run.stderr)
        _, count, uid = run.stdout.split()
        assert int(count) >= 3
        uids.add(int(uid))
        assert run.started is not None and run.started.uid == int(uid)
    assert len(uids) == 2 and all(uid in engine.config.sandbox_ids for uid in uids)
    assert engine.config.sandbox_ids.shared_gid not in uids  # the first id is the shared group, never a uid


def test_the_audit_login_uid_is_set_before_the_handler_runs(engine: Engine) -> None:
    if not Path("/proc/self/loginuid").exists():
        return  # a kernel without audit has no login uid to set or steal
    script = ("uid=$(cat /proc/self/loginuid); echo $uid; "
              "echo 0 > /proc/self/loginuid 2>/dev/null && echo set-to-0 || echo refused")
    run = engine.run(engine.spec("/bin/sh", "-c", script))
    assert run.result.status is Status.OK, run.result
    assert run.started is not None
    assert run.stdout.decode().split() == [str(run.started.uid), "refused"]
