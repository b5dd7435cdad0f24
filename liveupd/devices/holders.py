"""Which processes hold a device's nodes open (so the unbind can name them).

psutil lists the processes; their descriptors are read from /proc/PID/fd and
compared by device number (a node can have many names: /dev/vda,
/dev/disk/by-id/..., a bind-mounted copy in a container).  Blocking: call it
from a worker thread.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path

import psutil

DevKey = tuple[bool, int]  # (is a block device, st_rdev)


def device_keys(devnodes: Iterable[str]) -> set[DevKey]:
    keys = set()
    for node in devnodes:
        try:
            st = Path(node).stat()
        except OSError:
            continue
        if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
            keys.add((stat.S_ISBLK(st.st_mode), st.st_rdev))
    return keys


def _holds(fd_dir: Path, keys: set[DevKey]) -> bool:
    try:
        fds = list(fd_dir.iterdir())
    except OSError:  # gone, or a kernel thread, or not ours to read
        return False
    for fd in fds:
        try:
            st = fd.stat()
        except OSError:
            continue
        is_blk = stat.S_ISBLK(st.st_mode)
        if (is_blk or stat.S_ISCHR(st.st_mode)) and (is_blk, st.st_rdev) in keys:
            return True
    return False


def holders(devnodes: Iterable[str], *, proc: Path = Path("/proc")) -> list[str]:
    """``'name (pid N)'`` for each process with one of ``devnodes`` open, by pid."""
    return holders_of(device_keys(devnodes), proc=proc)


def holders_of(keys: set[DevKey], *, proc: Path = Path("/proc")) -> list[str]:
    """``'name (pid N)'`` for each process with one of the device numbers open, by pid."""
    if not keys:
        return []
    found = []
    for p in psutil.process_iter(["pid", "name"]):
        pid = int(p.info["pid"])
        if _holds(proc / str(pid) / "fd", keys):
            found.append((pid, f"{p.info['name'] or '?'} (pid {pid})"))
    return [text for _, text in sorted(found)]
