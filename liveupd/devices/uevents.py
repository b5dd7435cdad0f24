"""Waiting for device events (udev or the kernel's uevents) with a deadline.

A monitor is opened *before* the sysfs write, so the event cannot be missed.
With udevd running the monitor listens to udev (the event arrives once udev
has processed it, and udev holds a parent's event until its children's are
done, so a ``bind`` means the interfaces below are named and ready); without
udevd (early boot, late shutdown) it listens to the kernel directly.

The wait blocks: callers run it in a worker thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

UDEV_CONTROL = Path("/run/udev/control")  # udevd's control socket: udevd is running
UDEV_QUEUE = Path("/run/udev/queue")  # exists while udev has events queued
POLL_SLICE = 0.25  # seconds: how often a condition is re-checked while waiting


@dataclass(frozen=True)
class Uevent:
    action: str  # add, remove, bind, unbind, change, move
    sys_path: str
    subsystem: str = ""


class UeventStream(Protocol):
    def next(self, timeout: float) -> Uevent | None:
        """The next event, or None if none came within ``timeout`` seconds."""


class UeventSource(Protocol):
    name: str

    def open(self) -> contextlib.AbstractContextManager[UeventStream]:
        """Start listening (before the write whose event is awaited)."""


class WaitOutcome(StrEnum):
    EVENT = "event"  # the event came and the condition holds
    STATE = "state"  # the condition holds but the event was not seen before the deadline
    TIMEOUT = "timeout"  # the condition does not hold at the deadline


def wait_for(
    stream: UeventStream,
    match: Callable[[Uevent], bool],
    condition: Callable[[], bool],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> WaitOutcome:
    """Wait until an event that ``match``es has been seen and ``condition()`` holds."""
    deadline = clock() + timeout
    seen = False
    while True:
        if seen and condition():
            return WaitOutcome.EVENT
        remaining = deadline - clock()
        if remaining <= 0:
            return WaitOutcome.STATE if condition() else WaitOutcome.TIMEOUT
        event = stream.next(min(remaining, POLL_SLICE))
        if event is not None and match(event):
            seen = True


def udevd_running() -> bool:
    return UDEV_CONTROL.exists()


class _PyudevStream:
    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor

    def next(self, timeout: float) -> Uevent | None:
        device = self.monitor.poll(timeout=timeout)
        if device is None:
            return None
        return Uevent(str(device.action), str(device.sys_path), str(device.subsystem or ""))


class PyudevSource:
    """Events from a netlink monitor: ``udev`` when udevd runs, else ``kernel``."""

    def __init__(self, source: str | None = None) -> None:
        self.source = source
        self.name = source or "udev"

    @contextlib.contextmanager
    def open(self) -> Iterator[UeventStream]:
        import pyudev

        source = self.source or ("udev" if udevd_running() else "kernel")
        self.name = source
        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=source)
        with contextlib.suppress(OSError):
            monitor.set_receive_buffer_size(4 * 1024 * 1024)
        monitor.start()
        stream = _PyudevStream(monitor)
        del monitor
        try:
            yield stream
        finally:
            # pyudev has no close(): dropping the last reference unrefs the libudev
            # monitor, which closes its socket.
            stream.monitor = None


def settle_udev(timeout: float, *, clock: Callable[[], float] = time.monotonic) -> bool:
    """Wait for udev's queue to empty; True when it did (or udevd is not running)."""
    if not udevd_running():
        return True
    udevadm = shutil.which("udevadm")
    if udevadm is not None:
        try:
            proc = subprocess.run(
                [udevadm, "settle", f"--timeout={max(int(timeout), 1)}"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout + 10,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0
    deadline = clock() + timeout
    while UDEV_QUEUE.exists():
        if clock() >= deadline:
            return False
        time.sleep(POLL_SLICE)
    return True
