"""Compiled seccomp filters against real programs: what runs, what gets EPERM/ENOSYS, what dies by SIGSYS.

Each case forks a child that only sets no_new_privs, installs the BPF and execs (the same last steps the
sandbox child takes); output comes back over pipes.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import prctl
import pytest

from sandboxd.engine.seccomp.profile import compile_bpf, install_bpf, load_profile

pytestmark = pytest.mark.root

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROFILE = REPO_ROOT / "seccomp-profiles" / "default.json"
PYTHON = "/usr/bin/python3"
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Outcome:
    code: int  # exit status, or -signal when killed (os.waitstatus_to_exitcode)
    stdout: str
    stderr: str


def run_filtered(bpf: bytes, argv: list[str]) -> Outcome:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: nothing here may return into pytest
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            prctl.set_no_new_privs(1)
            install_bpf(bpf)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.close(out_w)
    os.close(err_w)
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)  # our own child, not yet reaped: the pid cannot be reused
            os.waitpid(pid, 0)
            pytest.fail(f"{argv} did not finish within {TIMEOUT_S}s")
        time.sleep(0.01)
    # Outputs here are small (well under a pipe's 64 KiB), so reading after the exit cannot block.
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
        return Outcome(os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode())


def python(bpf: bytes, code: str) -> Outcome:
    return run_filtered(bpf, [PYTHON, "-c", textwrap.dedent(code)])


@pytest.fixture(scope="module")
def default_bpf() -> bytes:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    return compile_bpf(load_profile(DEFAULT_PROFILE))


def shared_seccomp_dir() -> Path:
    env = os.environ.get("SANDBOXD_SHARED_DATA")
    directory = (Path(env) if env else REPO_ROOT / ".." / "shared" / "data") / "seccomp"
    if not (directory / "moby-default.json").is_file():
        pytest.skip(f"Docker's seccomp profiles not found in {directory} (set SANDBOXD_SHARED_DATA)")
    return directory


# --- what must keep working under default.json ------------------------------------------------------------


def test_shell_pipeline(default_bpf: bytes) -> None:
    result = run_filtered(default_bpf, ["/bin/sh", "-c", "echo hi | wc -c"])
    assert (result.code, result.stdout.strip()) == (0, "3"), result.stderr


def test_coreutils(default_bpf: bytes) -> None:
    result = run_filtered(default_bpf, ["/bin/ls", "/"])
    assert result.code == 0, result.stderr
    assert "usr" in result.stdout.split()
    script = "printf 'b\\na\\nc\\n' | sort | head -n 2 | cat; cat /proc/self/status | grep -c Seccomp"
    result = run_filtered(default_bpf, ["/bin/sh", "-c", script])
    assert result.code == 0, result.stderr
    assert result.stdout.split() == ["a", "b", "2"]


def test_python_stdlib_work(default_bpf: bytes) -> None:
    result = python(
        default_bpf,
        """
        import json, os, sqlite3, subprocess, tempfile, threading
        data = json.loads(json.dumps({"a": [1, 2]}))
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            db = sqlite3.connect(os.path.join(tmp, "t.db"))
            db.execute("create table t(x)")
            db.execute("insert into t values (41)")
            db.commit()
            row = db.execute("select x + 1 from t").fetchone()[0]
            db.close()
            with open(os.path.join(tmp, "f.txt"), "w") as f:
                f.write("written")
        results = []
        worker = threading.Thread(target=lambda: results.append(sum(range(10))))
        worker.start()
        worker.join()
        sub = subprocess.run(["/bin/echo", "child"], capture_output=True, text=True, check=True)
        status = open("/proc/self/status").read()
        mode = [line.split()[1] for line in status.splitlines() if line.startswith("Seccomp:")][0]
        print(data["a"], row, results[0], sub.stdout.strip(), mode)
        """,
    )
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == "[1, 2] 42 45 child 2"  # Seccomp: 2 = filter mode


def test_fork_still_works(default_bpf: bytes) -> None:
    result = python(
        default_bpf,
        """
        import os
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """,
    )
    assert (result.code, result.stdout.strip()) == (0, "7"), result.stderr


def test_clone3_is_enosys_and_threads_fall_back(default_bpf: bytes) -> None:
    result = python(
        default_bpf,
        """
        import ctypes, threading
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.syscall(435, None, ctypes.c_size_t(88))  # clone3
        err = ctypes.get_errno()
        seen = []
        t = threading.Thread(target=seen.append, args=("thread",))
        t.start()
        t.join()
        print(rc, err, seen[0])
        """,
    )
    assert (result.code, result.stdout.split()) == (0, ["-1", "38", "thread"]), result.stderr


@pytest.mark.parametrize(
    ("name", "nr", "expected_errno"), [("io_uring_setup", 425, 38), ("userfaultfd", 323, 1)]
)
def test_probed_syscalls_fail_softly(default_bpf: bytes, name: str, nr: int, expected_errno: int) -> None:
    result = python(
        default_bpf,
        f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.syscall({nr}, 0, 0), ctypes.get_errno())
        """,
    )
    assert (result.code, result.stdout.split()) == (0, ["-1", str(expected_errno)]), (name, result.stderr)


