"""The one way liveupd opens a file it reads or runs as root.

Kernels, initrds, boot loader entries, the configuration and its drop-ins,
hook manifests and hook programs all come through here, so that nothing a
caller names, and nothing a file points to, can make the daemon read, run or
hold something that only root could not have chosen:

* **The path.**  Absolute, no ``..`` component, no NUL.  It is walked from
  ``/`` one component at a time, each opened relative to the directory before
  it: with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
  RESOLVE_NO_MAGICLINKS)`` where the kernel has it (5.6 and later), else with
  ``openat(O_NOFOLLOW)``.  Either way no symlink is followed by the kernel, and
  nothing can be swapped in between two steps.
* **Every directory** on the way, from ``/`` down, is checked through its
  descriptor: owned by root (or by the user liveupd runs as, for tests) and
  not writable by group or others.  A world-writable directory with the sticky
  bit (``/tmp``) may be passed through: nobody can rename or remove in it an
  entry they do not own, and the next step is checked the same way.
* **A symlink** met on the way is followed by this code, not by the kernel:
  only one owned by root (it then sits in a root-owned directory, so root
  made it) and, below the ``beneath`` directory, only one whose target stays
  beneath it.  At most 40 of them per path.
* **The file** is opened ``O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC |
  O_NOCTTY``, so a FIFO or a device is never waited on, and checked through
  its descriptor with ``fstat``: a regular file, owned by root (or liveupd's
  user), not writable by group or others, and no larger than the cap of its
  kind (:data:`LIMITS`).  ``O_NONBLOCK`` is cleared once it is known to be a
  regular file.

What is returned is the open descriptor and its ``fstat``: everything after
(reading, hashing, loading, executing) goes through that descriptor, so what
was checked is what is used.  :class:`UnsafeFile` says which file (or
directory) was refused and why, with the fix when there is one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from liveupd.quoting import clip

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
CHUNK = 1 * MiB  # streaming reads and hashing
MAX_SYMLINKS = 40  # as the kernel's own limit (MAXSYMLINKS)


class Kind(StrEnum):
    """What a file is to liveupd; each kind has a size cap."""

    KERNEL = "kernel"
    INITRD = "initrd"
    ENTRY = "boot loader entry"
    CONFIG = "configuration file"
    MANIFEST = "hook manifest"
    PROGRAM = "hook program"
    MODULE_INDEX = "kernel module index"
    CRYPTTAB = "crypttab"
    PRESERVE = "preserved service record"
    KERNEL_CONFIG = "kernel build configuration"


# The caps (bytes).  Documented in docs/kernels.md and docs/hooks.md.
LIMITS: dict[Kind, int | None] = {
    Kind.KERNEL: 256 * MiB,
    Kind.INITRD: 2 * GiB,
    Kind.ENTRY: 64 * KiB,
    Kind.CONFIG: 64 * KiB,
    Kind.MANIFEST: 64 * KiB,
    Kind.PROGRAM: None,  # never read by liveupd, only executed
    Kind.MODULE_INDEX: 16 * MiB,  # /usr/lib/modules/R/modules.dep, modules.builtin
    Kind.CRYPTTAB: 64 * KiB,  # /etc/crypttab
    Kind.PRESERVE: 64 * KiB,  # <state-dir>/transitions/ID/preserve/UNIT/restore.json
    Kind.KERNEL_CONFIG: 4 * MiB,  # /boot/config-R (Debian's: ~280 KiB)
}


class Refusal(StrEnum):
    """Why a path was refused (for callers that decide by kind, never by message text)."""

    BAD_PATH = "bad-path"
    MISSING = "missing"
    NOT_DIRECTORY = "not-a-directory"
    NOT_REGULAR = "not-a-regular-file"
    OWNER = "owner"
    WRITABLE = "writable"
    TOO_LARGE = "too-large"
    EMPTY = "empty"
    SYMLINK_OUT = "symlink-out"
    SYMLINK_OWNER = "symlink-owner"
    LOOP = "symlink-loop"
    IO = "io-error"


class UnsafeFile(Exception):
    """A file (or a directory on its way) that liveupd will not open; ``path``: which one."""

    def __init__(self, path: str, reason: str, refusal: Refusal) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.refusal = refusal


@dataclass(frozen=True)
class SafeFile:
    """An open, checked file or directory: the descriptor and what ``fstat`` said of it."""

    path: str  # as asked for (normalized)
    real: str  # with symlinks resolved
    fd: int
    stat: os.stat_result

    @property
    def size(self) -> int:
        return self.stat.st_size

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> SafeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def trusted_uids() -> frozenset[int]:
    """root, and the user liveupd runs as (it can change its own files anyway)."""
    return frozenset({0, os.geteuid()})


# ------------------------------------------------------------- openat2 ----

NR_OPENAT2 = 437  # the same number on every architecture (asm-generic, x86_64)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS


class _Openat2:
    """``openat2`` through cffi in ABI mode (nothing compiled); None when the kernel lacks it.

    ``struct open_how`` and ``syscall`` are declared in liveupd._libc (cffi's
    out-of-line ABI mode, generated by liveupd/_libc_build.py): loading them
    imports ``_cffi_backend`` only, and parses no C text.
    """

    lock = threading.Lock()
    state: tuple[Any, Any] | None = None
    unavailable = False


def _openat2_fn() -> tuple[Any, Any] | None:
    if _Openat2.unavailable:
        return None
    with _Openat2.lock:
        if _Openat2.state is None:
            try:
                from liveupd._libc import ffi

                _Openat2.state = (ffi, ffi.dlopen(None))
            except (ImportError, OSError):
                _Openat2.unavailable = True
                return None
        return _Openat2.state


def openat2_available() -> bool:
    """Whether this kernel (and seccomp filter) lets liveupd use openat2."""
    root = _open_component(None, "/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _openat2(root, ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(root)
    if fd is None:
        return False
    os.close(fd)
    return True


def _openat2(dirfd: int, name: str, flags: int) -> int | None:
    """openat2(dirfd, name, flags, RESOLVE); None when openat2 is not available."""
    fns = _openat2_fn()
    if fns is None:
        return None
    ffi, lib = fns
    how = ffi.new("struct open_how *", {"flags": flags, "mode": 0, "resolve": RESOLVE})
    raw = ffi.new("char[]", os.fsencode(name))
    ffi.errno = 0
    fd = int(
        lib.syscall(
            ffi.cast("long", NR_OPENAT2),
            ffi.cast("long", dirfd),
            ffi.cast("char *", raw),
            ffi.cast("void *", how),
            ffi.cast("long", ffi.sizeof("struct open_how")),
        )
    )
    if fd >= 0:
        return fd
    err = int(ffi.errno)
    if err in (errno.ENOSYS, errno.EPERM) and not _Openat2.unavailable:
        # An old kernel, or a seccomp filter without openat2: the walk below is
        # as safe with openat(O_NOFOLLOW), one component at a time.
        _Openat2.unavailable = True
        return None
    raise OSError(err, os.strerror(err))


def _open_component(dirfd: int | None, name: str, flags: int) -> int:
    """Open one path component below ``dirfd`` (``/`` itself when dirfd is None)."""
    flags |= os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY
    if dirfd is None:
        return os.open("/", flags)
    fd = _openat2(dirfd, name, flags)
    if fd is not None:
        return fd
    return os.open(name, flags, dir_fd=dirfd)


# ---------------------------------------------------------------- walk ----


def _split(path: str) -> list[str]:
    """The components of an absolute path; UnsafeFile for '..', NUL or a relative path."""
    if "\0" in path:
        raise UnsafeFile(clip(path), "the path contains a NUL character", Refusal.BAD_PATH)
    if not path.startswith("/"):
        raise UnsafeFile(clip(path), "not an absolute path", Refusal.BAD_PATH)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeFile(clip(path), "the path must not contain '..'", Refusal.BAD_PATH)
    return parts


def _join(parts: Sequence[str]) -> str:
    return "/" + "/".join(parts)


def _writers(mode: int) -> str:
    if mode & stat.S_IWGRP and mode & stat.S_IWOTH:
        return "group and others"
    return "group" if mode & stat.S_IWGRP else "others"


def check_owner_mode(st: os.stat_result, where: str, uids: frozenset[int]) -> None:
    """Owned by a trusted uid, not writable by group or others (sticky directories excepted)."""
    if st.st_uid not in uids:
        raise UnsafeFile(
            where,
            f"owned by uid {st.st_uid}, not root; a file another user can change is not "
            f"trusted, nor a directory holding one. If it is genuine: chown root:root {where}",
            Refusal.OWNER,
        )
    mode = stat.S_IMODE(st.st_mode)
    writable = mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not (stat.S_ISDIR(st.st_mode) and mode & stat.S_ISVTX):
        raise UnsafeFile(
            where,
            f"writable by {_writers(mode)} (mode {mode:04o}); only root may be able to change "
            f"it or the directories holding it. Fix: chmod go-w {where}",
            Refusal.WRITABLE,
        )


def _missing(where: str, e: OSError) -> UnsafeFile:
    if e.errno == errno.ENOENT:
        return UnsafeFile(where, "does not exist", Refusal.MISSING)
    if e.errno in (errno.EXDEV, errno.ELOOP):
        return UnsafeFile(
            where, "changed into a symlink while it was being opened", Refusal.SYMLINK_OUT
        )
    return UnsafeFile(where, f"cannot open: {e.strerror}", Refusal.IO)


class _Walk:
    """One walk from ``/``: the current directory's descriptor and its real path."""

    def __init__(self, beneath: list[str] | None, uids: frozenset[int], asked: str) -> None:
        self.beneath = beneath
        self.uids = uids
        self.asked = asked
        self.hops = 0
        self.fd = -1
        self.real: list[str] = []

    def restart(self) -> None:
        self.close()
        self.fd = _open_component(None, "/", os.O_RDONLY | os.O_DIRECTORY)
        self.real = []
        check_owner_mode(os.fstat(self.fd), "/", self.uids)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _inside(self, parts: Sequence[str]) -> bool:
        b = self.beneath
        return b is None or (len(parts) >= len(b) and list(parts[: len(b)]) == b)

    def follow(self, name: str, rest: list[str]) -> list[str]:
        """The whole new path when ``name`` (in the current directory) is a trusted symlink."""
        where = _join([*self.real, name])
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError as e:
            raise _missing(where, e) from None
        if not stat.S_ISLNK(st.st_mode):
            return []
        if st.st_uid not in self.uids:
            raise UnsafeFile(
                where,
                f"a symlink owned by uid {st.st_uid}, not root; it is not followed",
                Refusal.SYMLINK_OWNER,
            )
        self.hops += 1
        if self.hops > MAX_SYMLINKS:
            raise UnsafeFile(
                self.asked, f"more than {MAX_SYMLINKS} symlinks on the way", Refusal.LOOP
            )
        target = os.readlink(name, dir_fd=self.fd)
        base: list[str] = [] if target.startswith("/") else list(self.real)
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if base:
                    base.pop()
            else:
                base.append(part)
        new = base + rest
        if self._inside([*self.real, name]) and not self._inside(base):
            assert self.beneath is not None
            raise UnsafeFile(
                where,
                f"a symlink leads out of {_join(self.beneath)} (to {clip(_join(base))})",
                Refusal.SYMLINK_OUT,
            )
        return new

    def walk(self, parts: list[str], *, last_is_dir: bool) -> tuple[str, list[str]]:
        """Open every directory of ``parts`` (all of them when ``last_is_dir``).

        Returns the last name still to open (``""`` when ``last_is_dir``) and the
        real path of the directory now in ``self.fd``.
        """
        self.restart()
        todo = list(parts)
        while todo:
            name = todo.pop(0)
            if not todo and not last_is_dir:
                new = self.follow(name, [])
                if new:
                    todo = new
                    self.restart()
                    continue
                return name, self.real
            try:
                nfd = _open_component(self.fd, name, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                    new = self.follow(name, todo)
                    if new:
                        todo = new
                        self.restart()
                        continue
                    raise UnsafeFile(
                        _join([*self.real, name]), "not a directory", Refusal.NOT_DIRECTORY
                    ) from None
                raise _missing(_join([*self.real, name]), e) from None
            where = _join([*self.real, name])
            try:
                check_owner_mode(os.fstat(nfd), where, self.uids)
            except BaseException:
                os.close(nfd)
                raise
            os.close(self.fd)
            self.fd = nfd
            self.real.append(name)
        if self.beneath is not None and not self._inside(self.real):
            raise UnsafeFile(
                self.asked,
                f"resolves to {_join(self.real)}, outside {_join(self.beneath)}",
                Refusal.SYMLINK_OUT,
            )
        return "", self.real


def _beneath_parts(beneath: str | None, uids: frozenset[int]) -> list[str] | None:
    """The real path of ``beneath`` (its own symlinks resolved, its directories checked)."""
    if beneath is None:
        return None
    w = _Walk(None, uids, beneath)
    try:
        _, real = w.walk(_split(beneath), last_is_dir=True)
        return list(real)
    finally:
        w.close()


def relative_to(path: str, beneath: str, beneath_real: str) -> list[str] | None:
    """``path``'s components below ``beneath`` (as written, or as resolved); None if not below."""
    parts = _split(path)
    for base in (beneath, beneath_real):
        b = _split(base)
        if parts[: len(b)] == b:
            return parts[len(b) :]
    return None


def realpath(path: str, *, uids: frozenset[int] | None = None) -> str:
    """``path`` with its symlinks resolved, following only trusted ones through trusted
    directories (UnsafeFile otherwise); the file itself is not opened."""
    uids = uids if uids is not None else trusted_uids()
    w = _Walk(None, uids, path)
    try:
        name, real = w.walk(_split(path), last_is_dir=False)
    finally:
        w.close()
    return _join([*real, name])


def open_dir(path: str, *, uids: frozenset[int] | None = None) -> SafeFile:
    """Open a directory (to list it): every directory from ``/`` down checked."""
    uids = uids if uids is not None else trusted_uids()
    w = _Walk(None, uids, path)
    try:
        _, real = w.walk(_split(path), last_is_dir=True)
    except BaseException:
        w.close()
        raise
    fd, w.fd = w.fd, -1
    return SafeFile(path, _join(real), fd, os.fstat(fd))


def open_file(
    path: str,
    kind: Kind,
    *,
    beneath: str | None = None,
    uids: frozenset[int] | None = None,
    max_size: int | None = None,
    allow_empty: bool = True,
) -> SafeFile:
    """Open ``path`` as a file of ``kind`` (see the module docstring); UnsafeFile if not safe.

    With ``beneath``, ``path`` must lie below that directory (as written or as
    resolved) and no symlink below it may lead out of it.  ``max_size``
    overrides the kind's cap.
    """
    uids = uids if uids is not None else trusted_uids()
    cap = max_size if max_size is not None else LIMITS[kind]
    parts = _split(path)
    beneath_parts = _beneath_parts(beneath, uids)
    if beneath is not None and beneath_parts is not None:
        rel = relative_to(path, beneath, _join(beneath_parts))
        if rel is None:
            raise UnsafeFile(path, f"not inside {beneath}", Refusal.BAD_PATH)
        if not rel:
            raise UnsafeFile(path, f"is a directory, not a {kind} file", Refusal.NOT_REGULAR)
        parts = beneath_parts + rel
    if not parts:
        raise UnsafeFile(path, f"is a directory, not a {kind} file", Refusal.NOT_REGULAR)
    w = _Walk(beneath_parts, uids, path)
    try:
        name, real = w.walk(parts, last_is_dir=False)
        where = _join([*real, name])
        try:
            fd = _open_component(w.fd, name, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafeFile(
                    where, "changed into a symlink while it was being opened", Refusal.SYMLINK_OUT
                ) from None
            raise _missing(where, e) from None
    finally:
        w.close()
    try:
        st = os.fstat(fd)
        check_file(st, where, kind, cap, uids, allow_empty=allow_empty)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return SafeFile(path, where, fd, st)


def check_file(
    st: os.stat_result,
    where: str,
    kind: Kind,
    cap: int | None,
    uids: frozenset[int],
    *,
    allow_empty: bool = True,
) -> None:
    """The checks on an open file's ``fstat``: regular, owner, mode, size."""
    if not stat.S_ISREG(st.st_mode):
        what = (
            "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        raise UnsafeFile(
            where, f"is {what}, not a regular file; give the {kind} itself", Refusal.NOT_REGULAR
        )
    check_owner_mode(st, where, uids)
    if cap is not None and st.st_size > cap:
        raise UnsafeFile(
            where,
            f"is {_size(st.st_size)}, larger than a {kind} may be ({_size(cap)}); "
            "that is not a genuine one",
            Refusal.TOO_LARGE,
        )
    if not allow_empty and st.st_size == 0:
        raise UnsafeFile(where, f"the {kind} file is empty; reinstall it", Refusal.EMPTY)


def _size(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


# ------------------------------------------------------------- reading ----


def chunks(fd: int, size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of ``fd``, in chunks of at most CHUNK (pread: no seek)."""
    return chunks_from(fd, 0, size)


def pread_exact(fd: int, size: int) -> bytes:
    """The first ``size`` bytes of ``fd`` in one buffer; OSError if the file is not that size.

    One ``pread`` fills one buffer (no list of chunks joined into a second copy).
    """
    data = os.pread(fd, size, 0)
    if len(data) < size:
        data += b"".join(chunks_from(fd, len(data), size))
    if len(data) != size or os.pread(fd, 1, size):
        raise OSError(errno.EIO, "the file changed size while it was read")
    return data


def chunks_from(fd: int, start: int, size: int) -> Iterator[bytes]:
    offset = start
    while offset < size:
        chunk = os.pread(fd, min(CHUNK, size - offset), offset)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def read_bytes(f: SafeFile) -> bytes:
    """The whole (capped) file, read through its descriptor; OSError if it changed size."""
    return pread_exact(f.fd, f.size)


def read_text(f: SafeFile) -> str:
    return read_bytes(f).decode("utf-8", errors="replace")


def sha256_fd(fd: int, size: int | None = None) -> str:
    """SHA-256 of the descriptor's content (the first ``size`` bytes), streamed."""
    h = hashlib.sha256()
    limit = size if size is not None else os.fstat(fd).st_size
    for chunk in chunks(fd, limit):
        h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------- directories ----


def list_names(d: SafeFile) -> list[str]:
    """The names in an open directory, sorted."""
    return sorted(os.listdir(d.fd))  # noqa: PTH208 (a descriptor, not a path)


def link_target(d: SafeFile, name: str) -> str | None:
    """What ``name`` in ``d`` points to when it is a symlink (None when it is not)."""
    try:
        st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISLNK(st.st_mode):
        return None
    return os.readlink(name, dir_fd=d.fd)


def is_mask(d: SafeFile, name: str) -> bool:
    """A symlink to /dev/null (systemd's way to mask a file of the same name)."""
    return link_target(d, name) == "/dev/null"
