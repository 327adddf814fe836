"""The sandbox's native helpers, compiled with the package (``setup.py``) from ``native/``:

- ``sandbox-init`` — pid 1's init: drops its own privileges, forwards a supervisor's signals to the handler,
  reaps, and reports the handler's wait status (``native/init.c``);
- ``sandbox-exec`` — the handler's last steps: its gate (a pooled sandbox), the search for the handler, the
  seccomp filter, ``execve`` (``native/exec.c``);
- ``sandbox-watch`` — the waiter once it has put the sandbox in its cgroup: traces it, records its seccomp
  kills and reports its end (``native/watch.c``).

All are small static programs: a sandbox's processes leave the Python interpreter they were forked with as soon as
it has built them, so neither the wait at the gate, the init nor the watch carries an interpreter's memory and
wake-ups (nor keeps the spawner's pages shared, which its own writes would then copy). The spawner opens them once
(``O_PATH``) and the sandbox runs them by descriptor (``execveat``): after ``pivot_root`` their host paths are out
of reach, and an upgrade that replaces the files does not mix the spawner's code with newer helpers.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from sandboxd.base.errors import ConfigError
from sandboxd.engine.child import syscalls as sc

NATIVE_DIR = Path(__file__).resolve().parent / "native"
INIT_NAME = "sandbox-init"  # its comm too, which the hung-setup report skips (run.hung_stage)
EXEC_NAME = "sandbox-exec"
WATCH_NAME = "sandbox-watch"
HELPER_NAMES = (INIT_NAME, EXEC_NAME, WATCH_NAME)  # in the order of Helpers' fields


@dataclass(frozen=True)
class Helpers:
    init_fd: int
    exec_fd: int
    watch_fd: int

    def fds(self) -> set[int]:
        return {self.init_fd, self.exec_fd, self.watch_fd}


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


def run_helper(helper_fd: int, argv: list[str], passed: Collection[int], open_until_exec: Collection[int] = ()
               ) -> NoReturn:
    """Become the helper ``helper_fd``: every descriptor closed but ``passed`` (inherited by the helper, which
    is told their numbers in ``argv``) and ``open_until_exec`` (close-on-exec: there to report a failed
    ``execve``, which raises OSError)."""
    sc.close_all_except({*passed, *open_until_exec, helper_fd})
    for fd in passed:
        os.set_inheritable(fd, True)
    os.execve(helper_fd, argv, {})
