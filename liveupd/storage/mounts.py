"""The mount table, parsed from /proc/self/mountinfo (see proc(5)).

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2)(3)   (4)   (5)      (6)       (7)   (8) (9)   (10)         (11)

Parsing is pure; whether a source with an anonymous device number (btrfs,
major 0) is a block device is asked through ``is_block``.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from pathlib import Path

from liveupd.backends.base import Mount

MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """Undo the kernel's octal escapes (``\\040`` for a space, ...)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def is_block_device(path: str) -> bool:
    if not path.startswith("/dev/"):
        return False
    try:
        return stat.S_ISBLK(Path(path).stat().st_mode)
    except OSError:
        return False


def parse_line(line: str, is_block: Callable[[str], bool] = is_block_device) -> Mount:
    fields = line.split()
    try:
        sep = fields.index("-", 6)
        device = fields[2]
        mountpoint = unescape(fields[4])
        fstype = fields[sep + 1]
        source = unescape(fields[sep + 2])
        super_options = fields[sep + 3].split(",") if len(fields) > sep + 3 else []
        major = int(device.split(":", 1)[0])
    except (ValueError, IndexError):
        raise ValueError(f"not a mountinfo line: {line!r}") from None
    # Whether the filesystem (the superblock) is writable: a read-only mount of a
    # read-write filesystem, such as the view systemd's ProtectSystem=strict gives
    # the daemon, still has writers elsewhere and must be synced and frozen.
    writable = "ro" not in super_options
    return Mount(
        mountpoint=mountpoint,
        fstype=fstype,
        source=source,
        writable=writable,
        block_backed=major != 0 or is_block(source),
        device=device,
    )


def parse_mountinfo(text: str, is_block: Callable[[str], bool] = is_block_device) -> list[Mount]:
    """Every mount, in the table's order (a later mount on a path hides earlier ones)."""
    return [parse_line(line, is_block) for line in text.splitlines() if line.strip()]


def read_mounts(path: Path = MOUNTINFO) -> list[Mount]:
    return parse_mountinfo(path.read_text())
