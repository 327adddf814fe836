"""The kernel-log fallback finds the syscall of a seccomp kill by the killed process's host pid."""

from __future__ import annotations

from pathlib import Path

from sandboxd.engine.kmsg import find_seccomp_kill

RECORDS = (
    '5,100,1000,-;audit: type=1326 audit(1.0:2): auid=4294967295 uid=65534 gid=65534 ses=4294967295 pid=4242 '
    'comm="python3" exe="/usr/bin/python3.11" sig=31 arch=c000003e syscall=165 compat=0 ip=0x7f code=0x80000000\n'
    '5,101,1001,-;audit: type=1326 audit(1.1:3): auid=4294967295 uid=65534 gid=65534 ses=4294967295 pid=4343 '
    'comm="sh" exe="/bin/dash" sig=31 arch=c000003e syscall=101 compat=0 ip=0x7f code=0x80000000\n'
    "6,102,1002,-;eth0: link up\n"
)


def test_finds_the_record_of_that_pid(tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.write_text(RECORDS)
    assert find_seccomp_kill(4242, path=str(kmsg), wait_s=0) == 165
    assert find_seccomp_kill(4343, path=str(kmsg), wait_s=0) == 101


def test_no_record_is_none_not_a_guess(tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.write_text(RECORDS)
    assert find_seccomp_kill(1, path=str(kmsg), wait_s=0) is None
    assert find_seccomp_kill(42, path=str(kmsg), wait_s=0) is None  # not a substring match of 4242
    assert find_seccomp_kill(4242, path=str(tmp_path / "absent"), wait_s=0) is None
