"""Where the harness keeps built images and downloads: outside the repository.

${LIVEUPD_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/liveupd-vm}/
    build.lock               flock: one builder at a time
    downloads/debootstrap/   debootstrap's .deb cache
    downloads/kernels/       the kernel .debs
    downloads/wheels/        the project's runtime dependencies as wheels
    images/<key>/            one finished image (renamed into place atomically)
    images/.tmp-<key>-<pid>/ an image being built
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

KEEP_IMAGES = 3  # the current image and two others (worktrees on other recipes share it)


def cache_root() -> Path:
    explicit = os.environ.get("LIVEUPD_VM_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "liveupd-vm"


def images_dir() -> Path:
    return cache_root() / "images"


def downloads_dir(kind: str) -> Path:
    path = cache_root() / "downloads" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def build_lock(log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the cache's build lock (blocks while another builder holds it)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / "build.lock").open("a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log(f"another process is building an image in {root}: waiting for it")
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def prune(current: str) -> list[Path]:
    """Remove leftover temp dirs and all but the newest KEEP_IMAGES images.

    Call with the build lock held. Never removes `current`.
    """
    removed: list[Path] = []
    base = images_dir()
    if not base.is_dir():
        return removed
    for tmp in base.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    images = sorted(
        (p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    keep = {current}
    for p in images:
        if len(keep) >= KEEP_IMAGES:
            break
        keep.add(p.name)
    for p in images:
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def touch(path: Path) -> None:
    """Mark an image as recently used (pruning keeps the most recent)."""
    now = time.time()
    with contextlib.suppress(OSError):
        os.utime(path, (now, now))
