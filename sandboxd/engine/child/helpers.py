"""The sandbox's native programs, compiled with the package (``setup.py``) from ``native/``:

- ``sandbox-waiter`` — the spawner's child for one execution: makes the namespaces, builds the sandbox (its
  root, its pid 1, the handler-to-be with its privileges dropped), puts it in its cgroup, and becomes the
  watch (``native/waiter.c``, ``sandbox.c``, ``rootfs.c``, ``plan.c``);
- ``sandbox-init`` — pid 1's init: drops its own privileges, forwards a supervisor's signals to the handler,
  reaps, and reports the handler's wait status (``native/init.c``);
- ``sandbox-exec`` — the handler's last steps: its gate (a pooled sandbox), the search for the handler, the
  seccomp filter, ``execve`` (``native/exec.c``);
- ``sandbox-watch`` — the waiter once it has put the sandbox in its cgroup: traces it, records its seccomp
  kills and reports its end (``native/watch.c``).

All are small static programs: no Python process is forked per execution, so no execution pays for copying an
interpreter's page tables and pages, and neither the wait at the gate, the init nor the watch carries an
interpreter's memory and wake-ups. The spawner opens them once (``O_PATH``) and starts the waiter by descriptor;
the sandbox runs the others by descriptor (``execveat``): after ``pivot_root`` their host paths are out of reach,
and an upgrade that replaces the files does not mix the spawner's code with newer helpers.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sandboxd.base.errors import ConfigError

NATIVE_DIR = Path(__file__).resolve().parent / "native"
INIT_NAME = "sandbox-init"  # its comm too, which the hung-setup report skips (run.hung_stage)
EXEC_NAME = "sandbox-exec"
WATCH_NAME = "sandbox-watch"
WAITER_NAME = "sandbox-waiter"
HELPER_NAMES = (INIT_NAME, EXEC_NAME, WATCH_NAME, WAITER_NAME)  # in the order of Helpers' fields
# Seccomp kills the watch names one by one in its report (the handler's first, whatever its place); the rest
# are counted. A tool that forks doomed processes in a loop must not grow the report, or the watch, without
# bound (native/watch.c).
KILLS_REPORTED = 32


@dataclass(frozen=True)
class Helpers:
    init_fd: int
    exec_fd: int
    watch_fd: int
    waiter_fd: int

    def fds(self) -> tuple[int, ...]:
        return self.init_fd, self.exec_fd, self.watch_fd, self.waiter_fd


def helper_path(name: str) -> Path:
    """The helper's file, checked to be an executable regular file; ConfigError with the remedy if not."""
    path = NATIVE_DIR / name
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise ConfigError(f"sandboxd's native helper {path} is missing ({e.strerror}): it is compiled when "
                          "sandboxd is installed (pip install), which needs a C compiler and libc's static "
                          "library (Debian: gcc, libc6-dev)") from None
    if not stat.S_ISREG(mode) or not mode & stat.S_IXOTH:
        raise ConfigError(f"sandboxd's native helper {path} is not an executable file (mode {stat.filemode(mode)})"
                          ": every sandbox's uid must be able to execute it; reinstall sandboxd")
    return path


def check_helpers() -> None:
    for name in HELPER_NAMES:
        helper_path(name)


def open_helpers() -> Helpers:
    """The helpers as ``O_PATH`` descriptors (close-on-exec: the process that runs one closes it so)."""
    flags = os.O_PATH | os.O_CLOEXEC
    return Helpers(*(os.open(helper_path(name), flags) for name in HELPER_NAMES))
