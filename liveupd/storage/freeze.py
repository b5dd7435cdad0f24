"""The real storage backend: sync, syncfs, FIFREEZE and FITHAW.

Each call is one system call on a directory descriptor of the mount point,
and each blocks (a freeze waits for writers to drain): the flush step runs
them in a worker thread.  Never called by host tests, which use fakes: a
frozen root filesystem stops the whole machine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liveupd.backends.base import Mount, VolumeScan
from liveupd.storage.mounts import MOUNTINFO, read_mounts

FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)

Ioctl = Callable[[int, int, int], Any]


def _libc_syncfs() -> Callable[[int], int]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn: Callable[[int], int] = libc.syncfs
    return fn


def _open_dir(mountpoint: str) -> int:
    return os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


class RealStorage:
    def __init__(
        self,
        *,
        mountinfo: Path = MOUNTINFO,
        ioctl: Ioctl = fcntl.ioctl,
        syncfs_call: Callable[[int], int] | None = None,
        sync_call: Callable[[], None] = os.sync,
    ) -> None:
        self.mountinfo = mountinfo
        self._ioctl = ioctl
        self._syncfs = syncfs_call
        self._sync = sync_call

    def mounts(self) -> list[Mount]:
        return read_mounts(self.mountinfo)

    def sync(self) -> None:
        self._sync()

    def syncfs(self, mountpoint: str) -> None:
        if self._syncfs is None:
            self._syncfs = _libc_syncfs()
        fd = _open_dir(mountpoint)
        try:
            if self._syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs {mountpoint}: {os.strerror(err)}")
        finally:
            os.close(fd)

    def freeze(self, mountpoint: str) -> None:
        """FIFREEZE: EBUSY if already frozen, EOPNOTSUPP if the filesystem cannot be."""
        fd = _open_dir(mountpoint)
        try:
            self._ioctl(fd, FIFREEZE, 0)
        finally:
            os.close(fd)

    def thaw(self, mountpoint: str) -> None:
        """FITHAW; a filesystem that is not frozen (EINVAL) is not an error."""
        fd = _open_dir(mountpoint)
        try:
            self._ioctl(fd, FITHAW, 0)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
        finally:
            os.close(fd)

    async def encrypted_volumes(self) -> VolumeScan:
        from liveupd.storage.volumes import scan  # cryptsetup is run on demand only

        return await scan()
