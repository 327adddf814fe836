"""The sandbox's native program, ``sandboxd-spawn``, compiled with the package (``setup.py``) from ``native/``.

The daemon starts it once as its spawner (``native/spawner.c``); it forks one waiter per execution, which makes
the namespaces, builds the sandbox — its root, its pid 1, the handler-to-be with its privileges dropped — puts
it in its cgroup, and watches it; pid 1 becomes the sandbox's init, the handler-to-be launches the handler
(``native/waiter.c`` and the files it names). One small static program: no Python process is forked per
execution, so none pays for copying an interpreter's page tables and pages, no process of a sandbox carries an
interpreter's memory and wake-ups, and nothing is exec'd between the spawner and the handler.
"""

from __future__ import annotations

import stat
from pathlib import Path

from sandboxd.base.errors import ConfigError

NATIVE_DIR = Path(__file__).resolve().parent / "native"
SPAWNER_NAME = "sandboxd-spawn"  # the program's file and the spawner's comm
INIT_NAME = "sandbox-init"  # the comm a sandbox's init names itself by (native/init.h): no setup stage
CREATE_CGROUP_STAGE = "create cgroup"  # the waiter's first stage when it makes the cgroup (native/cgroup.c)
# Seccomp kills the watch names one by one in its report (the handler's first, whatever its place); the rest
# are counted. A tool that forks doomed processes in a loop must not grow the report, or the watch, without
# bound (native/watch.c).
KILLS_REPORTED = 32


def spawner_path() -> Path:
    """The program's file, checked to be an executable regular file; ConfigError with the remedy if not."""
    path = NATIVE_DIR / SPAWNER_NAME
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise ConfigError(f"sandboxd's native program {path} is missing ({e.strerror}): it is compiled when "
                          "sandboxd is installed (pip install), which needs a C compiler and libc's static "
                          "library (Debian: gcc, libc6-dev)") from None
    if not stat.S_ISREG(mode) or not mode & stat.S_IXUSR:
        raise ConfigError(f"sandboxd's native program {path} is not an executable file (mode {stat.filemode(mode)})"
                          "; reinstall sandboxd")
    return path


def check_spawner() -> None:
    spawner_path()
