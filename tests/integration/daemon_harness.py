"""A real sandboxd *process* for the end-to-end tests: started with the venv's ``sandboxd`` entry point on a
temp socket, a temp state dir and a unique instance; stopped with SIGTERM; and checked to have left nothing
behind (execution cgroups, processes of its sandbox ids, the socket).

Every daemon and engine a test starts gets a sandbox id range of its own (:func:`fresh_ids`), so "a process of
this test's sandboxes" is a process whose uid is in that range — never a host ``nobody`` or the sandboxes of
another sandboxd running beside the suite.

Each test module makes its own fixture, so it can shape the daemon's configuration::

    daemon = daemon_fixture(max_concurrent_executions=2, grace_period="1s")
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandboxd.cli.client import SandboxClient, SandboxdError
from sandboxd.engine.ids import IdRange

BIN = Path(sys.executable).parent
SANDBOXD = BIN / "sandboxd"
SANDBOXCTL = BIN / "sandboxctl"
TEST_IDS_COUNT = 4096
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0
FRAMED_SOCKET_NAME = "sandboxd.framed.sock"

# A profile that allows everything but ptrace, which kills: SECCOMP_VIOLATION on demand.
KILL_PTRACE_PROFILE = """{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"}]
}
"""


def fresh_ids() -> IdRange:
    """A sandbox id range for one daemon or engine of a test: random, far from any host account."""
    return IdRange(2_100_000_000 + random.randrange(500_000) * TEST_IDS_COUNT, TEST_IDS_COUNT)


@dataclass
class Daemon:
    root: Path
    instance: str
    config_path: Path
    env: dict[str, str]
    ids: IdRange
    process: subprocess.Popen[bytes] | None = None
    terminated: bool = False
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "sandboxd.log"

    @property
    def socket(self) -> Path:
        return self.root / "sandboxd.sock"

    @property
    def framed_socket(self) -> Path:
        """Where the daemon serves its framed socket, when made with ``framed=True``."""
        return self.root / FRAMED_SOCKET_NAME

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def tools_dir(self) -> Path:
        return self.root / "tools"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit" / "audit.log"

    def audit_records(self) -> list[dict[str, Any]]:
        """Every record of the audit log (rotated files first), parsed."""
        files = [*sorted(self.audit_log.parent.glob("audit.log.*")), self.audit_log]
        return [json.loads(line) for path in files if path.exists()
                for line in path.read_text().splitlines() if line]

    def command(self) -> list[str]:
        return [str(SANDBOXD), "--config", str(self.config_path), "--socket", str(self.socket),
                "--state-dir", str(self.state_dir), "--instance", self.instance]

    def start(self) -> None:
        self.terminated = False
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"sandboxd exited {self.process.returncode} at start:\n{self.logs()}")
            if self.socket.exists():
                try:
                    with SandboxClient(self.socket) as client:
                        if client.health() == "SERVING":
                            return
                except SandboxdError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"sandboxd did not become ready in {START_TIMEOUT_S}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self) -> SandboxClient:
        return SandboxClient(self.socket)

    def framed_client(self) -> SandboxClient:
        """A client whose executions go through the framed socket (the daemon made with ``framed=True``)."""
        return SandboxClient(self.socket, framed_socket=self.framed_socket)

    def ctl(self, *args: str, stdin: bytes | None = None, timeout_s: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``sandboxctl --socket <ours> ARGS`` and return what it did."""
        return subprocess.run([str(SANDBOXCTL), "--socket", str(self.socket), *args], input=stdin,
                              capture_output=True, timeout=timeout_s, env=env)

    def ctl_popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(SANDBOXCTL), "--socket", str(self.socket), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        self.terminated = self.terminated or signum in (signal.SIGTERM, signal.SIGINT)

    def stop(self) -> int:
        """SIGTERM, wait, and return the exit status (SIGKILL and fail if it hangs)."""
        assert self.process is not None
        if self.process.poll() is None and not self.terminated:
            self.signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"sandboxd did not stop within {STOP_TIMEOUT_S}s:\n{self.logs()}") from None


def cgroup_dirs(instance: str) -> list[Path]:
    """This daemon's cgroup directories in every v1 hierarchy (below our own cgroup there), and on v2."""
    found = []
    with open("/proc/self/cgroup", encoding="ascii") as file:
        for line in file:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else ["unified"]:
                base = Path("/sys/fs/cgroup") / controller.removeprefix("name=") / path.lstrip("/")
                found.append(base / f"sandboxd-{instance}")
    found.append(Path("/sys/fs/cgroup/pids") / f"sandboxd-{instance}")
    return found


