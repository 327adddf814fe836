"""/proc as runc masks it: kernel memory, keys, timers and scheduler internals read as empty (a read-only
/dev/null over each), hardware trees are empty, and the kernel's tunables are read-only mounts."""

from __future__ import annotations

import json

from sandboxd.engine.result import Status

from .conftest import Engine

# What runc hides (its maskedPaths) and makes read-only (its readonlyPaths) in a container's /proc.
PROC_MASKED_FILES = ("kcore", "keys", "timer_list", "timer_stats", "sched_debug", "latency_stats",
                     "sysrq-trigger")
PROC_MASKED_DIRS = ("acpi", "scsi", "asound")
PROC_READ_ONLY = ("sys", "bus", "fs", "irq")

REPORT = """
import json, os, sys
files, dirs, read_only = (json.loads(arg) for arg in sys.argv[1:])
mounts = {}
for line in open('/proc/self/mountinfo'):
    fields = line.split()
    mounts[fields[4]] = fields[5].split(',')
report = {}
for name in files:
    path = '/proc/' + name
    if os.path.lexists(path):
        with open(path, 'rb') as f:
            report[name] = [len(f.read()), path in mounts]
for name in dirs:
    if os.path.isdir('/proc/' + name):
        report[name] = [len(os.listdir('/proc/' + name)), '/proc/' + name in mounts]
for name in read_only:
    if os.path.isdir('/proc/' + name):
        report[name] = 'ro' in mounts.get('/proc/' + name, [])
print(json.dumps(report))
"""


def test_proc_is_masked_and_its_tunables_read_only(engine: Engine) -> None:
    args = (json.dumps(PROC_MASKED_FILES), json.dumps(PROC_MASKED_DIRS), json.dumps(PROC_READ_ONLY))
    run = engine.run(engine.spec("/usr/bin/python3", "-c", REPORT, *args))
    assert run.result.status is Status.OK, (run.result, run.stderr)
    report = json.loads(run.stdout)
    masked = [name for name in (*PROC_MASKED_FILES, *PROC_MASKED_DIRS) if name in report]
    assert masked, "none of the masked /proc entries exists on this kernel: the test would prove nothing"
    # timer_list is root-only on the host: unmasked, the sandbox's uid could not even open it
    assert all(report[name] == [0, True] for name in masked), report
    assert report["sys"] is True and report["fs"] is True, report
    assert all(report[name] is True for name in PROC_READ_ONLY if name in report), report
