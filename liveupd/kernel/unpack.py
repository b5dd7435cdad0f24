"""Unpack a compressed kernel into a sealed memfd, reading through a descriptor.

Formats: gzip, xz, lzma, bzip2 (Python's standard library) and zstd
(python3-zstandard, imported when a zstd kernel is first met: Debian 12 and
13 ship it, and it is only needed for zstd kernels, so it is a recommended
rather than a required dependency; without it such kernels are refused with
a message naming the package).  lz4 and lzo are refused: nothing in Debian
reads them from Python.

Decompression is bounded: every read asks for at most one chunk, and more
than ``limit`` bytes of output stops it, so a small "bomb" cannot fill memory.
The caller validates the header of what comes out (architecture, release)
before anything is loaded.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import zlib
from typing import Any, BinaryIO, Protocol

from liveupd.kernel.image import (
    MAX_DECOMPRESSED,
    ImageError,
    ImageFormat,
    KernelImage,
    parse_image,
    zboot_payload_range,
)
from liveupd.kernel.memfd import CHUNK, FdRange, SealedWriter
from liveupd.kernel.pe import pread_exact

ZSTD_PACKAGE = "python3-zstandard"
ZSTD_WINDOW_MAX = 1 << 30  # the kernel's zstd22 uses a large window; bounded all the same


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class UnpackError(ValueError):
    """The stream cannot be unpacked; the text says why, without the file name."""


class RangeReader(io.RawIOBase):
    """A read-only file object over ``size`` bytes at ``offset`` of ``fd`` (pread only)."""

    def __init__(self, src: FdRange) -> None:
        super().__init__()
        self.src = src
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.src.size - self.pos)
        if n <= 0:
            return 0
        data = os.pread(self.src.fd, n, self.src.offset + self.pos)
        view[: len(data)] = data
        self.pos += len(data)
        return len(data)


def zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def _zstd_reader(raw: BinaryIO) -> Readable:
    try:
        import zstandard
    except ImportError:
        raise UnpackError(
            f"is zstd-compressed, and reading zstd needs {ZSTD_PACKAGE}, which is not "
            f"installed. Install it (apt install {ZSTD_PACKAGE}) and stage again"
        ) from None
    dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW_MAX)
    reader: Readable = dctx.stream_reader(raw, read_size=CHUNK, read_across_frames=True)
    return reader


SUPPORTED = ("gzip", "xz", "lzma", "bzip2", "zstd")


def _open_stream(kind: str, raw: BinaryIO) -> Readable:
    # Closed with ``raw`` (nothing of theirs outlives unpack_to).
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind in ("xz", "lzma"):
        fmt = lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE
        return lzma.LZMAFile(raw, format=fmt)
    if kind == "bzip2":
        return bz2.BZ2File(raw)
    return _zstd_reader(raw)


def _errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, EOFError, zlib.error, lzma.LZMAError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def unpack_to(writer: SealedWriter, kind: str, src: FdRange, limit: int) -> None:
    """Decompress ``src`` (``kind``) into ``writer``; UnpackError past ``limit`` bytes."""
    if kind not in SUPPORTED:
        raise UnpackError(
            f"is {kind}-compressed; liveupd can unpack {', '.join(SUPPORTED)} only, and it must "
            "see the kernel before loading it. Stage an uncompressed or gzip-compressed image"
        )
    raw = io.BufferedReader(RangeReader(src), CHUNK)
    try:
        stream = _open_stream(kind, raw)
        while chunk := stream.read(CHUNK):
            if writer.size + len(chunk) > limit:
                raise UnpackError(
                    f"decompresses to more than {limit >> 20} MiB; that is not a kernel"
                )
            writer.write(chunk)
    except UnpackError:
        raise
    except _errors() as e:
        raise UnpackError(f"is {kind}-compressed but does not decompress: {e}") from None
    if writer.size == 0:
        raise UnpackError(f"is {kind}-compressed but decompresses to nothing")


def unpack(kind: str, src: FdRange, limit: int, name: str) -> int:
    """A sealed memfd with ``src`` decompressed."""
    with SealedWriter(name) as w:
        unpack_to(w, kind, src, limit)
        return w.seal()


def unpack_kernel(fd: int, size: int, image: KernelImage, name: str) -> int:
    """The kernel an EFI zboot or compressed image wraps, in a sealed memfd.

    The header of what came out is parsed again from the memfd and must be the
    kernel ``image`` said it holds (format, architecture, release), so what is
    loaded is exactly what was validated.
    """
    kernel = image.kernel
    if image.format is ImageFormat.EFI_ZBOOT:
        offset, length = zboot_payload_range(pread_exact(fd, 0x40, 0))
        src = FdRange(fd, offset, length)
    elif image.format is ImageFormat.COMPRESSED:
        src = FdRange(fd, 0, size)
    else:
        raise UnpackError(f"is {image.describe()}, which is not unpacked")
    memfd = unpack(image.compression, src, MAX_DECOMPRESSED, name)
    try:
        try:
            inner = parse_image(pread_exact(memfd, os.fstat(memfd).st_size, 0))
        except ImageError as e:
            raise UnpackError(f"holds something that is not a kernel once unpacked: {e}") from None
        if inner is not inner.kernel:
            raise UnpackError("nests one compressed image in another; unpack it once yourself")
        seen = (inner.format, inner.arch, inner.release)
        if seen != (kernel.format, kernel.arch, kernel.release):
            raise UnpackError(
                f"unpacked to {inner.arch} {inner.format} {inner.release or '(no version)'}, "
                f"not the {kernel.arch} {kernel.format} {kernel.release} its header check saw"
            )
    except BaseException:
        os.close(memfd)
        raise
    return memfd
