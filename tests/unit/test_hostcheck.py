"""What the host must offer before any sandbox is built: refused at start, with the remedy, not per execution."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.engine.hostcheck import check_host, has_mount_setattr

ROOT_MOUNTED = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
IN_A_CHROOT = "22 1 8:1 /srv/jail /srv/jail rw,relatime shared:1 - ext4 /dev/sda1 rw\n"


def mountinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(text)
    return path


def test_this_kernel_has_the_mount_api() -> None:
    assert has_mount_setattr()  # Linux 5.12 or later: what every bind of a sandbox's root is made with


def test_a_kernel_without_the_mount_api_is_refused_with_the_version_needed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mount_setattr: Linux 5\.12 or later"):
        check_host(mountinfo(tmp_path, ROOT_MOUNTED), mount_api=lambda: False)


def test_a_root_that_is_no_mount_point_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a mount point"):
        check_host(mountinfo(tmp_path, IN_A_CHROOT), mount_api=lambda: True)


def test_a_host_with_both_passes(tmp_path: Path) -> None:
    check_host(mountinfo(tmp_path, ROOT_MOUNTED), mount_api=lambda: True)
