"""Where the harness keeps built images and downloads: outside the repository.

${LIVEUPD_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/liveupd-vm}/
    build.lock               flock: one builder at a time
    downloads/apt/           the private apt lists and state (trixie's, not the host's)
    downloads/apt/liveupd.lock  flock: one apt command on them at a time
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
import threading
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


_HELD = threading.local()  # the lock files this thread holds (file_lock is re-entrant)


@contextlib.contextmanager
def file_lock(
    path: Path, waiting: str | None = None, log: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (made if missing), waiting for other
    processes (xdist workers, other checkouts) that hold it; says ``waiting`` through
    ``log`` first if it has to wait. Re-entrant within a thread."""
    held: set[Path] = _HELD.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None and waiting is not None:
                log(waiting)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def build_lock(log: Callable[[str], None] | None = None) -> contextlib.AbstractContextManager[None]:
    """Hold the cache's build lock (blocks while another builder holds it)."""
    root = cache_root()
    waiting = f"another process is building an image in {root}: waiting for it"
    return file_lock(root / "build.lock", waiting, log)


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
