"""Files moved in and out of a session's /work: resolved strictly beneath a directory fd, never through a
symbolic link or into another mount, written whole or not at all, owned by the session, bounded in size.

The root is a real temporary directory opened ``O_PATH``; beside it, ``outside`` holds a "secret" that no
path may reach. The root-only tests chown to an unused uid and go through a real mount namespace."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.engine import beneath
from sandboxd.engine.files import (
    DEFAULT_FILE_MODE,
    FILE_CHUNK_BYTES,
    FileInfo,
    FileReader,
    FileRefused,
    FileWriter,
    work_path,
)

SECRET = b"host secret\n"
UNUSED_ID = 2000000123


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(SECRET)
    return tmp_path / "outside"


@pytest.fixture
def root_fd(work: Path) -> Iterator[int]:
    fd = os.open(work, os.O_PATH | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def upload(root_fd: int, path: str, data: bytes, *, mode: int = DEFAULT_FILE_MODE, max_bytes: int = 1 << 20,
           uid: int | None = None, gid: int | None = None) -> FileInfo:
    writer = FileWriter(root_fd, path, mode=mode, uid=os.getuid() if uid is None else uid,
                        gid=os.getgid() if gid is None else gid, max_bytes=max_bytes)
    writer.write(data)
    return writer.commit()


def download(root_fd: int, path: str, *, max_bytes: int = 1 << 20) -> tuple[bytes, FileInfo]:
    with FileReader(root_fd, path, max_bytes=max_bytes) as reader:
        data = b"".join(reader.chunks())
        return data, reader.info()


def entries(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# --- work_path -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("written", "relative"), [
    ("data/x.csv", "data/x.csv"),
    ("/work/data/x.csv", "data/x.csv"),
    ("./x", "x"),
    ("x", "x"),
    ("data//x.csv", "data/x.csv"),
    ("./data/./x.csv", "data/x.csv"),
    ("//work///data/x.csv", "data/x.csv"),
    ("data/", "data"),
    ("...", "..."),
    ("..x/x..", "..x/x.."),
    ("é/ü.txt", "é/ü.txt"),
    ("a" * 255, "a" * 255),
])
def test_work_path_accepts(written: str, relative: str) -> None:
    assert work_path(written) == relative
    assert work_path(relative) == relative  # idempotent: the engine may normalize again


@pytest.mark.parametrize(("written", "why"), [
    ("", "empty"),
    ("a\0b", "NUL"),
    ("/etc/passwd", "outside /work"),
    ("/workspace/x", "outside /work"),
    ("/work/../etc/passwd", "'..'"),
    ("..", "'..'"),
    ("../x", "'..'"),
    ("data/../../x", "'..'"),
    ("data/..", "'..'"),
    ("/work", "the work directory itself"),
    ("/work/", "the work directory itself"),
    (".", "the work directory itself"),
    ("./", "the work directory itself"),
    ("/", "outside /work"),
    ("a" * 256, "longer than 255 bytes"),
    ("é" * 128, "longer than 255 bytes"),  # 256 bytes in UTF-8
    ("a/" * 2048 + "b", "more than the limit of 4096"),
    ("\udcff", "not valid UTF-8"),
])
def test_work_path_refuses(written: str, why: str) -> None:
    with pytest.raises(FileRefused, match=why):
        work_path(written)


def test_work_path_other_workdir() -> None:
    assert work_path("/home/session/x", workdir="/home/session") == "x"
    assert work_path("x", workdir="/home/session") == "x"
    with pytest.raises(FileRefused, match="outside /home/session"):
        work_path("/work/x", workdir="/home/session")


# --- round trips ---------------------------------------------------------------------------------------

def test_round_trip_checks_sha256(root_fd: int, work: Path) -> None:
    data = os.urandom(3 * FILE_CHUNK_BYTES + 5)
    writer = FileWriter(root_fd, "/work/data/x.bin", mode=0o644, uid=os.getuid(), gid=os.getgid(),
                        max_bytes=len(data))
    for start in range(0, len(data), 10_000):  # uneven pieces
        writer.write(data[start : start + 10_000])
    sent = writer.commit()
    assert sent == FileInfo("data/x.bin", len(data), hashlib.sha256(data).hexdigest(), 0o644)
    assert (work / "data" / "x.bin").read_bytes() == data

    with FileReader(root_fd, "data/x.bin", max_bytes=len(data)) as reader:
        chunks = list(reader.chunks())
        assert [len(c) for c in chunks] == [FILE_CHUNK_BYTES] * 3 + [5]
        assert reader.info() == sent
    assert entries(work) == ["data", "data/x.bin"]


def test_empty_file(root_fd: int, work: Path) -> None:
    info = upload(root_fd, "empty", b"", max_bytes=0)
    assert info.size_bytes == 0 and info.sha256 == hashlib.sha256(b"").hexdigest()
    assert download(root_fd, "empty", max_bytes=0) == (b"", info)


def test_info_only_after_chunks_are_exhausted(root_fd: int, work: Path) -> None:
    (work / "f").write_bytes(b"x" * (FILE_CHUNK_BYTES + 1))
    with FileReader(root_fd, "f", max_bytes=1 << 20) as reader:
        chunks = reader.chunks()
        next(chunks)
        with pytest.raises(RuntimeError, match="exhausted"):
            reader.info()
        list(chunks)
        assert reader.info().size_bytes == FILE_CHUNK_BYTES + 1
        with pytest.raises(RuntimeError, match="reads once"):
            reader.chunks()


def test_no_descriptor_leaks(root_fd: int, work: Path, outside: Path) -> None:
    (work / "link").symlink_to(outside)
    before = open_fds()
    upload(root_fd, "a/b/c/d", b"1")
    upload(root_fd, "a/b/c/d", b"2")
    download(root_fd, "a/b/c/d")
    for refused in ("link/secret", "a/b/c/d/e", "missing", "a"):
        with pytest.raises(FileRefused):
            download(root_fd, refused)
    for refused in ("link/secret", "link/new/x", "a/b/c/d/e", "a/b/c/d/e/f", "a"):
        with pytest.raises(FileRefused):
            upload(root_fd, refused, b"")
    with pytest.raises(FileRefused):
        upload(root_fd, "too-big", b"12", max_bytes=1)
    FileWriter(root_fd, "aborted", mode=0o600, uid=os.getuid(), gid=os.getgid(), max_bytes=1).abort()
    assert open_fds() == before


# --- ownership and mode ----------------------------------------------------------------------------------

def test_nested_dirs_created_with_owner_and_mode(root_fd: int, work: Path) -> None:
    (work / "existing").mkdir(mode=0o755)
    upload(root_fd, "existing/new/deeper/f", b"x")
    assert stat.S_IMODE((work / "existing").stat().st_mode) == 0o755  # what was there is left as it was
    for created in (work / "existing" / "new", work / "existing" / "new" / "deeper"):
        st = created.stat()
        assert stat.S_IMODE(st.st_mode) == 0o2770
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


@pytest.mark.root
def test_session_owns_files_and_created_dirs(root_fd: int, work: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    upload(root_fd, "d1/d2/f", b"x", uid=UNUSED_ID, gid=UNUSED_ID + 1)
    for path in (work / "d1", work / "d1" / "d2", work / "d1" / "d2" / "f"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (UNUSED_ID, UNUSED_ID + 1), path
    assert stat.S_IMODE((work / "d1" / "d2").stat().st_mode) == 0o2770


@pytest.mark.parametrize(("asked", "given"), [
    (DEFAULT_FILE_MODE, 0o640),
    (0o6755, 0o755),
    (0o4700, 0o700),
    (0o2640, 0o640),
    (0o1644, 0o1644),
    (0o777, 0o777),
    (0o000, 0o000),
    (0o170644, 0o644),  # file-type bits are ignored
])
def test_mode_bits_never_setuid(root_fd: int, work: Path, asked: int, given: int) -> None:
    info = upload(root_fd, "f", b"#!/bin/sh\n", mode=asked)
    assert info.mode == given
    assert stat.S_IMODE((work / "f").stat().st_mode) == given


# --- replacing, bounds, leftovers ------------------------------------------------------------------------

def test_replaces_an_existing_file_atomically(root_fd: int, work: Path) -> None:
    (work / "f").write_bytes(b"old")
    old_inode = (work / "f").stat().st_ino
    writer = FileWriter(root_fd, "f", mode=0o600, uid=os.getuid(), gid=os.getgid(), max_bytes=100)
    writer.write(b"new content")
    assert (work / "f").read_bytes() == b"old"  # nothing shows before commit
    writer.commit()
    assert (work / "f").read_bytes() == b"new content"
    assert (work / "f").stat().st_ino != old_inode
    assert entries(work) == ["f"]
    writer.abort()  # safe after commit: the committed file stays
    assert (work / "f").read_bytes() == b"new content"


def test_write_past_the_limit_is_refused_and_leaves_nothing(root_fd: int, work: Path) -> None:
    (work / "f").write_bytes(b"old")
    writer = FileWriter(root_fd, "f", mode=0o600, uid=os.getuid(), gid=os.getgid(), max_bytes=10)
    writer.write(b"123456")
    writer.write(b"7890")  # exactly the limit is fine
    with pytest.raises(FileRefused, match="larger than the limit of 10 bytes"):
        writer.write(b"x")
    assert entries(work) == ["f"] and (work / "f").read_bytes() == b"old"
    with pytest.raises(FileRefused, match="already over"):
        writer.commit()
    writer.abort()


def test_a_failed_commit_leaves_the_old_target(root_fd: int, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (work / "f").write_bytes(b"old")
    writer = FileWriter(root_fd, "f", mode=0o600, uid=os.getuid(), gid=os.getgid(), max_bytes=100)
    writer.write(b"new")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(FileRefused, match="the session's /work is full"):
        writer.commit()
    assert entries(work) == ["f"] and (work / "f").read_bytes() == b"old"


def test_abort_leaves_nothing(root_fd: int, work: Path) -> None:
    writer = FileWriter(root_fd, "a/b", mode=0o600, uid=os.getuid(), gid=os.getgid(), max_bytes=100)
    writer.write(b"partial")
    assert [p for p in entries(work) if ".sandboxd-upload-" in p]  # the temporary file is beside the target
    writer.abort()
    writer.abort()
    assert entries(work) == ["a"]  # the directory stays, like mkdir -p; no file, no temporary file
    with pytest.raises(FileRefused, match="already over"):
        writer.write(b"more")


def test_read_past_the_limit_is_refused(root_fd: int, work: Path) -> None:
    (work / "f").write_bytes(b"x" * 100)
    assert download(root_fd, "f", max_bytes=100)[1].size_bytes == 100
    with pytest.raises(FileRefused, match="100 bytes, more than the limit of 99"):
        FileReader(root_fd, "f", max_bytes=99)


def test_sparse_file_is_bounded_by_its_size(root_fd: int, work: Path) -> None:
    with open(work / "sparse", "wb") as f:
        f.truncate(1 << 40)
    with pytest.raises(FileRefused, match="more than the limit"):
        FileReader(root_fd, "sparse", max_bytes=1 << 20)


# --- refused paths ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["..", "../outside/secret", "/etc/passwd", "/work/../etc/passwd",
                                  "/work/../outside/secret", "data/../../outside/secret"])
def test_escapes_are_refused(root_fd: int, work: Path, outside: Path, path: str) -> None:
    with pytest.raises(FileRefused):
        FileReader(root_fd, path, max_bytes=1 << 20)
    with pytest.raises(FileRefused):
        upload(root_fd, path, b"overwritten")
    assert (outside / "secret").read_bytes() == SECRET
    assert entries(work) == []


def test_symlink_in_the_middle_is_not_followed(root_fd: int, work: Path, outside: Path) -> None:
    (work / "data").symlink_to(outside)
    with pytest.raises(FileRefused, match="data/secret crosses a symbolic link"):
        FileReader(root_fd, "data/secret", max_bytes=1 << 20)
    with pytest.raises(FileRefused, match="symbolic link"):
        upload(root_fd, "data/secret", b"overwritten")
    with pytest.raises(FileRefused, match="symbolic link"):
        upload(root_fd, "data/new/deeper", b"planted")  # nor are directories created through it
    assert (outside / "secret").read_bytes() == SECRET
    assert entries(outside) == ["secret"]


def test_symlink_deeper_in_the_middle(root_fd: int, work: Path, outside: Path) -> None:
    (work / "a" / "b").mkdir(parents=True)
    (work / "a" / "b" / "c").symlink_to("../../../outside")  # relative, climbing out
    with pytest.raises(FileRefused, match="symbolic link"):
        FileReader(root_fd, "a/b/c/secret", max_bytes=1 << 20)
    with pytest.raises(FileRefused, match="symbolic link"):
        upload(root_fd, "a/b/c/secret", b"overwritten")
    assert (outside / "secret").read_bytes() == SECRET


@pytest.mark.parametrize("target", ["outside", "/etc/passwd", "inside"])
def test_symlink_at_the_end_is_not_followed(root_fd: int, work: Path, outside: Path, target: str) -> None:
    (work / "inside").write_bytes(b"inside")
    (work / "x.csv").symlink_to(outside / "secret" if target == "outside" else target)
    with pytest.raises(FileRefused, match="symbolic link"):
        FileReader(root_fd, "x.csv", max_bytes=1 << 20)
    with pytest.raises(FileRefused, match="symbolic link"):
        upload(root_fd, "x.csv", b"overwritten")
    assert (outside / "secret").read_bytes() == SECRET
    assert (work / "inside").read_bytes() == b"inside"
    assert (work / "x.csv").is_symlink()
    assert entries(work) == ["inside", "x.csv"]


def test_symlink_to_a_directory(root_fd: int, work: Path, outside: Path) -> None:
    (work / "d").symlink_to(outside)
    (work / "e").mkdir()
    (work / "f").symlink_to("e")  # even one that stays inside
    for path in ("d", "d/new", "f/new"):
        with pytest.raises(FileRefused, match="symbolic link"):
            upload(root_fd, path, b"x")
    with pytest.raises(FileRefused, match="symbolic link"):
        FileReader(root_fd, "f", max_bytes=1 << 20)
    assert entries(outside) == ["secret"]
    assert entries(work / "e") == []


def test_fifo_is_refused_without_hanging(root_fd: int, work: Path) -> None:
    os.mkfifo(work / "fifo")
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            FileReader(root_fd, "fifo", max_bytes=1 << 20)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # unblock the stuck open before failing, so the test run ends
        os.close(os.open(work / "fifo", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("FileReader blocked opening a FIFO")
    assert isinstance(outcome[0], FileRefused) and "not a regular file" in str(outcome[0])
    with pytest.raises(FileRefused, match="not a regular file"):
        upload(root_fd, "fifo", b"x")
    assert stat.S_ISFIFO((work / "fifo").lstat().st_mode)


def test_socket_is_refused(root_fd: int, work: Path) -> None:
    os.mknod(work / "sock", stat.S_IFSOCK | 0o600)
    with pytest.raises(FileRefused, match="not a regular file"):
        FileReader(root_fd, "sock", max_bytes=1 << 20)


def test_directory_where_a_file_is_expected(root_fd: int, work: Path) -> None:
    (work / "dir").mkdir()
    (work / "file").write_bytes(b"x")
    with pytest.raises(FileRefused, match="dir is a directory"):
        FileReader(root_fd, "dir", max_bytes=1 << 20)
    with pytest.raises(FileRefused, match="dir is a directory"):
        upload(root_fd, "dir", b"x")
    with pytest.raises(FileRefused, match="not a directory"):
        FileReader(root_fd, "file/x", max_bytes=1 << 20)
    with pytest.raises(FileRefused, match="not a directory"):
        upload(root_fd, "file/x", b"x")
    with pytest.raises(FileRefused, match="not a directory"):
        upload(root_fd, "file/x/y", b"x")
    assert entries(work) == ["dir", "file"]


def test_directory_made_before_commit_is_not_replaced(root_fd: int, work: Path) -> None:
    writer = FileWriter(root_fd, "late", mode=0o600, uid=os.getuid(), gid=os.getgid(), max_bytes=100)
    writer.write(b"x")
    (work / "late").mkdir()
    (work / "late" / "kept").write_bytes(b"kept")
    with pytest.raises(FileRefused, match="late is a directory"):
        writer.commit()
    assert entries(work) == ["late", "late/kept"]


def test_missing_file(root_fd: int) -> None:
    with pytest.raises(FileRefused, match=r"^no such file: data/x\.csv$"):
        FileReader(root_fd, "/work/data/x.csv", max_bytes=1 << 20)
    with pytest.raises(FileRefused, match=r"no such file: 'a\\nb'"):  # control characters are escaped
        FileReader(root_fd, "a\nb", max_bytes=1 << 20)


def test_without_openat2_everything_is_refused(root_fd: int, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (work / "f").write_bytes(b"x")
    monkeypatch.setattr(beneath, "_SYS_OPENAT2", 0x7FFF_FFF0)  # no such syscall: ENOSYS, as on Linux < 5.6
    with pytest.raises(FileRefused, match=r"needs openat2\(2\), Linux 5.6 or newer"):
        FileReader(root_fd, "f", max_bytes=1 << 20)
    with pytest.raises(FileRefused, match=r"needs openat2\(2\), Linux 5.6 or newer"):
        upload(root_fd, "g", b"x")
    assert entries(work) == ["f"]


# --- through a real mount namespace ----------------------------------------------------------------------

@pytest.mark.root
def test_through_a_session_mount_namespace(tmp_path: Path) -> None:
    """What the daemon does: a process in its own mount namespace with a tmpfs on its work dir, reached
    through /proc/<pid>/root. The files land in that tmpfs (not the host's directory under it); a mount
    inside it is not crossed, a link inside it is not followed, a full tmpfs is said to be full."""
    if os.geteuid() != 0:
        pytest.skip("mount namespaces and tmpfs mounts need root")
    work = tmp_path / "work"
    work.mkdir()
    mounts_before = Path("/proc/self/mountinfo").read_text()
    script = (f"mount -t tmpfs -o size=1m,mode=0755 sandboxd-test {work} && mkdir {work}/inner && "
              f"mount -t tmpfs -o size=64k sandboxd-test-inner {work}/inner && ln -s /etc {work}/etc && "
              "echo ready && exec sleep 600")
    session = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert session.stdout is not None and session.stdout.readline() == "ready\n"
        inside = Path(f"/proc/{session.pid}/root{work}")
        root = os.open(inside, os.O_PATH | os.O_DIRECTORY)
        try:
            info = upload(root, "data/x.csv", b"a,b\n1,2\n", uid=UNUSED_ID, gid=UNUSED_ID)
            assert download(root, "/work/data/x.csv") == (b"a,b\n1,2\n", info)
            assert (inside / "data" / "x.csv").stat().st_uid == UNUSED_ID
            assert list(work.iterdir()) == []  # the host's directory under the tmpfs is untouched

            with pytest.raises(FileRefused, match="crosses into another mount"):
                upload(root, "inner/x", b"x")
            with pytest.raises(FileRefused, match="crosses into another mount"):
                FileReader(root, "inner", max_bytes=1)
            with pytest.raises(FileRefused, match="symbolic link"):
                FileReader(root, "etc/passwd", max_bytes=1 << 20)

            with pytest.raises(FileRefused, match="the session's /work is full"):
                upload(root, "big", b"\0" * (2 << 20), max_bytes=4 << 20)
            assert sorted(os.listdir(inside)) == ["data", "etc", "inner"]
        finally:
            os.close(root)
    finally:
        session.kill()
        session.wait()
        if session.stdout is not None:
            session.stdout.close()
    assert Path("/proc/self/mountinfo").read_text() == mounts_before
    assert not os.path.ismount(work)
