"""Durable file writes: temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file.

    The data reaches the disk before the rename, and the rename before we return.
    With ``durable=False`` nothing is fsync'd: the file survives a crash of the
    process (the page cache has it) but not of the machine.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    os.close(fd)
    tmp.replace(path)
    if durable:
        fsync_dir(path.parent)


def atomic_write_json(
    path: Path, value: Any, *, mode: int = 0o644, compact: bool = False, durable: bool = True
) -> None:
    text = json.dumps(value, separators=(",", ":")) if compact else json.dumps(value, indent=1)
    atomic_write(path, (text + "\n").encode(), mode=mode, durable=durable)


def read_json(path: Path) -> Any:
    with path.open("rb") as f:
        return json.load(f)


def remove_durably(path: Path) -> None:
    """Remove ``path`` (if present) and make the removal durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
