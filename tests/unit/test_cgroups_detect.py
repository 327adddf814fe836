"""Backend detection from fixture mountinfo and /proc/self/cgroup files, root re-based to a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxd.base.errors import CgroupError
from sandboxd.engine.cgroups import detect_backend
from sandboxd.engine.cgroups.detect import is_host_root, parse_mountinfo, parse_proc_cgroup
from sandboxd.engine.cgroups.v1 import V1Backend
from sandboxd.engine.cgroups.v2 import V2Backend

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/abc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""
COMOUNTED_MOUNTINFO = """\
25 24 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw
26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
27 25 0:24 / /sys/fs/cgroup/memory rw shared:10 - cgroup cgroup rw,memory
28 25 0:25 / /sys/fs/cgroup/pids rw shared:11 - cgroup cgroup rw,pids
29 25 0:26 /docker/c1 /sys/fs/cgroup/freezer rw shared:12 - cgroup cgroup rw,freezer
"""
COMOUNTED_CGROUP = "5:freezer:/docker/c1/inner\n4:pids:/\n3:memory:/m\n2:cpu,cpuacct:/c\n"
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
V2_CGROUP = "0::/system.slice/sandboxd.service\n"


def detect(tmp_path: Path, mountinfo: str, proc_cgroup: str) -> object:
    (tmp_path / "mountinfo").write_text(mountinfo)
    (tmp_path / "cgroup").write_text(proc_cgroup)
    return detect_backend(
        tmp_path / "fs", "test", proc_self_cgroup=tmp_path / "cgroup", mountinfo=tmp_path / "mountinfo"
    )


def make_v2_own(tmp_path: Path, path: str, controllers: str) -> Path:
    own = tmp_path / "fs" / path
    own.mkdir(parents=True, exist_ok=True)
    (own / "cgroup.controllers").write_text(controllers)
    return own


def test_hybrid_host_without_unified_controllers_is_v1(tmp_path: Path) -> None:
    make_v2_own(tmp_path, "unified", "")  # cgroup2 mounted but with no controllers, like this host
    backend = detect(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert isinstance(backend, V1Backend)
    fs = tmp_path / "fs"
    assert backend.base.split(", ") == [
        str(fs / "memory/process_api/abc/sandboxd-test"),
        str(fs / "pids/sandboxd-test"),
        str(fs / "cpu/sandboxd-test"),
        str(fs / "cpuacct/sandboxd-test"),
        str(fs / "freezer/sandboxd-test"),
    ]


def test_co_mounted_cpu_cpuacct_and_a_mount_showing_a_subtree(tmp_path: Path) -> None:
    backend = detect(tmp_path, COMOUNTED_MOUNTINFO, COMOUNTED_CGROUP)
    assert isinstance(backend, V1Backend)
    fs = tmp_path / "fs"
    assert backend.base.split(", ") == [
        str(fs / "memory/m/sandboxd-test"),
        str(fs / "pids/sandboxd-test"),
        str(fs / "cpu,cpuacct/c/sandboxd-test"),
        str(fs / "freezer/inner/sandboxd-test"),  # mount root /docker/c1 shows our /docker/c1/inner
    ]


def test_unified_hierarchy_with_controllers_is_v2(tmp_path: Path) -> None:
    own = make_v2_own(tmp_path, "system.slice/sandboxd.service", "cpuset cpu io memory pids\n")
    backend = detect(tmp_path, V2_MOUNTINFO, V2_CGROUP)
    assert isinstance(backend, V2Backend)
    assert backend.base == str(own)


def test_v2_preferred_on_hybrid_host_when_unified_has_controllers(tmp_path: Path) -> None:
    make_v2_own(tmp_path, "unified/svc", "memory cpu pids")
    backend = detect(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP.replace("0::/", "0::/svc"))
    assert isinstance(backend, V2Backend)
    assert backend.base == str(tmp_path / "fs/unified/svc")


def test_v2_in_root_cgroup_is_detected_and_prepare_refuses(tmp_path: Path) -> None:
    make_v2_own(tmp_path, "", "cpu memory pids")
    backend = detect(tmp_path, V2_MOUNTINFO, "0::/\n")
    assert isinstance(backend, V2Backend)
    with pytest.raises(CgroupError, match="root cgroup"):
        backend.prepare()


def test_the_root_of_a_private_cgroup_namespace_is_delegated_not_the_hosts(tmp_path: Path) -> None:
    # A container's cgroup namespace: /proc/self/cgroup says 0::/ and the cgroup2 mount shows the namespace's
    # root — the container's own cgroup, which has the files of a non-root cgroup (the host's root has none).
    own = make_v2_own(tmp_path, "", "cpu memory pids")
    assert is_host_root("/", own)
    (own / "cgroup.type").write_text("domain\n")
    assert not is_host_root("/", own) and not is_host_root("/kubepods/pod1/c1", own)
    backend = detect(tmp_path, V2_MOUNTINFO, "0::/\n")
    assert isinstance(backend, V2Backend) and backend.base == str(own)
    assert not backend._is_root  # prepare() takes it as delegated (tests/integration/v2: for real)


def test_v1_missing_freezer_is_an_error_with_the_remedy(tmp_path: Path) -> None:
    make_v2_own(tmp_path, "unified", "")
    mountinfo = "\n".join(line for line in HYBRID_MOUNTINFO.splitlines() if "freezer" not in line)
    with pytest.raises(CgroupError) as info:
        detect(tmp_path, mountinfo, HYBRID_CGROUP)
    message = str(info.value)
    assert "the unified hierarchy at" in message and "does not offer memory, cpu, pids" in message
    assert "no cgroup v1 hierarchy is mounted for freezer" in message
    assert "Delegate=yes" in message and "mount the v1" in message


def test_v2_missing_memory_and_no_v1_is_an_error(tmp_path: Path) -> None:
    make_v2_own(tmp_path, "system.slice/sandboxd.service", "cpu pids\n")
    with pytest.raises(CgroupError, match=r"does not offer memory;.*v1: no cgroup v1 hierarchy is mounted"):
        detect(tmp_path, V2_MOUNTINFO, V2_CGROUP)


def test_no_cgroups_at_all(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="v2: no cgroup2 hierarchy is mounted"):
        detect(tmp_path, "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n", "")


def test_cgroup_outside_our_namespace_is_not_used(tmp_path: Path) -> None:
    make_v2_own(tmp_path, "", "memory cpu pids")
    with pytest.raises(CgroupError, match="outside this cgroup namespace"):
        detect(tmp_path, V2_MOUNTINFO, "0::/../sibling\n")


def test_unreadable_proc_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match=r"cannot read .*nope: \[Errno 2\]"):
        detect_backend(tmp_path, "test", proc_self_cgroup=tmp_path / "nope", mountinfo=tmp_path / "nope")


def test_bad_instance_name(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="invalid sandboxd instance name"):
        detect_backend(tmp_path, "../x")


def test_parsers() -> None:
    mounts = parse_mountinfo(r"40 31 0:37 / /sys/fs/cgroup/with\040space rw - cgroup cgroup rw,pids" + "\n")
    assert [(m.mount_point, m.fstype, sorted(m.controllers)) for m in mounts] == [
        ("/sys/fs/cgroup/with space", "cgroup", ["pids", "rw"])
    ]
    members = parse_proc_cgroup("2:cpu,cpuacct:/a:b\n0::/\ngarbage\n")
    assert [(m.hierarchy_id, sorted(m.controllers), m.path) for m in members] == [
        (2, ["cpu", "cpuacct"], "/a:b"),
        (0, [], "/"),
    ]
