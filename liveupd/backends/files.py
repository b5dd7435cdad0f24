"""The journal's way to the disk on the real machine: appends and atomic replaces.

``append`` writes one ``os.write`` per record to a file opened ``O_APPEND``
(fsync'd when ``durable``); ``replace`` goes through ``fsio.atomic_write``
(temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import os
from pathlib import Path

from liveupd import fsio


def append(path: Path, data: bytes, *, durable: bool, create_mode: int | None = None) -> None:
    """Append ``data`` with one ``write`` (short writes continued); the file must exist,
    unless ``create_mode`` is given (then it is created with that mode, less the umask)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    if create_mode is None:
        fd = os.open(path, flags)
    else:
        fd = os.open(path, flags | os.O_CREAT, create_mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


class DurableFiles:
    def append(self, path: Path, data: bytes, *, durable: bool) -> None:
        append(path, data, durable=durable)

    def replace(self, path: Path, data: bytes, *, durable: bool) -> None:
        fsio.atomic_write(path, data, mode=0o600, durable=durable)