# --- what kills the process -------------------------------------------------------------------------------

# x86_64 numbers, with arguments that would fail harmlessly (EFAULT/EBADF/ESRCH…) if the filter let them by.
KILLED_SYSCALLS = [
    ("mount", 165, "0, 0, 0, 0, 0"),
    ("umount2", 166, "0, 0"),
    ("setns", 308, "-1, 0"),
    ("ptrace", 101, "0x4206, 0, 0, 0"),  # PTRACE_SEIZE of pid 0
    ("bpf", 321, "-1, 0, 0"),
    ("perf_event_open", 298, "0, 0, -1, -1, 0"),
    ("keyctl", 250, "-1, 0, 0, 0, 0"),
    ("add_key", 248, "0, 0, 0, 0, 0"),
    ("pivot_root", 155, "0, 0"),
    ("swapoff", 168, "0"),
    ("delete_module", 176, "0, 0"),
    ("open_by_handle_at", 304, "-1, 0, 0"),
    ("clone(CLONE_NEWUSER)", 56, "0x10000000 | 17, 0, 0, 0, 0"),
]


@pytest.mark.parametrize(("name", "nr", "args"), KILLED_SYSCALLS, ids=[k[0] for k in KILLED_SYSCALLS])
def test_privileged_syscalls_die_by_sigsys(default_bpf: bytes, name: str, nr: int, args: str) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers are x86_64's")
    result = python(
        default_bpf,
        f"""
        import ctypes, os
        if ctypes.CDLL(None).syscall({nr}, {args}) == 0:
            os._exit(0)  # a clone child, had the filter let it through
        print("survived")
        """,
    )
    assert result.code == -signal.SIGSYS, (name, result)


def test_mount_via_ctypes_dies_by_sigsys(default_bpf: bytes) -> None:
    result = python(default_bpf, "import ctypes; ctypes.CDLL(None).syscall(165, 0, 0, 0, 0, 0)")
    assert result.code == -signal.SIGSYS, result


def test_unshare_newnet_dies_by_sigsys(default_bpf: bytes) -> None:
    result = python(default_bpf, "import ctypes; ctypes.CDLL(None).unshare(0x40000000); print('survived')")
    assert result.code == -signal.SIGSYS, result


def test_foreign_abi_syscall_kills_the_process(default_bpf: bytes) -> None:
    # An x32 getppid: default.json covers x86_64 only, so this is a bad-arch syscall -> KILL_PROCESS.
    if os.uname().machine != "x86_64":
        pytest.skip("x32 is an x86_64 ABI")
    result = python(
        default_bpf, "import ctypes; ctypes.CDLL(None).syscall(0x40000000 | 110); print('survived')"
    )
    assert result.code == -signal.SIGSYS, result


# --- Docker's default profile and custom profiles --------------------------------------------------------


def test_moby_default_runs_python_and_denies_mount() -> None:
    bpf = compile_bpf(load_profile(shared_seccomp_dir() / "moby-default.json"))
    result = python(
        bpf,
        """
        import ctypes, json, threading
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        libc = ctypes.CDLL(None, use_errno=True)
        print(json.dumps([libc.syscall(165, 0, 0, 0, 0, 0), ctypes.get_errno()]))
        """,
    )
    assert (result.code, result.stdout.strip()) == (0, "[-1, 1]"), result.stderr


def test_custom_errno_rule(tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    }
    path = tmp_path / "getcwd-eacces.json"
    path.write_text(json.dumps(profile))
    result = python(compile_bpf(load_profile(path)), "import os; os.getcwd()")
    assert result.code == 1
    assert "PermissionError" in result.stderr
