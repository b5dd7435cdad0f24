"""Open a kernel or initrd safely and check it through the open descriptor.

Opening is :mod:`liveupd.safeopen`'s: the path is walked from ``/`` one
component at a time without the kernel following any symlink, every directory
on the way (and above the allowed directory) must be owned by root (or by the
user liveupd runs as) and not writable by group or others, and the file is
opened once, ``O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC``, then checked through
that descriptor with ``fstat``: a regular file, root's, not group/other
writable, not empty, and no larger than 256 MiB (a kernel) or 2 GiB (an
initrd).  Everything after that (contents, hash) is read through that
descriptor, which is the one handed to the kernel: renaming another file over
the path afterwards changes nothing that is loaded.

The path must lie inside one of ``kernel.allowed-dirs``; a symlink on the way
is followed only when root made it and what it leads to is still inside an
allowed directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from liveupd import safeopen
from liveupd.errors import InvalidArgument, InvalidKernel
from liveupd.quoting import clip, quote
from liveupd.safeopen import Kind, Refusal, UnsafeFile

CHUNK = safeopen.CHUNK
KERNEL_MAX = safeopen.LIMITS[Kind.KERNEL]
INITRD_MAX = safeopen.LIMITS[Kind.INITRD]


@dataclass(frozen=True)
class FileId:
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileId:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class OpenedFile:
    path: str  # as asked for
    real: str  # with symlinks resolved
    fd: int
    id: FileId
    stat: os.stat_result


def trusted_uids() -> frozenset[int]:
    """root, and the user liveupd runs as (it can change its own files anyway)."""
    return safeopen.trusted_uids()


def _kind(what: str) -> Kind:
    return Kind.INITRD if what == "initrd" else Kind.ENTRY if what == "entry" else Kind.KERNEL


def _in_allowed(path: str, allowed_dirs: Sequence[str], uids: frozenset[int]) -> str | None:
    """The allowed directory ``path`` is written inside of (None if it is in none)."""
    for d in allowed_dirs:
        if safeopen.relative_to(path, d, d) is not None:
            return d
        try:
            real = safeopen.realpath(d, uids=uids)
        except UnsafeFile:
            continue
        if safeopen.relative_to(path, d, real) is not None:
            return d
    return None


def open_safely(
    path: str,
    allowed_dirs: Sequence[str],
    kind: Kind,
    what: str,
    uids: frozenset[int] | None = None,
) -> safeopen.SafeFile:
    """Open ``path`` inside an allowed directory as a file of ``kind``; InvalidKernel if unsafe."""
    uids = uids if uids is not None else trusted_uids()
    dirs = ", ".join(allowed_dirs)
    shown = clip(path)
    if not path.startswith("/"):
        raise InvalidArgument(f"{shown}: the {what} must be given as an absolute path")
    if ".." in path.split("/") or "\0" in path:
        raise InvalidArgument(f"{shown}: the {what} path must not contain '..'")
    allowed = _in_allowed(path, allowed_dirs, uids)
    target = path
    if allowed is None:
        # Named through a symlink outside the allowed directories (/vmlinuz -> boot/...):
        # fine if root made it and it leads inside one.
        try:
            target = safeopen.realpath(path, uids=uids)
        except UnsafeFile as e:
            raise _refused(e, path, kind, what, dirs) from None
        allowed = _in_allowed(target, allowed_dirs, uids)
        if allowed is None:
            raise InvalidKernel(
                f"{shown}: not inside an allowed directory (kernel.allowed-dirs: {dirs}). "
                f"Install the {what} there, or add its directory to kernel.allowed-dirs"
            )
    try:
        return safeopen.open_file(target, kind, beneath=allowed, uids=uids, allow_empty=False)
    except UnsafeFile as e:
        if e.refusal is not Refusal.SYMLINK_OUT:
            raise _refused(e, path, kind, what, dirs) from None
        # A symlink out of this allowed directory may lead into another one.
        try:
            real = safeopen.realpath(path, uids=uids)
        except UnsafeFile:
            raise _refused(e, path, kind, what, dirs) from None
        other = _in_allowed(real, allowed_dirs, uids)
        if other is None:
            raise _refused(e, path, kind, what, dirs) from None
        try:
            return safeopen.open_file(real, kind, beneath=other, uids=uids, allow_empty=False)
        except UnsafeFile as e2:
            raise _refused(e2, path, kind, what, dirs) from None


def _refused(e: UnsafeFile, path: str, kind: Kind, what: str, dirs: str) -> InvalidKernel:
    shown = clip(path)
    if e.refusal is Refusal.MISSING:
        if e.path == path:
            return InvalidKernel(f"{shown}: no such {what} file; check the path or the release")
        return InvalidKernel(f"{shown}: no such {what} file ({e.path} does not exist)")
    if e.refusal is Refusal.SYMLINK_OUT:
        return InvalidKernel(
            f"{shown}: a symlink leads out of the allowed directories ({e.reason}); "
            f"kernel.allowed-dirs: {dirs}. Point it inside them, or give the real file"
        )
    if e.refusal is Refusal.NOT_REGULAR and e.path == path and "is a directory" in e.reason:
        return InvalidKernel(f"{shown}: is a directory, not a {what} file")
    where = clip(e.path)
    return InvalidKernel(f"{where}: {e.reason}")


def open_checked(
    path: str,
    allowed_dirs: Sequence[str],
    what: str = "kernel",
    uids: frozenset[int] | None = None,
) -> OpenedFile:
    """Open ``path`` safely (see the module docstring); InvalidKernel when it is not safe."""
    f = open_safely(path, allowed_dirs, _kind(what), what, uids)
    return OpenedFile(path, f.real, f.fd, FileId.of(f.stat), f.stat)


@contextlib.contextmanager
def opened(path: str, allowed_dirs: Sequence[str], what: str = "kernel") -> Iterator[OpenedFile]:
    f = open_checked(path, allowed_dirs, what)
    try:
        yield f
    finally:
        os.close(f.fd)


def read_all(fd: int, limit: int | None = KERNEL_MAX) -> bytes:
    """The whole file behind ``fd`` in one buffer (InvalidKernel beyond ``limit`` bytes)."""
    size = os.fstat(fd).st_size
    if limit is not None and size > limit:
        raise InvalidKernel(f"the image is {size} bytes, more than a kernel may be ({limit})")
    return safeopen.pread_exact(fd, size)


def sha256_fd(fd: int) -> str:
    return safeopen.sha256_fd(fd)


def check_pin(pin: str, actual: str, path: str) -> None:
    """The caller's SHA-256 pin, if any, must match what the descriptor holds."""
    if not pin:
        return
    want = pin.strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise InvalidArgument(
            f"the SHA-256 pin {quote(pin)} is not 64 hexadecimal digits; give sha256sum's output"
        )
    if want != actual:
        raise InvalidKernel(
            f"{path}: its SHA-256 is {actual}, not {want} as pinned. It is not the kernel you "
            "meant: check which file is installed, or update the pin"
        )


_INITRD_MAGICS = (
    b"070701",
    b"070702",
    b"\x1f\x8b",
    b"\x28\xb5\x2f\xfd",
    b"\xfd7zXZ\x00",
    b"\x02\x21\x4c\x18",
    b"\x04\x22\x4d\x18",
    b"\x5d\x00\x00",
    b"BZh",
    b"\x89LZO",
)


def check_initrd(f: OpenedFile) -> None:
    head = os.pread(f.fd, 8, 0)
    if not head.startswith(_INITRD_MAGICS):
        raise InvalidKernel(
            f"{f.path}: does not look like an initramfs (neither a cpio archive nor a "
            f"gzip/zstd/xz/lz4/lzma/bzip2/lzo stream; it starts with {head!r}). Give the "
            "initrd built for this kernel (update-initramfs -c -k RELEASE, or dracut)"
        )
