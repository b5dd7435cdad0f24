"""Opening a kernel or initrd safely: where it is, who owns it, who can write it."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import pytest

from liveupd.errors import InvalidArgument, InvalidKernel
from liveupd.kernel.validate import check_pin, open_checked, sha256_fd
from tests.kernels import install_kernel

R = "6.1.0-56-cloud-amd64"


@pytest.fixture
def boot(tmp_path: Path) -> Path:
    b = tmp_path / "boot"
    install_kernel(b, R)
    return b


def refused(path: Path | str, dirs: list[Path], what: str = "kernel") -> str:
    with pytest.raises((InvalidKernel, InvalidArgument)) as e:
        f = open_checked(str(path), [str(d) for d in dirs], what)
        os.close(f.fd)
    return str(e.value)


def test_a_good_kernel_opens_and_the_descriptor_is_the_file(boot: Path) -> None:
    path = boot / f"vmlinuz-{R}"
    f = open_checked(str(path), [str(boot)])
    try:
        st = os.fstat(f.fd)
        assert (st.st_dev, st.st_ino) == (path.stat().st_dev, path.stat().st_ino)
        assert f.id.size == path.stat().st_size
        assert fcntl.fcntl(f.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.get_blocking(f.fd)
        assert sha256_fd(f.fd) == hashlib.sha256(path.read_bytes()).hexdigest()
    finally:
        os.close(f.fd)


def test_owned_by_another_user(boot: Path) -> None:
    path = boot / f"vmlinuz-{R}"
    os.chown(path, 1234, 1234)
    msg = refused(path, [boot])
    assert f"{path}: owned by uid 1234, not root" in msg
    assert f"chown root:root {path}" in msg


def test_directory_on_the_way_owned_by_another_user(boot: Path) -> None:
    sub = boot / "sub"
    sub.mkdir()
    install_kernel(sub, R)
    os.chown(sub, 1234, 1234)
    assert f"{sub}: owned by uid 1234" in refused(sub / f"vmlinuz-{R}", [boot])


@pytest.mark.parametrize(
    ("mode", "who"), [(0o664, "group"), (0o646, "others"), (0o666, "group and others")]
)
def test_writable_by_group_or_others(boot: Path, mode: int, who: str) -> None:
    path = boot / f"vmlinuz-{R}"
    path.chmod(mode)
    msg = refused(path, [boot])
    assert f"{path}: writable by {who} (mode {mode:04o})" in msg
    assert f"chmod go-w {path}" in msg


def test_writable_allowed_directory(boot: Path) -> None:
    boot.chmod(0o777)
    try:
        assert f"{boot}: writable by group and others (mode 0777)" in refused(
            boot / f"vmlinuz-{R}", [boot]
        )
    finally:
        boot.chmod(0o755)


def test_symlink_escaping_the_allowed_directory(boot: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    install_kernel(outside, "6.9.0-evil")
    link = boot / "vmlinuz-6.9.0-evil"
    link.symlink_to(outside / "vmlinuz-6.9.0-evil")
    msg = refused(link, [boot])
    assert "a symlink leads out of the allowed directories" in msg
    assert str(outside / "vmlinuz-6.9.0-evil") in msg
    # A symlinked directory on the way counts the same.
    (boot / "sub").symlink_to(outside)
    assert "symlink leads out" in refused(boot / "sub" / "vmlinuz-6.9.0-evil", [boot])


def test_symlink_inside_the_allowed_directory_is_followed(boot: Path) -> None:
    link = boot / "vmlinuz"
    link.symlink_to(f"vmlinuz-{R}")
    f = open_checked(str(link), [str(boot)])
    try:
        assert f.real == str(boot / f"vmlinuz-{R}")
        assert os.fstat(f.fd).st_ino == (boot / f"vmlinuz-{R}").stat().st_ino
    finally:
        os.close(f.fd)


def test_not_inside_an_allowed_directory(boot: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    install_kernel(other, R)
    msg = refused(other / f"vmlinuz-{R}", [boot])
    assert "not inside an allowed directory (kernel.allowed-dirs: " in msg
    assert str(boot) in msg


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("boot/vmlinuz", "must be given as an absolute path"),
        ("{boot}/../boot/vmlinuz-" + R, "must not contain '..'"),
        ("{boot}/vmlinuz-nope", "no such kernel file"),
        ("{boot}", "is a directory, not a kernel file"),
    ],
)
def test_bad_paths(boot: Path, path: str, message: str) -> None:
    assert message in refused(path.format(boot=boot), [boot])


def test_not_a_regular_file(boot: Path) -> None:
    os.mkfifo(boot / "fifo")
    (boot / "dir").mkdir()
    assert "is a directory, not a kernel file" in refused(boot / "dir", [boot])
    # A FIFO with no writer would block a plain open: it must be refused at once.
    assert "not a regular file" in refused(boot / "fifo", [boot])


def test_empty_file(boot: Path) -> None:
    (boot / "vmlinuz-empty").write_bytes(b"")
    assert "the initrd file is empty" in refused(boot / "vmlinuz-empty", [boot], "initrd")


def test_pin() -> None:
    digest = "a" * 64
    check_pin("", digest, "/k")
    check_pin("A" * 64, digest, "/k")
    with pytest.raises(InvalidKernel, match=f"/k: its SHA-256 is {digest}, not {'b' * 64}"):
        check_pin("b" * 64, digest, "/k")
    with pytest.raises(InvalidArgument, match="not 64 hexadecimal digits"):
        check_pin("abc", digest, "/k")


def test_a_2_gib_sparse_kernel_is_refused_from_its_size(boot: Path) -> None:
    """Before any byte is read: the cap comes from fstat (issue 13, case 2)."""
    big = boot / "vmlinuz-6.9.0-big"
    with big.open("wb") as f:
        f.truncate(2 << 30)
    msg = refused(big, [boot])
    assert f"{big}: is 2 GiB, larger than a kernel may be (256 MiB)" in msg


def test_devices_and_fifos_are_refused_at_once(boot: Path) -> None:
    (boot / "vmlinuz-6.9.0-zero").symlink_to("/dev/zero")
    os.mkfifo(boot / "initrd.img-fifo")
    assert "a symlink leads out of the allowed directories" in refused(
        boot / "vmlinuz-6.9.0-zero", [boot]
    )
    assert "is a FIFO, not a regular file" in refused(boot / "initrd.img-fifo", [boot], "initrd")


def test_a_symlink_outside_the_allowed_directories_leading_in(boot: Path, tmp_path: Path) -> None:
    """/vmlinuz -> boot/vmlinuz-R, as Debian makes it: root's symlink, leading inside."""
    link = tmp_path / "vmlinuz"
    link.symlink_to(f"boot/vmlinuz-{R}")
    f = open_checked(str(link), [str(boot)])
    try:
        assert f.real == str(boot / f"vmlinuz-{R}")
    finally:
        os.close(f.fd)


def test_a_long_path_is_not_echoed_whole(boot: Path) -> None:
    name = "x" * 5000
    msg = refused(f"{boot}/{name}", [boot])
    assert "characters)" in msg and len(msg) < 600
