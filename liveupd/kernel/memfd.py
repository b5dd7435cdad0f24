"""Sealed memfds: the files liveupd makes for the kernel to load (an unpacked
kernel, a UKI's .linux, its .ucode + .initrd).

A memfd lives in memory, has no path anyone else could open or replace, and
once sealed (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) nobody,
liveupd included, can change it: what was validated is what kexec_file_load
reads.  Contents come from bytes or from a range of another descriptor (copied
by the kernel with sendfile, never through a path).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
CHUNK = 1 << 20


@dataclass(frozen=True)
class FdRange:
    """``size`` bytes at ``offset`` of the open file ``fd``."""

    fd: int
    offset: int
    size: int


Part = bytes | FdRange


def _copy(dst: int, src: FdRange) -> None:
    done = 0
    while done < src.size:
        n = min(CHUNK * 16, src.size - done)
        try:
            sent = os.sendfile(dst, src.fd, src.offset + done, n)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            chunk = os.pread(src.fd, min(CHUNK, n), src.offset + done)
            sent = _write_all(dst, chunk) if chunk else 0
        if sent == 0:
            raise OSError(errno.EIO, f"the source ended {src.size - done} bytes early")
        done += sent


def _write_all(fd: int, data: bytes | memoryview) -> int:
    view = memoryview(data)
    total = len(view)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    return total


class SealedWriter:
    """Write into a fresh memfd, then ``seal()`` it; closed on error or if never sealed."""

    def __init__(self, name: str) -> None:
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self.size = 0
        self._sealed = False

    def write(self, data: bytes | memoryview) -> None:
        self.size += _write_all(self.fd, data)

    def copy(self, src: FdRange) -> None:
        _copy(self.fd, src)
        self.size += src.size

    def pad(self, alignment: int) -> None:
        """Zero bytes up to a multiple of ``alignment`` (cpio archives may be padded so)."""
        if self.size % alignment:
            self.write(bytes(alignment - self.size % alignment))

    def seal(self) -> int:
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, SEALS)
        self._sealed = True
        return self.fd

    def __enter__(self) -> SealedWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None or not self._sealed:
            os.close(self.fd)


def sealed(name: str, parts: Sequence[Part], *, align: int = 1) -> int:
    """A sealed memfd holding ``parts`` one after the other (each padded to ``align``)."""
    with SealedWriter(name) as w:
        for part in parts:
            if isinstance(part, FdRange):
                w.copy(part)
            else:
                w.write(part)
            if align > 1:
                w.pad(align)
        return w.seal()


def is_sealed(fd: int) -> bool:
    """Every seal liveupd sets is set on ``fd``."""
    try:
        return fcntl.fcntl(fd, fcntl.F_GET_SEALS) & SEALS == SEALS
    except OSError:
        return False
