"""The shipped systemd files: systemd's own tools accept them, and the unit says what the daemon relies on.

``systemd-analyze verify`` needs no running systemd: it loads the unit file as PID 1 would and reports
unknown keys and unparsable values as warnings (exit code 0), so every line naming our unit counts as an error
here. The copy it checks runs the venv's ``sandboxd`` (the shipped ``/usr/bin/sandboxd`` does not exist in a
checkout). ``systemd-tmpfiles`` and ``systemd-sysusers`` apply the other two files to a temporary root.
The tools come with Debian's ``systemd`` package; a machine without them fails these tests rather than skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_harness import Daemon, make_daemon, running

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "sandboxd.service"
TMPFILES = SYSTEMD_DIR / "sandboxd.tmpfiles.conf"
SYSUSERS = SYSTEMD_DIR / "sandboxd.sysusers.conf"
EXITS_NOT_RESTARTED = {69, 77, 78}  # sandboxd.server.daemon.EXIT_UNAVAILABLE, EXIT_NOPERM, EXIT_CONFIG
DEFAULT_GRACE_S = 10  # daemon.grace_period's default (sandboxd.server.config)
SERVER_STOP_GRACE_S = 2  # the gRPC server's own stop grace (sandboxd.server.daemon)
SOCKET_GROUP = "sandboxd"  # daemon.socket_group's default (sandboxd.server.config)

# What the daemon needs (see the comments in the unit); a change here is a change of the daemon's privileges.
CAPABILITIES = {
    "CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_SYS_PTRACE", "CAP_KILL", "CAP_NET_ADMIN",
    "CAP_SYS_RESOURCE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SYSLOG",
}


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin")
    if path is None:
        pytest.fail(f"{name} not found: install the `systemd` package (apt-get install systemd; .ci/setup does)")
    return path


def _settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """section → key → every value in order (systemd allows repeated keys; comments and blanks dropped)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not key=value"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key, [])
    assert len(values) == 1, f"{key}= should be set once in {UNIT.name}, found {values}"
    return values[0]


