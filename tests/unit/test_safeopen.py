"""liveupd.safeopen: the one way liveupd opens a file it reads or runs as root.

Each test runs twice: with openat2 (where this kernel has it) and with the
component walk that replaces it on older kernels; the answers must not differ.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveupd import safeopen
from liveupd.safeopen import Kind, Refusal, UnsafeFile

OTHER_UID = 65534


@pytest.fixture(params=["openat2", "walk"], autouse=True)
def resolver(request: pytest.FixtureRequest) -> Iterator[str]:
    """Both ways of opening one component: openat2, and openat(O_NOFOLLOW)."""
    saved = safeopen._Openat2.unavailable
    if request.param == "openat2":
        if not safeopen.openat2_available():
            pytest.skip("this kernel (or its seccomp filter) has no openat2")
    else:
        safeopen._Openat2.unavailable = True
    try:
        yield str(request.param)
    finally:
        safeopen._Openat2.unavailable = saved


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "root"
    d.mkdir()
    (d / "file").write_bytes(b"hello\n")
    return d


def refusal(path: Path | str, kind: Kind = Kind.CONFIG, **kw: object) -> UnsafeFile:
    with pytest.raises(UnsafeFile) as e:
        safeopen.open_file(str(path), kind, **kw).close()  # type: ignore[arg-type]
    return e.value


def test_a_file_opens_and_the_descriptor_is_that_file(root: Path) -> None:
    path = root / "file"
    with safeopen.open_file(str(path), Kind.CONFIG) as f:
        assert (f.stat.st_dev, f.stat.st_ino) == (path.stat().st_dev, path.stat().st_ino)
        assert fcntl.fcntl(f.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.get_blocking(f.fd)  # O_NONBLOCK cleared once it is a regular file
        assert safeopen.read_bytes(f) == b"hello\n"
        assert safeopen.sha256_fd(f.fd) == hashlib.sha256(b"hello\n").hexdigest()
        assert f.real == str(path)


def test_a_fifo_is_refused_at_once_not_waited_on(root: Path) -> None:
    os.mkfifo(root / "fifo")  # nobody ever opens its other end
    e = refusal(root / "fifo")
    assert e.refusal is Refusal.NOT_REGULAR and "is a FIFO" in e.reason


def test_a_symlink_to_a_device_is_refused(root: Path) -> None:
    (root / "zero").symlink_to("/dev/zero")
    e = refusal(root / "zero")
    assert e.refusal is Refusal.NOT_REGULAR and e.path == "/dev/zero" and "a device" in e.reason


def test_the_size_cap_comes_from_fstat_before_any_read(root: Path) -> None:
    big = root / "vmlinuz-big"
    with big.open("wb") as f:
        f.truncate(2 << 30)  # a 2 GiB sparse file: nothing to read, much to hold
    e = refusal(big, Kind.KERNEL)
    assert e.refusal is Refusal.TOO_LARGE
    assert "is 2 GiB, larger than a kernel may be (256 MiB)" in e.reason
    # The same file is a legitimate initrd size (the cap is 2 GiB, inclusive).
    safeopen.open_file(str(big), Kind.INITRD).close()
    (root / "entry.conf").write_bytes(b"x" * (64 * 1024 + 1))
    assert refusal(root / "entry.conf", Kind.ENTRY).refusal is Refusal.TOO_LARGE


def test_every_directory_from_the_root_down_is_checked(root: Path) -> None:
    needs_root()
    sub = root / "sub"
    sub.mkdir()
    (sub / "file").write_text("x")
    os.chown(sub, OTHER_UID, OTHER_UID)
    e = refusal(sub / "file")
    assert e.refusal is Refusal.OWNER and e.path == str(sub)
    assert f"owned by uid {OTHER_UID}, not root" in e.reason
    os.chown(sub, 0, 0)
    sub.chmod(0o775)
    e = refusal(sub / "file")
    assert e.refusal is Refusal.WRITABLE and e.path == str(sub)
    assert "writable by group (mode 0775)" in e.reason and f"chmod go-w {sub}" in e.reason


def test_a_sticky_world_writable_directory_may_be_passed(root: Path) -> None:
    sub = root / "tmp"
    sub.mkdir()
    sub.chmod(0o1777)
    (sub / "file").write_text("x")
    safeopen.open_file(str(sub / "file"), Kind.CONFIG).close()
    sub.chmod(0o0777)  # without the sticky bit anyone could rename over the file
    assert refusal(sub / "file").refusal is Refusal.WRITABLE


def test_the_file_itself(root: Path) -> None:
    needs_root()
    path = root / "file"
    path.chmod(0o646)
    e = refusal(path)
    assert e.refusal is Refusal.WRITABLE and "writable by others (mode 0646)" in e.reason
    path.chmod(0o644)
    os.chown(path, OTHER_UID, OTHER_UID)
    assert refusal(path).refusal is Refusal.OWNER
    os.chown(path, 0, 0)
    (root / "empty").write_bytes(b"")
    assert refusal(root / "empty", allow_empty=False).refusal is Refusal.EMPTY


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("relative/file", "not an absolute path"),
        ("{root}/../root/file", "must not contain '..'"),
        ("{root}/nope", "does not exist"),
        ("{root}/file/below", "not a directory"),
        ("{root}", "is a directory"),
    ],
)
def test_bad_paths(root: Path, path: str, reason: str) -> None:
    assert reason in str(refusal(path.format(root=root)))


def test_root_symlinks_are_followed_beneath_and_not_out(root: Path, tmp_path: Path) -> None:
    (root / "link").symlink_to("file")
    (root / "abs").symlink_to(root / "file")
    for name in ("link", "abs"):
        with safeopen.open_file(str(root / name), Kind.CONFIG, beneath=str(root)) as f:
            assert f.real == str(root / "file")
    outside = tmp_path / "secret.conf"
    outside.write_text("first line of a secret\n")
    outside.chmod(0o600)
    (root / "out").symlink_to(outside)
    (root / "up").symlink_to("../secret.conf")
    (root / "dir").symlink_to(tmp_path)
    for name in ("out", "up", "dir/secret.conf"):
        e = refusal(root / name, beneath=str(root))
        assert e.refusal is Refusal.SYMLINK_OUT and f"a symlink leads out of {root}" in e.reason
    # Without a 'beneath' directory, root's symlinks lead anywhere root's directories are.
    safeopen.open_file(str(root / "out"), Kind.CONFIG).close()


def test_a_symlink_someone_else_owns_is_not_followed(root: Path) -> None:
    needs_root()
    sticky = root / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    link = sticky / "link"
    link.symlink_to(root / "file")
    os.lchown(link, OTHER_UID, OTHER_UID)
    e = refusal(link)
    assert e.refusal is Refusal.SYMLINK_OWNER and f"owned by uid {OTHER_UID}" in e.reason


def test_symlink_loops_end(root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    assert refusal(root / "a").refusal is Refusal.LOOP


def test_outside_beneath_as_written(root: Path, tmp_path: Path) -> None:
    (tmp_path / "other").write_text("x")
    e = refusal(tmp_path / "other", beneath=str(root))
    assert e.refusal is Refusal.BAD_PATH and f"not inside {root}" in e.reason


def test_directories_list_and_masks(root: Path) -> None:
    (root / "10-a.conf").symlink_to("/dev/null")
    with safeopen.open_dir(str(root)) as d:
        assert stat.S_ISDIR(d.stat.st_mode)
        assert safeopen.list_names(d) == ["10-a.conf", "file"]
        assert safeopen.is_mask(d, "10-a.conf") and not safeopen.is_mask(d, "file")


def test_realpath_follows_root_symlinks(root: Path) -> None:
    (root / "link").symlink_to("file")
    assert safeopen.realpath(str(root / "link")) == str(root / "file")
