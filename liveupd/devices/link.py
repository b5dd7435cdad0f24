"""Network links up and down, through the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls.

The same as ``ip link set dev IF down``, without needing iproute2 (the
shutdown helper runs when most of userspace is gone).  Blocking: call it from
a worker thread.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from collections.abc import Callable
from typing import Any

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFNAMSIZ = 16
_IFREQ = struct.Struct(f"{IFNAMSIZ}sH22x")  # struct ifreq: name + ifr_flags, 40 bytes

Ioctl = Callable[[int, int, bytes], Any]


def _ifreq(ifname: str, flags: int = 0) -> bytes:
    name = ifname.encode()
    if not name or len(name) >= IFNAMSIZ or b"/" in name:
        raise ValueError(f"{ifname!r} is not a valid interface name")
    return _IFREQ.pack(name, flags)


def get_flags(ifname: str, *, ioctl: Ioctl = fcntl.ioctl) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        reply = ioctl(s.fileno(), SIOCGIFFLAGS, _ifreq(ifname))
    flags: int = _IFREQ.unpack(bytes(reply))[1]
    return flags


def is_up(ifname: str, *, ioctl: Ioctl = fcntl.ioctl) -> bool:
    return bool(get_flags(ifname, ioctl=ioctl) & IFF_UP)


def set_link(ifname: str, up: bool, *, ioctl: Ioctl = fcntl.ioctl) -> None:
    """Set the interface administratively up or down; OSError (ENODEV, ...) on failure."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        reply = ioctl(s.fileno(), SIOCGIFFLAGS, _ifreq(ifname))
        flags: int = _IFREQ.unpack(bytes(reply))[1]
        wanted = flags | IFF_UP if up else flags & ~IFF_UP
        if wanted != flags:
            ioctl(s.fileno(), SIOCSIFFLAGS, _ifreq(ifname, wanted))
