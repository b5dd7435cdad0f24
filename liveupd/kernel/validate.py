"""Open a kernel or initrd safely and check it through the open descriptor.

The file is reached from its allowed directory one component at a time with
O_NOFOLLOW (so no symlink can be slipped in while it is opened), and opened
once, O_RDONLY|O_CLOEXEC|O_NOFOLLOW.  Everything after that (type, owner,
mode, contents, hash) is checked through that descriptor, which is the one
handed to the kernel: renaming another file over the path afterwards changes
nothing that is loaded.

Symlinks in the path are resolved first; the result must stay inside one of
the allowed directories.  The allowed directory itself and every directory
below it on the way, and the file, must be owned by root (or by the user
liveupd runs as) and not writable by group or others.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from liveupd.errors import InvalidArgument, InvalidKernel

CHUNK = 1 << 20


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


def trusted_uids() -> frozenset[int]:
    """root, and the user liveupd runs as (it can change its own files anyway)."""
    return frozenset({0, os.geteuid()})


def _allowed(path: Path, allowed_dirs: Sequence[str]) -> Path | None:
    """The real path of the allowed directory that holds ``path``'s real path."""
    real = Path(os.path.realpath(path))
    for d in allowed_dirs:
        root = Path(os.path.realpath(d))
        if real == root or real.is_relative_to(root):
            return root
    return None


def _check_owner_mode(st: os.stat_result, where: str, what: str, uids: frozenset[int]) -> None:
    if st.st_uid not in uids:
        raise InvalidKernel(
            f"{where}: owned by uid {st.st_uid}, not root; a {what} that another user can "
            f"change is not trusted. If it is genuine: chown root:root {where}"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InvalidKernel(
            f"{where}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); only "
            f"root may be able to change a {what} or the directories holding it. "
            f"Fix: chmod go-w {where}"
        )


def open_checked(
    path: str,
    allowed_dirs: Sequence[str],
    what: str = "kernel",
    uids: frozenset[int] | None = None,
) -> OpenedFile:
    """Open ``path`` safely (see the module docstring); InvalidKernel when it is not safe."""
    uids = uids if uids is not None else trusted_uids()
    p = Path(path)
    dirs = ", ".join(allowed_dirs)
    if not p.is_absolute():
        raise InvalidArgument(f"{path}: the {what} must be given as an absolute path")
    if ".." in p.parts:
        raise InvalidArgument(f"{path}: the {what} path must not contain '..'")
    root = _allowed(p, allowed_dirs)
    real = Path(os.path.realpath(p))
    if root is None:
        if any(p == Path(d) or p.is_relative_to(d) for d in allowed_dirs):
            raise InvalidKernel(
                f"{path}: a symlink leads out of the allowed directories (to {real}); "
                f"kernel.allowed-dirs: {dirs}. Point it inside them, or give the real file"
            )
        raise InvalidKernel(
            f"{path}: not inside an allowed directory (kernel.allowed-dirs: {dirs}). Install "
            "the kernel there, or add its directory to kernel.allowed-dirs"
        )
    parts = real.relative_to(root).parts
    if not parts:
        raise InvalidKernel(f"{path}: is a directory, not a {what} file")
    try:
        dirfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidKernel(f"{root}: cannot open the allowed directory: {e.strerror}") from None
    try:
        where = root
        _check_owner_mode(os.fstat(dirfd), str(where), what, uids)
        for name in parts[:-1]:
            where = where / name
            try:
                nfd = os.open(
                    name,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=dirfd,
                )
            except OSError as e:
                raise _open_error(str(where), what, e) from None
            os.close(dirfd)
            dirfd = nfd
            _check_owner_mode(os.fstat(dirfd), str(where), what, uids)
        try:
            # O_NONBLOCK only so that a FIFO planted here cannot hang the open;
            # it is cleared once the descriptor is known to be a regular file.
            fd = os.open(
                parts[-1],
                os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK,
                dir_fd=dirfd,
            )
        except OSError as e:
            raise _open_error(path, what, e) from None
    finally:
        os.close(dirfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidKernel(f"{path}: not a regular file; give the {what} file itself")
        os.set_blocking(fd, True)
        _check_owner_mode(st, path, what, uids)
        if st.st_size == 0:
            raise InvalidKernel(f"{path}: the {what} file is empty; reinstall it")
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(path, str(real), fd, FileId.of(st))


def _open_error(path: str, what: str, e: OSError) -> InvalidKernel:
    if e.errno == errno.ENOENT:
        return InvalidKernel(f"{path}: no such {what} file; check the path or the release")
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        return InvalidKernel(
            f"{path}: changed into a symlink while it was being opened; "
            "something is modifying it: stage again when it is stable"
        )
    return InvalidKernel(f"{path}: cannot open the {what}: {e.strerror}")


@contextlib.contextmanager
def opened(path: str, allowed_dirs: Sequence[str], what: str = "kernel") -> Iterator[OpenedFile]:
    f = open_checked(path, allowed_dirs, what)
    try:
        yield f
    finally:
        os.close(f.fd)


def read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


def check_pin(pin: str, actual: str, path: str) -> None:
    """The caller's SHA-256 pin, if any, must match what the descriptor holds."""
    if not pin:
        return
    want = pin.strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise InvalidArgument(
            f"the SHA-256 pin {pin!r} is not 64 hexadecimal digits; give sha256sum's output"
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
