"""kexec_file_load and reboot(LINUX_REBOOT_CMD_KEXEC) through cffi, in ABI mode.

cffi is imported on first use only (daemon start-up does not pay for it), and
in ABI mode: libc's variadic ``syscall()`` is called directly, so nothing is
compiled, at install time or ever.  Every variadic argument is passed as typed
cdata, and errno is read right after the call, before anything else can
change it.

Tests replace the C function at this boundary with :func:`inject`: the fake
receives exactly the cdata the real ``syscall()`` would, and reports failure
as the real one does (set ``ffi().errno``, return -1).  While
``LIVEUPD_HOST_TEST`` is set (every host test process) the real function is
never looked up: a host test that forgot to inject gets an error, not a kexec.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from enum import IntFlag
from typing import Any

from liveupd.kernel.arch import ArchInfo

HOST_TEST_ENV = "LIVEUPD_HOST_TEST"
CDEF = "long syscall(long number, ...);"

LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_KEXEC = 0x45584543


class KexecFileFlag(IntFlag):
    NONE = 0
    UNLOAD = 1
    ON_CRASH = 2
    NO_INITRAMFS = 4


def flag_names(flags: KexecFileFlag) -> list[str]:
    return [f"KEXEC_FILE_{f.name}" for f in KexecFileFlag if f and f in flags and f.name]


class HostTestRefusal(RuntimeError):
    """The real syscall was about to be looked up inside a host test."""


SyscallFn = Callable[..., Any]


class _State:
    lock = threading.Lock()
    ffi: Any = None
    real: SyscallFn | None = None
    injected: SyscallFn | None = None


def ffi() -> Any:
    """The cffi FFI object (created on first use; no library is opened here)."""
    with _State.lock:
        if _State.ffi is None:
            import cffi  # type: ignore[import-untyped, unused-ignore]

            f = cffi.FFI()
            f.cdef(CDEF)
            _State.ffi = f
        return _State.ffi


def _function() -> SyscallFn:
    if _State.injected is not None:
        return _State.injected
    if os.environ.get(HOST_TEST_ENV):
        raise HostTestRefusal(
            f"refusing to call the real kexec syscalls: {HOST_TEST_ENV} is set (a host test). "
            "Inject a fake with liveupd.kernel.syscalls.inject()"
        )
    f = ffi()
    with _State.lock:
        if _State.real is None:
            _State.real = f.dlopen(None).syscall
        return _State.real


def injected() -> bool:
    return _State.injected is not None


@contextlib.contextmanager
def inject(fn: SyscallFn) -> Iterator[None]:
    """Replace libc's ``syscall()`` with ``fn`` (for tests)."""
    previous, _State.injected = _State.injected, fn
    try:
        yield
    finally:
        _State.injected = previous


Arg = int | bytes | None


def call(number: int, *args: Arg) -> int:
    """``syscall(number, *args)``; OSError with the errno read right after a -1 return.

    ints are passed as C ``long``, bytes as a NUL-terminated ``char *``, None as NULL.
    """
    f = ffi()
    fn = _function()
    keep: list[Any] = []
    cargs: list[Any] = [f.cast("long", number)]
    for a in args:
        if a is None:
            cargs.append(f.cast("char *", 0))
        elif isinstance(a, bytes):
            buf = f.new("char[]", a)
            keep.append(buf)
            cargs.append(f.cast("char *", buf))
        else:
            cargs.append(f.cast("long", a))
    f.errno = 0
    result = int(fn(*cargs))
    err = int(f.errno)
    del keep
    if result == -1:
        raise OSError(err, os.strerror(err) if err else "failed without an errno")
    return result


def kexec_file_load(
    arch: ArchInfo, kernel_fd: int, initrd_fd: int | None, cmdline: str, flags: KexecFileFlag
) -> None:
    """Load a kernel for a later kexec.  ``cmdline_len`` includes the trailing NUL."""
    if initrd_fd is None:
        flags |= KexecFileFlag.NO_INITRAMFS
    raw = cmdline.encode()
    call(
        arch.nr_kexec_file_load,
        kernel_fd,
        -1 if initrd_fd is None else initrd_fd,
        len(raw) + 1,
        raw,
        int(flags),
    )


def kexec_file_unload(arch: ArchInfo) -> None:
    call(arch.nr_kexec_file_load, -1, -1, 0, None, int(KexecFileFlag.UNLOAD))


def reboot_kexec(arch: ArchInfo) -> None:
    """reboot(LINUX_REBOOT_CMD_KEXEC): does not return when it works."""
    call(arch.nr_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC, None)
