"""The sandbox's native program, ``sandbox-waiter``, compiled with the package (``setup.py``) from ``native/``.

The spawner starts one per execution (``posix_spawn``); it makes the namespaces, builds the sandbox — its root,
its pid 1, the handler-to-be with its privileges dropped — puts it in its cgroup, and watches it; pid 1 becomes
the sandbox's init, the handler-to-be launches the handler (``native/waiter.c`` and the files it names). One
small static program: no Python process is forked per execution, so none pays for copying an interpreter's page
tables and pages, no process of a sandbox carries an interpreter's memory and wake-ups, and nothing is exec'd
between the spawner and the handler. The spawner opens it once (``O_PATH``) and starts it by that descriptor:
an upgrade that replaces the file does not mix the spawner's code with a newer waiter.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sandboxd.base.errors import ConfigError

NATIVE_DIR = Path(__file__).resolve().parent / "native"
WAITER_NAME = "sandbox-waiter"
INIT_NAME = "sandbox-init"  # the comm a sandbox's init names itself by (native/init.h): no setup stage
# Seccomp kills the watch names one by one in its report (the handler's first, whatever its place); the rest
# are counted. A tool that forks doomed processes in a loop must not grow the report, or the watch, without
# bound (native/watch.c).
KILLS_REPORTED = 32


def waiter_path() -> Path:
    """The waiter's file, checked to be an executable regular file; ConfigError with the remedy if not."""
    path = NATIVE_DIR / WAITER_NAME
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


def check_waiter() -> None:
    waiter_path()


def open_waiter() -> int:
    """The waiter as an ``O_PATH`` descriptor (close-on-exec)."""
    return os.open(waiter_path(), os.O_PATH | os.O_CLOEXEC)
