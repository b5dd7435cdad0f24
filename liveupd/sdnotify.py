"""sd_notify(3) without python-systemd: readiness, status and watchdog pings.

systemd hands a service the address of a datagram socket in ``$NOTIFY_SOCKET``
(a leading ``@`` means an abstract socket); each datagram is newline-separated
``KEY=VALUE`` assignments.  Outside systemd the variable is unset and every
function here does nothing, so the daemon runs the same way under tests.
"""

from __future__ import annotations

import asyncio
import os
import socket

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def _address() -> str | None:
    addr = os.environ.get(NOTIFY_SOCKET)
    if not addr:
        return None
    if addr.startswith("@"):
        return "\0" + addr[1:]
    if addr.startswith("/"):
        return addr
    return None  # vsock and other transports: not used by liveupd


def notify(*assignments: str) -> bool:
    """Send ``KEY=VALUE`` assignments; False when there is no notification socket."""
    addr = _address()
    if addr is None:
        return False
    payload = "\n".join(a.replace("\n", " ") for a in assignments).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(payload, addr)
        except OSError:
            return False  # a vanished manager must never take the daemon down
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def stopping(text: str) -> bool:
    return notify("STOPPING=1", f"STATUS={text}")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


async def watchdog() -> None:
    """Ping the watchdog from the event loop until cancelled.

    The pings come from the loop itself, so a loop blocked by a stray synchronous
    call stops them and systemd notices.
    """
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
