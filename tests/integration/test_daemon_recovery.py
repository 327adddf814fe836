"""Crash recovery: a ``kill -9`` of the daemon and of its spawner while executions run leaves no process of
any execution alive, and the next start removes what the dead instance left, records that in the audit
log, continues the hash chain, and serves."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from daemon_harness import (
    Daemon,
    assert_nothing_left,
    cgroup_dirs,
    crash,
    make_daemon,
    sandbox_processes,
    wait_for,
)

from sandboxd.audit.verify import verify_files
from sandboxd.cli.client import pb

pytestmark = pytest.mark.root

DEATH_TIMEOUT_S = 10.0


def execution_leaves(instance: str) -> set[str]:
    """The names of this instance's execution cgroups, in any hierarchy."""
    return {leaf.name for base in cgroup_dirs(instance) if base.is_dir() for leaf in base.iterdir() if leaf.is_dir()}


@pytest.fixture
def crashed(tmp_path: Path) -> Daemon:
    """A daemon killed with SIGKILL — and its spawner too — while two executions run."""
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    daemon = make_daemon(tmp_path)
    daemon.start()
    assert daemon.process is not None
    streams = []
    client = daemon.client()
    try:
        for _ in range(2):
            stream = client.execute(command=["/bin/sleep", "300"])
            event = next(stream)
            while event.WhichOneof("event") != "started":
                event = next(stream)
            streams.append(stream)
        # each execution is its init and the sleeper, both of its own uid
        wait_for(lambda: len(sandbox_processes(daemon.ids)) >= 4, 10, "the sleepers")
        assert len(execution_leaves(daemon.instance)) == 2
        spawners = psutil.Process(daemon.process.pid).children()
        assert spawners, "the daemon has no spawner child"
    except BaseException:
        daemon.signal(signal.SIGTERM)
        daemon.signal(signal.SIGTERM)  # the second skips the grace period
        daemon.stop()
        raise
    crash(daemon)
    client.close()
    return daemon


def test_kill_9_leaves_no_sandbox_process_and_restart_cleans_up(crashed: Daemon) -> None:
    # Parent-death signals and the pid namespaces take every process of every execution down.
    wait_for(lambda: not sandbox_processes(crashed.ids), DEATH_TIMEOUT_S, "the executions' processes to die")
    # The dead daemon could not remove its cgroups (nor its socket): the next start must.
    assert execution_leaves(crashed.instance), "expected the crash to leave execution cgroups"
    assert crashed.socket.exists()

    crashed.start()
    try:
        assert not execution_leaves(crashed.instance)
        records = crashed.audit_records()
        recovered = [r for r in records if r["event"] == "daemon.recovered"]
        assert len(recovered) == 1 and len(recovered[0]["details"]["cgroups_removed"]) == 2
        assert records[-1]["event"] == "daemon.started"
        with crashed.client() as client:
            outcome = client.run_command(["/bin/echo", "alive"])
            assert (outcome.status_name, outcome.stdout) == ("OK", b"alive\n")
    finally:
        assert crashed.stop() == 0
    assert_nothing_left(crashed)
    # One chain through both lives of the daemon, whatever the crash cut.
    files = [*sorted(crashed.audit_log.parent.glob("audit.log.*")), crashed.audit_log]
    assert verify_files(files, hmac_key=None).records > 0


def test_a_recovered_daemon_reports_running_nothing(crashed: Daemon) -> None:
    wait_for(lambda: not sandbox_processes(crashed.ids), DEATH_TIMEOUT_S, "the executions' processes to die")
    crashed.start()
    try:
        with crashed.client() as client:
            assert client.list_executions() == []
            assert client.info().running_executions == 0
            assert client.run_tool("python", {"code": "print(6 * 7)"}).stdout == b"42\n"
            assert pb.Status.Name(client.run_command(["/bin/true"]).result.status) == "OK"
    finally:
        assert crashed.stop() == 0
    assert_nothing_left(crashed)