def _seconds(span: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", span)
    assert match, f"unexpected time span {span!r}"
    return int(match[1]) * (60 if match[2] == "min" else 1)


def _verify(unit: Path) -> list[str]:
    """What ``systemd-analyze verify`` says about ``unit`` itself (lines about other units are not ours)."""
    run = subprocess.run([_tool("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True,
                         timeout=60, check=False)
    ours = [line for line in (run.stdout + run.stderr).splitlines() if unit.name in line]
    if run.returncode != 0 and not ours:
        ours = [f"exit code {run.returncode}:", *run.stderr.splitlines()]
    return ours


def _unit_copy(tmp_path: Path, extra_service_lines: str = "") -> Path:
    """The shipped unit with ExecStart pointing at the venv's sandboxd, which exists here."""
    executable = Path(sysconfig.get_path("scripts")) / "sandboxd"
    if not executable.is_file():
        pytest.fail(f"{executable} does not exist: install sandboxd into the venv (pip install -e .)")
    text, count = re.subn(r"(?m)^ExecStart=/opt/sandboxd/bin/sandboxd$", f"ExecStart={executable}",
                          UNIT.read_text())
    assert count == 1, "the shipped unit's ExecStart= changed: update this test and the README"
    if extra_service_lines:
        text = text.replace("[Install]", f"{extra_service_lines}\n\n[Install]")
    copy = tmp_path / "sandboxd.service"
    copy.write_text(text)
    return copy


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    problems = _verify(_unit_copy(tmp_path))
    assert problems == [], "systemd-analyze verify:\n" + "\n".join(problems)


def test_the_verify_check_catches_a_broken_unit(tmp_path: Path) -> None:
    """Unknown keys and bad values are only warnings to systemd-analyze; the check above must still see them."""
    broken = _unit_copy(tmp_path, "[Service]\nNoSuchSetting=1\nWatchdogSec=soon")
    problems = _verify(broken)
    assert any("NoSuchSetting" in line for line in problems), problems
    assert any("soon" in line for line in problems), problems


def test_the_unit_says_what_the_daemon_relies_on() -> None:
    service = _settings(UNIT)["Service"]
    assert _one(service, "Type") == "notify"  # sandboxd.server.notify: READY=1, RELOADING=1, STOPPING=1
    assert _one(service, "NotifyAccess") == "main"
    assert _one(service, "ExecStart") == "/opt/sandboxd/bin/sandboxd"  # as systemd/install-service installs it
    # the daemon reloads on SIGHUP; the shell's builtin kill, since a minimal Debian has no /bin/kill
    assert _one(service, "ExecReload") == '/bin/sh -c "kill -HUP ${MAINPID}"'
    assert Path("/bin/sh").exists()
    watchdog_s = _seconds(_one(service, "WatchdogSec"))
    assert 10 <= watchdog_s <= 120  # sandboxd.server.notify.Watchdog pings every half of it
    assert _one(service, "Restart") == "on-failure"
    assert {int(code) for code in _one(service, "RestartPreventExitStatus").split()} == EXITS_NOT_RESTARTED
    assert _one(service, "Delegate") == "yes"  # per-execution cgroups below its own
    assert _one(service, "KillMode") == "mixed"  # SIGTERM to the daemon (drain), then SIGKILL to the rest
    assert _seconds(_one(service, "TimeoutStopSec")) > DEFAULT_GRACE_S + SERVER_STOP_GRACE_S
    assert _one(service, "TasksMax") == "infinity"
    assert _one(service, "OOMPolicy") == "continue"  # a sandbox's OOM kill must not stop the service
    assert _one(service, "LimitNOFILE") == "65536"
    for key in ("RuntimeDirectory", "StateDirectory", "LogsDirectory", "ConfigurationDirectory"):
        assert _one(service, key) == "sandboxd", key


def test_the_unit_keeps_only_the_capabilities_the_daemon_needs() -> None:
    service = _settings(UNIT)["Service"]
    granted = {cap for line in service["CapabilityBoundingSet"] for cap in line.split()}
    assert granted == CAPABILITIES
    assert "AmbientCapabilities" not in service and "User" not in service  # root, by design
    assert _one(service, "NoNewPrivileges") == "yes"


def test_the_unit_leaves_off_what_would_break_sandboxes() -> None:
    service = _settings(UNIT)["Service"]
    assert _one(service, "ProtectSystem") == "strict"
    for key in ("ProtectHome", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules", "LockPersonality",
                "RestrictRealtime", "RestrictSUIDSGID"):
        assert _one(service, key) == "yes", key
    for key, why in {
        "ProtectControlGroups": "makes cgroupfs read-only",
        "ProtectKernelLogs": "hides /dev/kmsg",
        "ProtectHostname": "blocks sethostname() in sandboxes",
        "ProtectClock": "inherited syscall filter and device policy",
        "PrivateDevices": "device policy, no /dev/kmsg",
        "DeviceAllow": "device policy on the delegated subtree",
        "DevicePolicy": "device policy on the delegated subtree",
        "RestrictNamespaces": "namespaces are the job",
        "SystemCallFilter": "inherited by every sandbox",
        "RestrictAddressFamilies": "inherited by every sandbox",
        "MemoryDenyWriteExecute": "breaks JITs in handlers",
        "PrivateUsers": "needs the real root",
        "ProcSubset": "hides /proc/sys/kernel/cap_last_cap",
        "UMask": "sample data must stay readable by the sandbox user",
        "OOMScoreAdjust": "inherited by sandboxes",
    }.items():
        assert key not in service, f"{key}= must not be set: {why}"


def _unit_directory_modes() -> dict[str, int]:
    service = _settings(UNIT)["Service"]
    roots = {"Runtime": "/run", "State": "/var/lib", "Logs": "/var/log", "Configuration": "/etc"}
    return {f"{root}/{_one(service, kind + 'Directory')}": int(_one(service, kind + "DirectoryMode"), 8)
            for kind, root in roots.items()}


def test_tmpfiles_makes_the_unit_directories_with_the_same_modes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    run = subprocess.run([_tool("systemd-tmpfiles"), "--create", f"--root={root}", str(TMPFILES)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0 and not run.stderr, run.stderr
    for directory, mode in _unit_directory_modes().items():
        made = root / directory.lstrip("/")
        assert made.is_dir(), f"{TMPFILES.name} does not create {directory}"
        assert made.stat().st_mode & 0o7777 == mode, f"{directory}: tmpfiles and the unit disagree on its mode"
    for below in ("tools", "seccomp"):
        assert (root / "etc/sandboxd" / below).is_dir()


def test_sysusers_creates_the_socket_group_and_no_sandbox_account(tmp_path: Path) -> None:
    # Sandboxes need no account: each execution runs as a uid of its own from [sandbox] ids.
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    run = subprocess.run([_tool("systemd-sysusers"), f"--root={root}", str(SYSUSERS)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert "ignoring" not in run.stderr and "not a valid" not in run.stderr, run.stderr
    group = {fields[0]: fields for fields in
             (line.split(":") for line in (root / "etc/group").read_text().splitlines())}
    assert SOCKET_GROUP in group and int(group[SOCKET_GROUP][2]) < 1000  # a system group
    passwd = root / "etc/passwd"
    assert not passwd.exists() or not passwd.read_text().strip()


@dataclass
class BoundedDaemon(Daemon):
    """A daemon started with only the unit's capability bounding set, as systemd starts it."""

    capabilities: frozenset[str] = frozenset()

    def command(self) -> list[str]:
        allowed = ",".join(f"+{cap.removeprefix('CAP_').lower()}" for cap in sorted(self.capabilities))
        return [_tool("setpriv"), f"--bounding-set=-all,{allowed}", "--", *super().command()]


@pytest.mark.root
def test_the_units_capabilities_are_enough_to_run_sandboxes(tmp_path: Path) -> None:
    # What the unit keeps is what the sandbox setup needs: a capability missing from the list would fail the
    # executions here (SETUP_FAILED naming the step), not only on a host running the unit.
    if os.geteuid() != 0:
        pytest.skip("the daemon needs root")
    made = make_daemon(tmp_path)
    granted = frozenset(cap for line in _settings(UNIT)["Service"]["CapabilityBoundingSet"] for cap in line.split())
    daemon = BoundedDaemon(made.root, made.instance, made.config_path, made.env, made.ids, capabilities=granted)
    ptrace = "import ctypes; ctypes.CDLL(None).syscall(101, 0, 0, 0, 0)"
    with running(daemon), daemon.client() as client:
        outcome = client.run_tool("python", {"code": "import os; print(os.getuid())"})
        assert outcome.status_name == "OK", outcome.result
        assert outcome.started is not None and outcome.stdout == f"{outcome.started.uid}\n".encode()
        killed = client.run_command(["/usr/bin/python3", "-c", ptrace], profile="kill-ptrace")
        assert (killed.status_name, killed.result.seccomp_syscall_name) == ("SECCOMP_VIOLATION", "ptrace")
        timed_out = client.run_command(["/bin/sleep", "30"], limits={"wall_time_ms": 300})
        assert timed_out.status_name == "TIMEOUT"
