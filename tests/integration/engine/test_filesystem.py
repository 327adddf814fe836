"""The sandbox's root: read-only system dirs, no host secrets, writable only where the spec says."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePosixPath

from sandboxd.engine.result import Status
from sandboxd.engine.spec import BindMount

from .conftest import Engine


def test_host_secrets_are_not_visible(engine: Engine) -> None:
    script = "for p in /etc/shadow /etc/gshadow /root /home /etc/sudoers; do [ -e $p ] && echo VISIBLE $p; done; true"
    run = engine.run(engine.spec("/bin/sh", "-c", script))
    assert run.result.status is Status.OK, run.result
    assert run.stdout == b""


def test_writes_outside_writable_dirs_fail(engine: Engine) -> None:
    script = (
        "import os\n"
        "for p in ['/usr/x', '/etc/x', '/x', '/bin/x', '/proc/x', '/dev/x']:\n"
        "    try:\n        open(p, 'w').write('x'); print('WROTE', p)\n"
        "    except OSError as e:\n        print('denied', p, e.errno)\n"
        "for p in ['/tmp/ok', '/work/ok', '/dev/shm/ok']:\n"
        "    open(p, 'w').write('x'); print('wrote', p)\n"
    )
    run = engine.run(engine.spec("/usr/bin/python3", "-c", script))
    assert run.result.status is Status.OK, (run.result, run.stderr)
    out = run.stdout.decode()
    assert "WROTE" not in out
    assert out.count("denied") == 6
    assert out.count("wrote") == 3


def test_dev_holds_the_usual_devices_and_nothing_else(engine: Engine) -> None:
    """/dev has the host's null, zero, full, random and urandom (same device numbers, read and written by
    all), stdio links, a writable /dev/shm — and no way to add a device or reach one it does not list."""
    script = (
        "import errno, os, stat\n"
        "names = sorted(os.listdir('/dev'))\n"
        "print('names', ' '.join(names))\n"
        "for n in ['null', 'zero', 'full', 'random', 'urandom']:\n"
        "    st = os.stat('/dev/' + n)\n"
        "    print(n, stat.S_ISCHR(st.st_mode), oct(st.st_mode & 0o777), os.major(st.st_rdev), os.minor(st.st_rdev))\n"
        "open('/dev/null', 'w').write('x'); print('null reads', repr(open('/dev/null', 'rb').read()))\n"
        "print('zero reads', open('/dev/zero', 'rb').read(4) == bytes(4))\n"
        "print('urandom reads', len(open('/dev/urandom', 'rb').read(16)))\n"
        "try:\n    open('/dev/full', 'wb', buffering=0).write(b'x')\n"
        "except OSError as e:\n    print('full', errno.errorcode[e.errno])\n"
        "try:\n    os.mknod('/dev/shm/mem', stat.S_IFCHR | 0o666, os.makedev(1, 1)); print('MADE')\n"
        "except OSError as e:\n    print('mknod', errno.errorcode[e.errno])\n"
    )
    run = engine.run(engine.spec("/usr/bin/python3", "-c", script))
    assert run.result.status is Status.OK, (run.result, run.stderr)
    lines = run.stdout.decode().splitlines()
    assert lines[0] == "names fd full null random shm stderr stdin stdout urandom zero"
    for name in ("null", "zero", "full", "random", "urandom"):
        host = os.stat(f"/dev/{name}")
        assert f"{name} True 0o666 {os.major(host.st_rdev)} {os.minor(host.st_rdev)}" in lines
    assert "null reads b''" in lines
    assert "zero reads True" in lines
    assert "urandom reads 16" in lines
    assert "full ENOSPC" in lines
    assert "mknod EPERM" in lines


def test_tmpfs_is_size_limited(engine: Engine) -> None:
    from sandboxd.engine.spec import Limits

    limits = Limits(tmpfs_size_bytes=1024 * 1024, wall_time_ms=20_000)
    run = engine.run(engine.spec("/bin/sh", "-c", "head -c 2000000 /dev/zero > /tmp/big", limits=limits))
    assert run.result.status is Status.NONZERO_EXIT
    assert b"No space left" in run.stderr


def test_binds_read_only_and_writable(engine: Engine, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("hello\n")
    out = tmp_path / "out"
    out.mkdir()
    # writable binds belong to the sandboxes' shared group (setgid): every execution's uid may write there
    os.chown(out, 0, engine.config.sandbox_ids.shared_gid)
    out.chmod(0o2770)
    binds = (BindMount(data, PurePosixPath("/data")), BindMount(out, PurePosixPath("/out"), writable=True))
    script = "cat /data/in.txt; echo x > /data/new 2>/dev/null || echo ro-denied; echo result > /out/r.txt"
    run = engine.run(engine.spec("/bin/sh", "-c", script, binds=binds))
    assert run.result.status is Status.OK, (run.result, run.stderr)
    assert run.stdout == b"hello\nro-denied\n"
    assert (out / "r.txt").read_text() == "result\n"
    written = (out / "r.txt").stat()
    assert (written.st_gid, written.st_mode & 0o777) == (engine.config.sandbox_ids.shared_gid, 0o660)
    # the next execution — another uid — may change what this one wrote
    again = engine.run(engine.spec("/bin/sh", "-c", "echo second >> /out/r.txt", binds=binds))
    assert again.result.status is Status.OK, (again.result, again.stderr)
    assert (out / "r.txt").read_text() == "result\nsecond\n"
    assert not (data / "new").exists()


def test_symlink_planted_in_a_bind_source_is_refused(engine: Engine, tmp_path: Path) -> None:
    """A tool that could write /out in an earlier run plants out/sub -> /etc; binding out/sub must refuse."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to("/etc")
    bind = BindMount(out / "sub", PurePosixPath("/sub"))
    run = engine.run(engine.spec("/bin/ls", "/sub", binds=(bind,)))
    assert run.result.status is Status.SETUP_FAILED
    assert "symlink" in run.result.message
    assert run.stdout == b""