def sandbox_processes(ids: IdRange) -> list[int]:
    """Processes whose uid is in ``ids``: the sandboxes of the one daemon or engine that owns the range."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid in ids:
                    pids.append(int(entry.name))
            except FileNotFoundError:
                pass
    return pids


def assert_nothing_left(daemon: Daemon) -> None:
    leaves = [leaf for base in cgroup_dirs(daemon.instance) if base.is_dir()
              for leaf in base.iterdir() if leaf.is_dir()]
    assert not leaves, f"execution cgroups left behind: {leaves}"
    bases = [base for base in cgroup_dirs(daemon.instance) if base.exists()]
    assert not bases, f"the daemon's cgroup directories were left behind: {bases}"
    deadline = time.monotonic() + 5
    while sandbox_processes(daemon.ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not sandbox_processes(daemon.ids), f"processes of ids {daemon.ids} survived: {sandbox_processes(daemon.ids)}"
    assert not daemon.socket.exists(), "the socket was not removed"
    assert not list(daemon.root.glob(f".{daemon.socket.name}.*")), "a socket bound aside was left"
    assert not daemon.framed_socket.exists(), "the framed socket was not removed"
    assert not list(daemon.root.glob(f".{FRAMED_SOCKET_NAME}.*")), "a framed socket bound aside was left"
    root = daemon.state_dir / "root"
    assert not root.exists() or not any(root.iterdir()), "the sandbox root mount point is not empty"


def reload_and_wait(daemon: Daemon) -> dict[str, Any]:
    """SIGHUP, then the audit record that says how the reload went."""
    seen = len(daemon.audit_records())
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for record in daemon.audit_records()[seen:]:
            if record["event"] in ("daemon.reloaded", "daemon.reload_failed"):
                return record
        time.sleep(0.05)
    raise AssertionError(f"no reload record within 30s:\n{daemon.logs()}")


def write_config(root: Path, *, tools: dict[str, str], ids: IdRange, limits: dict[str, str] | None = None,
                 extra: str = "", top: str = "", pool_size: int = 0, **daemon_keys: Any) -> Path:
    """The daemon's TOML: ``top`` (top-level keys), ``[daemon]`` keys, ``[sandbox.limits]``, the audit log in
    ``root/audit``, then ``extra`` (more tables: ``[roles.x]``, ``[auth]`` …; an ``[audit]`` there replaces
    ours). ``pool_size``: the warm pool's (off unless a test is about it: a pooled sandbox is a process of a
    sandbox uid and a cgroup leaf standing by, which tests of what is left must not meet)."""
    (root / "tools").mkdir()
    (root / "profiles").mkdir()
    (root / "profiles" / "kill-ptrace.json").write_text(KILL_PTRACE_PROFILE)
    for name, text in tools.items():
        (root / "tools" / f"{name}.toml").write_text(text)
    lines = [top, f'tools_dir = "{root / "tools"}"', f'profiles_dir = "{root / "profiles"}"', "[daemon]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in daemon_keys.items()]
    lines += ["[sandbox]", f'ids = "{ids}"', "[sandbox.pool]", f"size = {pool_size}"]
    lines += ["[sandbox.limits]"] + [f"{key} = {json.dumps(value)}" for key, value in (limits or {}).items()]
    if "[audit]" not in extra:
        lines += ["[audit]", f'path = "{root / "audit" / "audit.log"}"']
    path = root / "sandboxd.toml"
    path.write_text("\n".join(lines) + "\n" + extra + "\n")
    return path


def make_daemon(tmp_path: Path, *, tools: dict[str, str] | None = None, env: dict[str, str] | None = None,
                limits: dict[str, str] | None = None, extra: str = "", top: str = "", pool_size: int = 0,
                framed: bool = False, **daemon_keys: Any) -> Daemon:
    """A daemon (not started) with test tools, a test profile, [sandbox.limits], [daemon] keys and ``extra``;
    ``framed``: serving a framed socket too (:attr:`Daemon.framed_socket`)."""
    root = tmp_path / f"d-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    if framed:
        daemon_keys["framed_socket"] = str(root / FRAMED_SOCKET_NAME)
    ids = fresh_ids()
    config = write_config(root, tools=tools or {}, ids=ids, limits=limits, extra=extra, top=top,
                          pool_size=pool_size, **daemon_keys)
    return Daemon(root, f"test-d-{uuid.uuid4().hex[:8]}", config, {**os.environ, **(env or {})}, ids)


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    """Start ``daemon``; at the end stop it (also after a failed start), check it exited 0 and left nothing."""
    try:
        daemon.start()
        yield daemon
    finally:
        if daemon.process is not None:
            status = daemon.stop()
            assert status == 0, f"sandboxd exited {status}:\n{daemon.logs()}"
            assert_nothing_left(daemon)


def daemon_fixture(**options: Any) -> Callable[..., Iterator[Daemon]]:
    """A pytest fixture: a started daemon with ``options`` (see :func:`make_daemon`), checked at teardown."""

    @pytest.fixture
    def fixture(tmp_path: Path) -> Iterator[Daemon]:
        if os.geteuid() != 0:
            pytest.skip("the daemon's end-to-end tests need root")
        with running(make_daemon(tmp_path, **options)) as daemon:
            yield daemon

    return fixture


def metrics_url(daemon: Daemon) -> str:
    match = re.search(r"metrics on (http://[\d.]+:\d+/metrics)", daemon.logs())
    assert match, f"the daemon did not log its metrics address:\n{daemon.logs()}"
    return match.group(1)


def scrape(daemon: Daemon) -> dict[str, float]:
    with urllib.request.urlopen(metrics_url(daemon), timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


# A policy without the shipped admin role's rate (1000/min, burst 200), for benchmarks' bursts.
UNMETERED_POLICY = """
[principals.local-admin]
roles = ["bench"]
[roles.bench]
tools = ["*"]
commands = true
admin = true
rate_per_minute = 100000
burst = 10000
"""


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def crash(daemon: Daemon) -> None:
    """``kill -9`` the daemon and its spawner, as a crash would; the next :meth:`Daemon.start` recovers."""
    import psutil

    assert daemon.process is not None
    spawners = psutil.Process(daemon.process.pid).children()
    assert spawners, "the daemon has no spawner child"
    os.kill(daemon.process.pid, signal.SIGKILL)
    for spawner in spawners:
        try:
            os.kill(spawner.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    daemon.process.wait()
    daemon.terminated = True

