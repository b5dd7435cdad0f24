"""RealStorage with its system calls replaced: which call, on what, with which errors.

The real FIFREEZE/FITHAW are proven only in the VM (tests/vm/test_devices_storage.py):
a frozen host filesystem would stop this machine.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

import pytest

from liveupd.storage.freeze import FIFREEZE, FITHAW, RealStorage


class FakeIoctl:
    def __init__(self, fail: dict[int, int] | None = None) -> None:
        self.calls: list[tuple[int, int, bool]] = []
        self.fail = fail or {}

    def __call__(self, fd: int, request: int, arg: int) -> int:
        self.calls.append((request, arg, stat.S_ISDIR(os.fstat(fd).st_mode)))
        if request in self.fail:
            raise OSError(self.fail[request], os.strerror(self.fail[request]))
        return 0


def test_freeze_and_thaw_are_ioctls_on_a_directory_descriptor(tmp_path: Path) -> None:
    ioctl = FakeIoctl()
    storage = RealStorage(ioctl=ioctl)
    storage.freeze(str(tmp_path))
    storage.thaw(str(tmp_path))
    assert ioctl.calls == [(FIFREEZE, 0, True), (FITHAW, 0, True)]
    assert (FIFREEZE, FITHAW) == (0xC0045877, 0xC0045878)


def test_freeze_errors_keep_their_errno(tmp_path: Path) -> None:
    storage = RealStorage(ioctl=FakeIoctl({FIFREEZE: errno.EOPNOTSUPP}))
    with pytest.raises(OSError) as e:
        storage.freeze(str(tmp_path))
    assert e.value.errno == errno.EOPNOTSUPP


def test_thaw_of_a_filesystem_not_frozen_is_not_an_error(tmp_path: Path) -> None:
    RealStorage(ioctl=FakeIoctl({FITHAW: errno.EINVAL})).thaw(str(tmp_path))
    with pytest.raises(OSError) as e:
        RealStorage(ioctl=FakeIoctl({FITHAW: errno.EPERM})).thaw(str(tmp_path))
    assert e.value.errno == errno.EPERM


def test_no_descriptor_leaks(tmp_path: Path) -> None:
    storage = RealStorage(ioctl=FakeIoctl({FIFREEZE: errno.EBUSY}))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(OSError):
            storage.freeze(str(tmp_path))
        storage.thaw(str(tmp_path))
    assert len(os.listdir("/proc/self/fd")) == before


def test_syncfs_is_called_on_the_mount_point(tmp_path: Path) -> None:
    seen: list[bool] = []

    def syncfs(fd: int) -> int:
        seen.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return 0

    RealStorage(syncfs_call=syncfs).syncfs(str(tmp_path))
    assert seen == [True]

    def failing(fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    with pytest.raises(OSError) as e:
        RealStorage(syncfs_call=failing).syncfs(str(tmp_path))
    assert e.value.errno == errno.EIO


def test_real_syncfs_on_a_temporary_directory_works(tmp_path: Path) -> None:
    RealStorage().syncfs(str(tmp_path))  # a harmless real call: flushes /tmp's filesystem


def test_mounts_come_from_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text("22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n")
    (m,) = RealStorage(mountinfo=info).mounts()
    assert (m.mountpoint, m.fstype, m.writable, m.block_backed) == ("/", "ext4", True, True)
    assert any(m.mountpoint == "/" for m in RealStorage().mounts())  # this machine's table
