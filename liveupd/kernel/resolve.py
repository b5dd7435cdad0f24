"""Turn a stage request into a validated target, and open it for loading.

(First version: /boot/vmlinuz-RELEASE layout only; discovery, image header
checks and the full validation rules build on this.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from liveupd.backends.base import OpenedKernel, SystemBackend
from liveupd.config import Config
from liveupd.errors import InvalidArgument, InvalidKernel
from liveupd.transition.context import StageRequest, Target

DROP_FROM_CMDLINE = ("BOOT_IMAGE=", "initrd=", "liveupd.transition=")


def build_cmdline(base: str, append: str, transition_id: str) -> str:
    words = [w for w in base.split() if not w.startswith(DROP_FROM_CMDLINE)]
    words += append.split()
    words.append(f"liveupd.transition={transition_id}")
    line = " ".join(words)
    if "\n" in line or "\0" in line:
        raise InvalidArgument("the command line cannot contain a newline or NUL character")
    return line


def _release_of(path: Path) -> str:
    if path.name.startswith("vmlinuz-"):
        return path.name.removeprefix("vmlinuz-")
    return path.parent.name


def resolve_target(
    request: StageRequest, config: Config, system: SystemBackend, transition_id: str
) -> Target:
    dirs = [Path(d) for d in config.kernel.allowed_dirs]
    if not request.kernel:
        kernels = sorted(k for d in dirs for k in d.glob("vmlinuz-*"))
        if not kernels:
            raise InvalidKernel("no kernel found in kernel.allowed-dirs; install one")
        kernel = kernels[-1]
    elif "/" in request.kernel:
        kernel = Path(request.kernel)
    else:
        kernel = next(
            (
                d / f"vmlinuz-{request.kernel}"
                for d in dirs
                if (d / f"vmlinuz-{request.kernel}").exists()
            ),
            dirs[0] / f"vmlinuz-{request.kernel}",
        )
    if not any(kernel.is_relative_to(d) for d in dirs):
        raise InvalidKernel(
            f"{kernel}: not inside an allowed directory ({', '.join(map(str, dirs))})"
        )
    if not kernel.is_file():
        raise InvalidKernel(f"{kernel}: no such kernel file; check the path or release")
    release = _release_of(kernel)
    initrd: Path | None = Path(request.initrd) if request.initrd else None
    if initrd is None:
        candidate = kernel.with_name(f"initrd.img-{release}")
        initrd = candidate if candidate.exists() else None
    cmdline = build_cmdline(request.cmdline or system.cmdline(), request.append, transition_id)
    with _open(kernel) as fd:
        digest = _sha256(fd)
    if request.sha256 and request.sha256.lower() != digest:
        raise InvalidKernel(
            f"{kernel}: SHA-256 is {digest}, not the {request.sha256} you asked for"
        )
    return Target(release, str(kernel), str(initrd) if initrd else None, cmdline, digest)


@contextlib.contextmanager
def _open(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise InvalidKernel(f"{path}: cannot open: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidKernel(f"{path}: not a regular file")
        yield fd
    finally:
        os.close(fd)


def _sha256(fd: int) -> str:
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def open_target(target: Target, config: Config) -> Iterator[OpenedKernel]:
    with contextlib.ExitStack() as stack:
        kfd = stack.enter_context(_open(Path(target.kernel_path)))
        if _sha256(kfd) != target.sha256:
            raise InvalidKernel(f"{target.kernel_path} changed since it was checked; stage again")
        ifd = stack.enter_context(_open(Path(target.initrd_path))) if target.initrd_path else None
        yield OpenedKernel(
            target.release, target.kernel_path, target.initrd_path, kfd, ifd, target.sha256
        )
