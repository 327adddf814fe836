"""Inside the sandbox: a uid of its own, no capabilities at all, no_new_privs, a seccomp filter, an init as
pid 1 — as unprivileged and closed to the handler — and the handler as pid 2, signals as on a normal host."""

from __future__ import annotations

import json

from sandboxd.engine.result import Status

from .conftest import Engine, status_fields


def test_identity_capabilities_and_filter(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/cat", "/proc/self/status"))
    assert run.result.status is Status.OK, run.result
    fields = status_fields(run.stdout.decode())
    ids = engine.config.sandbox_ids
    assert run.started is not None and run.started.uid in ids and run.started.uid != ids.shared_gid
    assert fields["Uid"].split() == [str(run.started.uid)] * 4
    assert fields["Gid"].split() == [str(run.started.uid)] * 4  # a gid of its own too
    assert fields["Groups"].split() == [str(ids.shared_gid)]  # the shared group of writable binds
    for capset in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[capset], 16) == 0, f"{capset} is {fields[capset]}"
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"


def test_an_init_is_pid_one_and_the_handler_pid_two(engine: Engine) -> None:
    script = ("import os, socket; print(os.getpid(), os.getppid(), socket.gethostname(), "
              "open('/proc/1/comm').read().strip(), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    run = engine.run(engine.spec("/usr/bin/python3", "-c", script, hostname="toolbox"))
    assert run.result.status is Status.OK, run.result
    pid, ppid, hostname, init_comm, pids = run.stdout.decode().split(" ", 4)
    assert (pid, ppid, hostname, init_comm) == ("2", "1", "toolbox", "sandbox-init")
    assert pids.strip() == "[1, 2]"  # the init and the handler: nothing of the host, nothing else


INIT_STATUS = r"""
import errno, json
fields = dict(line.split(':', 1) for line in open('/proc/1/status').read().splitlines())
opened = {}
for name in ('mem', 'environ'):
    try:
        open(f'/proc/1/{name}', 'rb').close()
        opened[name] = 'opened'
    except OSError as e:
        opened[name] = errno.errorcode[e.errno]
print(json.dumps([{k: v.strip() for k, v in fields.items()}, opened]))
"""


def test_the_init_holds_no_privilege_and_is_closed_to_the_handler(engine: Engine) -> None:
    run = engine.run(engine.spec("/usr/bin/python3", "-c", INIT_STATUS))
    assert run.result.status is Status.OK, run.result
    fields, opened = json.loads(run.stdout)
    assert run.started is not None
    assert fields["Name"] == "sandbox-init"
    assert fields["Uid"].split() == [str(run.started.uid)] * 4
    for capset in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[capset], 16) == 0, f"the init's {capset} is {fields[capset]}"
    assert fields["NoNewPrivs"] == "1"
    # Not dumpable: the handler, of the same uid, can neither write its memory nor read its environment.
    assert opened == {"mem": "EACCES", "environ": "EACCES"}


def test_no_other_process_is_visible(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/sh", "-c", "ls /proc | grep -E '^[0-9]+$'"))
    assert run.result.status is Status.OK, run.result
    pids = sorted(int(p) for p in run.stdout.split())
    assert pids[:2] == [1, 2]
    assert max(pids) <= 4, pids  # init (1), sh (2), ls and grep: nothing of the host