MOUNT_FLAGS = ("ro", "rw", "nosuid", "nodev", "noexec")


def test_each_bind_has_exactly_its_flags_whatever_its_source_had(engine: Engine, tmp_path: Path) -> None:
    """Read-only binds ro,nosuid,nodev; device nodes rw,nosuid,noexec (nodev off); a writable bind rw,nosuid,nodev
    — even from a source mounted noexec, as a bind remount sets them: the flags are the sandbox's, not the
    host's (the kernel's own mountinfo, read inside the sandbox)."""
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec,size=64k,mode=2770", "flags-source", str(out)], check=True)
    try:
        os.chown(out, 0, engine.config.sandbox_ids.shared_gid)
        binds = (BindMount(data, PurePosixPath("/data")), BindMount(out, PurePosixPath("/out"), writable=True))
        script = ("for line in open('/proc/self/mountinfo'):\n"
                  "    fields = line.split()\n"
                  f"    print(fields[4], ','.join(o for o in fields[5].split(',') if o in {MOUNT_FLAGS!r}))\n")
        run = engine.run(engine.spec("/usr/bin/python3", "-c", script, binds=binds))
    finally:
        subprocess.run(["umount", str(out)], check=True)
    assert run.result.status is Status.OK, (run.result, run.stderr)
    flags = dict(line.split(" ", 1) for line in run.stdout.decode().splitlines())
    read_only = "ro,nosuid,nodev"
    assert flags["/"] == read_only
    for path in ("/usr", "/etc/ld.so.cache", "/etc/ld.so.conf.d", "/data"):
        assert flags[path] == read_only, (path, flags)
    for name in ("null", "zero", "full", "random", "urandom"):
        assert flags[f"/dev/{name}"] == "rw,nosuid,noexec", (name, flags)
    assert flags["/out"] == "rw,nosuid,nodev", flags
    masked = [path for path in flags if path.startswith("/proc/") and flags[path] != "ro,nosuid,nodev,noexec"]
    assert all(flags[path] == "ro,nosuid,noexec" for path in masked), flags  # /dev/null over /proc files
