"""The installed service under a real systemd as PID 1, on a cgroup v2 kernel with delegable controllers — as an
operator runs it: installed by systemd/install-service, called through /run/sandboxd/sandboxd.sock by a member
of the group `sandboxd` (and refused to a user outside it), with its limits enforced below the unit's cgroup,
reloaded and stopped by systemctl. Runs in `tests/vm/run-v2-suite --systemd` (tests/vm/guest-systemd-run)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

OUT = os.environ.get("SANDBOXD_VM_OUT")
pytestmark = [
    pytest.mark.systemd_unit,
    pytest.mark.root,
    pytest.mark.skipif(OUT is None, reason="needs the service installed under systemd as PID 1: "
                                           "tests/vm/run-v2-suite --systemd runs it"),
]

UNIT_CGROUP = Path("/sys/fs/cgroup/system.slice/sandboxd.service")
MEMBER, OUTSIDER = "sbx-member", "sbx-outsider"
HOG = "x = []\nwhile True:\n    x.append(bytearray(4 << 20))\n"
BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
SPIN = "import time\nend = time.time() + 4\nwhile time.time() < end:\n    pass\n"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=check)


def as_user(user: str, *args: str) -> subprocess.CompletedProcess[str]:
    return sh("runuser", "-u", user, "--", "/usr/local/bin/sandboxctl", *args, check=False)


def result_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events and "result" in events[-1], (done.stdout, done.stderr)
    result: dict[str, Any] = events[-1]["result"]
    return result


def show(*properties: str) -> dict[str, str]:
    out = sh("systemctl", "show", "sandboxd.service", *(f"--property={p}" for p in properties)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module", autouse=True)
def users() -> None:
    for user, groups in ((MEMBER, ["-G", "sandboxd"]), (OUTSIDER, [])):
        if sh("id", user, check=False).returncode != 0:
            sh("useradd", "--system", "--no-create-home", *groups, user)


def test_the_unit_is_ready_and_says_so() -> None:
    state = show("ActiveState", "SubState", "Type", "StatusText", "ControlGroup", "NRestarts")
    assert (state["ActiveState"], state["SubState"], state["Type"]) == ("active", "running", "notify"), state
    assert state["StatusText"], "no STATUS= from the daemon"
    assert state["ControlGroup"] == "/system.slice/sandboxd.service"
    assert sorted(p.name for p in UNIT_CGROUP.iterdir() if p.is_dir()) == ["supervisor"]


def test_a_member_of_the_group_runs_tools_and_others_are_told_to_join_it() -> None:
    done = as_user(MEMBER, "run", "python", "--param", "code=print(6 * 7)")
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr
    refused = as_user(OUTSIDER, "tools")
    assert refused.returncode == 125
    assert "permission denied on /run/sandboxd/sandboxd.sock" in refused.stderr
    assert "join the group sandboxd" in refused.stderr


def test_a_memory_hog_ends_memory_limit_with_its_peak() -> None:
    limit = 48 << 20
    done = as_user(MEMBER, "exec", "--json", "--memory", "48M", "--", "/usr/bin/python3", "-c", HOG)
    result = result_of(done)
    assert result["status"] == "MEMORY_LIMIT", result
    assert 0.8 * limit <= int(result["usage"]["memoryPeakBytes"]) <= 1.05 * limit, result["usage"]
    assert done.returncode == 137


def test_a_fork_bomb_is_contained_and_its_leaf_is_below_the_unit() -> None:
    process = subprocess.Popen(["runuser", "-u", MEMBER, "--", "/usr/local/bin/sandboxctl", "exec", "--json",
                                "--pids", "32", "--timeout", "8s", "--",
                                "/usr/bin/python3", "-c", BOMB], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    started = None
    for line in process.stdout:
        event = json.loads(line)
        if "started" in event:
            started = event["started"]
            break
    assert started is not None
    leaf = UNIT_CGROUP / started["cgroup"]
    assert leaf.is_dir() and (leaf / "pids.max").read_text().strip() == "33"  # 32 and the sandbox's init
    Path(OUT or "/tmp", "systemd-cgls.txt").write_text(sh("systemd-cgls", "--no-pager", "-u", "sandboxd.service",
                                                          check=False).stdout)
    Path(OUT or "/tmp", "systemctl-status.txt").write_text(sh("systemctl", "status", "sandboxd", "--no-pager",
                                                             "--lines=5", check=False).stdout)
    rest, _ = process.communicate(timeout=300)
    result = json.loads(rest.splitlines()[-1])["result"]
    assert result["status"] in ("TIMEOUT", "CPU_LIMIT"), result  # whichever of the default limits came first
    assert not leaf.exists(), "the execution's leaf outlived its Result"
    assert sh("true").returncode == 0  # the guest still forks


def test_cpu_max_throttles_a_spin() -> None:
    done = as_user(MEMBER, "exec", "--json", "--cpu-share", "20%", "--", "/usr/bin/python3", "-c", SPIN)
    result = result_of(done)
    assert result["status"] == "OK", result
    cpu_ms = (int(result["usage"]["cpuUserUsec"]) + int(result["usage"].get("cpuSystemUsec", 0))) / 1000
    wall_ms = int(result["usage"]["wallTimeMs"])
    assert cpu_ms < 0.45 * wall_ms, (cpu_ms, wall_ms)  # 20 % of one CPU, with TCG's noise


def test_reload_of_a_good_and_a_broken_config_and_a_clean_stop() -> None:
    config = Path("/etc/sandboxd/sandboxd.toml")
    config.write_text('[sandbox.limits]\nwall_time = "25s"\n')
    sh("systemctl", "reload", "sandboxd")
    audit = Path("/var/log/sandboxd/audit.log")
    deadline = time.monotonic() + 60
    while '"daemon.reloaded"' not in audit.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert '"daemon.reloaded"' in audit.read_text()
    config.write_text("[sandbox.limits]\nwall_time = 25\n")  # no unit: refused, the running config stays
    sh("systemctl", "reload", "sandboxd")
    while '"daemon.reload_failed"' not in audit.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert '"daemon.reload_failed"' in audit.read_text()
    assert as_user(MEMBER, "health").stdout.strip() == "SERVING"
    config.unlink()
    sh("systemctl", "stop", "sandboxd")
    state = show("ActiveState", "ExecMainStatus", "Result")
    assert (state["ActiveState"], state["ExecMainStatus"], state["Result"]) == ("inactive", "0", "success"), state
    assert not UNIT_CGROUP.exists() or not any(p.is_dir() and p.name.startswith("exec-") for p in UNIT_CGROUP.iterdir())
    sh("systemctl", "start", "sandboxd")  # the uninstall that follows stops it again


def test_a_broken_config_stops_it_without_a_restart_loop() -> None:
    # An invalid configuration exits 78, which RestartPreventExitStatus= names: systemd does not restart it
    # into the same wall five times; fixed, it starts again.
    config = Path("/etc/sandboxd/sandboxd.toml")
    config.write_text("[daemon]\nno_such_key = 1\n")
    try:
        sh("systemctl", "restart", "sandboxd", check=False)
        deadline = time.monotonic() + 60
        while show("ActiveState")["ActiveState"] not in ("failed", "inactive") and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # RestartSec=1s: a restart, if any, would have happened by now
        state = show("ActiveState", "ExecMainStatus", "NRestarts")
        assert (state["ActiveState"], state["ExecMainStatus"], state["NRestarts"]) == ("failed", "78", "0"), state
        journal = sh("journalctl", "-u", "sandboxd.service", "--no-pager", "-n", "20", check=False).stdout
        assert "daemon.no_such_key" in journal, journal
    finally:
        config.unlink()
        sh("systemctl", "reset-failed", "sandboxd", check=False)
        sh("systemctl", "start", "sandboxd")
    assert show("ActiveState")["ActiveState"] == "active"
