"""Where ptrace is refused (Yama's ptrace_scope 3, an LSM), sandboxes still run and end with the right verdict:
the watch reports the handler and its status untraced. A process of this test refuses ptrace to itself and all
it starts — the executor, its spawner, the waiters — by a seccomp filter (``ptrace`` fails with EPERM), and runs
the engine there (the project's own profile compiler and ``install_bpf``).

Traced, a SIGSYS the handler sends itself is a signal like any other (no seccomp kill was recorded); untraced it
cannot be told from a seccomp kill, so the verdict says SECCOMP_VIOLATION and looks for the kernel's record —
which is how these runs show that they were untraced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sandboxd.engine.result import Status

from .conftest import Engine

INTEGRATION = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
from pathlib import Path

from sandboxd.engine.seccomp.install import install_bpf

install_bpf(bytes.fromhex(sys.argv[7]))  # ptrace fails with EPERM here and in all this starts (root: no no_new_privs)
sys.path[:0] = [sys.argv[1]]
from engine.conftest import Engine
from sandboxd.engine.config import EngineConfig
from sandboxd.engine.ids import IdRange

state_dir, instance, first_id, id_count, kind = sys.argv[2:7]
engine = Engine(EngineConfig(state_dir=Path(state_dir), instance=instance,
                             sandbox_ids=IdRange(int(first_id), int(id_count))), pooled=kind == "pooled")
report = {}
for name, command in (("exit", "exit 7"), ("sigsys", "kill -SYS $$"), ("child", "sh -c 'exit 3'; echo $?")):
    run = engine.run(engine.spec("/bin/sh", "-c", command))
    report[name] = {"status": run.result.status.value, "exit_code": run.result.exit_code,
                    "signal": run.result.signal, "pid": run.started.pid if run.started else None,
                    "stdout": run.stdout.decode(), "message": run.result.message, "stage": run.result.setup_stage}
print(json.dumps(report))
"""


def _untraced(engine: Engine, tmp_path: Path) -> dict[str, dict[str, object]]:
    profile = tmp_path / "no-ptrace.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                                   "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    config = engine.config
    kind = "pooled" if engine.pooled else "fresh"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(INTEGRATION), str(config.state_dir), config.instance,
                           str(config.sandbox_ids.first), str(config.sandbox_ids.count), kind,
                           engine.bpf(profile).hex()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_an_untraced_sandbox_reports_its_handler_and_the_handlers_status(engine: Engine, tmp_path: Path) -> None:
    report = _untraced(engine, tmp_path)
    exited = report["exit"]
    assert (exited["status"], exited["exit_code"]) == (Status.NONZERO_EXIT.value, 7)  # the handler's, not the init's
    assert isinstance(exited["pid"], int) and exited["pid"] > 1
    assert report["child"]["status"] == Status.OK.value and report["child"]["stdout"] == "3\n"
    # untraced, its own SIGSYS cannot be told from a seccomp kill: the traced run below says SIGNALED
    assert report["sigsys"]["status"] == Status.SECCOMP_VIOLATION.value, report["sigsys"]


def test_traced_a_sigsys_the_handler_sends_itself_is_a_signal(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/sh", "-c", "kill -SYS $$"))
    assert run.result.status is Status.SIGNALED, run.result
    assert run.result.signal == 31
