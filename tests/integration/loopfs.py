"""Throw-away ext4 file systems on loop devices, for tests that need a disk that can stall (``fsfreeze``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

TOOLS = ("losetup", "mkfs.ext4", "fsfreeze", "mount", "umount", "truncate")


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def _loop_devices_available() -> bool:
    if subprocess.run(["losetup", "--find"], capture_output=True).returncode == 0:
        return True
    subprocess.run(["modprobe", "loop"], capture_output=True)
    return subprocess.run(["losetup", "--find"], capture_output=True).returncode == 0


def require_loop_devices() -> None:
    """Skip unless root with the tools and a loop device: a machine without them cannot stall a disk."""
    if os.geteuid() != 0:
        pytest.skip("loop devices and mounts need root")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")
    if not _loop_devices_available():
        pytest.skip("no loop device: `losetup --find` fails even after `modprobe loop`")


def ext4_on_loop(image: Path, size: str, mount: Path, stack: contextlib.ExitStack) -> None:
    """Make ``image`` an ext4 file system mounted at ``mount``; ``stack`` unmounts and detaches it."""
    run("truncate", "-s", size, str(image))
    device = run("losetup", "--find", "--show", str(image))
    stack.callback(run, "losetup", "--detach", device)
    # No lazy init: no kernel thread writing in the background while the disk is stalled.
    run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", device)
    mount.mkdir()
    run("mount", "-o", "noatime", device, str(mount))
    stack.callback(run, "umount", str(mount))
