"""The real device backend: pyudev to enumerate, sysfs to (un)bind, netlink to wait.

It sits above the modules it puts together (:mod:`~liveupd.devices.sysfs`,
:mod:`~liveupd.devices.enumerate`, :mod:`~liveupd.devices.root`,
:mod:`~liveupd.devices.select`), so that each of those imports only downwards.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from pathlib import Path

from liveupd import logs
from liveupd.backends.base import Binding, Device
from liveupd.devices import link
from liveupd.devices.enumerate import udev_devices
from liveupd.devices.root import running_root_devices
from liveupd.devices.select import restrict
from liveupd.devices.sysfs import NetEntry, Sysfs
from liveupd.devices.uevents import (
    PyudevSource,
    Uevent,
    UeventSource,
    WaitOutcome,
    settle_udev,
    wait_for,
)

LOG = logs.get("devices")


def _under(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


class SysfsDevices:
    """The real device backend.

    ``unbind``/``bind``/``set_link``/``settle`` block: the steps call them in a
    worker thread.
    """

    def __init__(
        self,
        sysfs: Sysfs | None = None,
        *,
        uevents: UeventSource | None = None,
        enumerate_devices: Callable[[], list[Device]] | None = None,
        root_devices: Callable[[], set[str]] | None = None,
        set_link: Callable[[str, bool], None] = link.set_link,
        proc: Path = Path("/proc"),
    ) -> None:
        self.sysfs = sysfs or Sysfs()
        self.uevents = uevents or PyudevSource()
        self._enumerate = enumerate_devices
        self._root_devices = root_devices
        self._set_link = set_link
        self.proc = proc

    # --------------------------------------------------------------- reads --

    def devices(self, subsystems: frozenset[str] | None = None) -> list[Device]:
        if self._enumerate is not None:
            return restrict(self._enumerate(), subsystems)
        return udev_devices(self.sysfs, subsystems)

    def root_devices(self) -> set[str]:
        if self._root_devices is not None:
            return self._root_devices()
        return running_root_devices(self.sysfs)

    def holders(self, sys_path: str) -> list[str]:
        from liveupd.devices import holders as holders_mod  # psutil: only the unbind needs it

        return holders_mod.holders_of(self.sysfs.device_numbers_below(sys_path), proc=self.proc)

    def bound_driver(self, sys_path: str) -> str | None:
        return self.sysfs.driver(sys_path)

    def interfaces_under(self, sys_path: str) -> list[NetEntry]:
        return [n for n in self.sysfs.net_interfaces() if _under(n.sys_path, sys_path)]

    # -------------------------------------------------------------- writes --

    def set_link(self, ifname: str, up: bool) -> None:
        self._set_link(ifname, up)

    def unbind(self, binding: Binding, timeout: float) -> None:
        """Write the device to its driver's ``unbind`` file; wait for the unbind event."""
        current = self.sysfs.driver(binding.sys_path)
        if current != binding.driver:
            raise OSError(
                errno.ENODEV,
                f"{binding.sys_path} is bound to {current or 'no driver'}, not {binding.driver}",
            )

        def seen(ev: Uevent) -> bool:
            return ev.sys_path == binding.sys_path and ev.action in ("unbind", "remove")

        with self.uevents.open() as stream:
            self.sysfs.unbind(binding)
            outcome = wait_for(
                stream,
                seen,
                lambda: self.sysfs.driver(binding.sys_path) != binding.driver,
                timeout,
            )
        self._check_outcome(outcome, binding, "unbind", f"still bound to {binding.driver}")

    def bind(self, binding: Binding, timeout: float) -> None:
        """Bind the device to its recorded driver (override restored); wait for it to appear."""
        if self.sysfs.driver(binding.sys_path) == binding.driver:
            return
        if self.sysfs.exists(f"{binding.sys_path}/driver_override") and (
            self.sysfs.driver_override(binding.sys_path) != binding.driver_override
        ):
            self.sysfs.set_driver_override(binding.sys_path, binding.driver_override)
        macs = {n.mac for n in binding.net}

        def seen(ev: Uevent) -> bool:
            return ev.sys_path == binding.sys_path and ev.action in ("bind", "add")

        def back() -> bool:
            if self.sysfs.driver(binding.sys_path) != binding.driver:
                return False
            present = {n.mac for n in self.interfaces_under(binding.sys_path)}
            return macs <= present

        with self.uevents.open() as stream:
            self.sysfs.bind(binding)
            outcome = wait_for(stream, seen, back, timeout)
        self._check_outcome(
            outcome, binding, "bind", f"not bound to {binding.driver} with its interfaces"
        )

    def _check_outcome(
        self, outcome: WaitOutcome, binding: Binding, action: str, state: str
    ) -> None:
        if outcome is WaitOutcome.TIMEOUT:
            raise OSError(
                errno.ETIMEDOUT,
                f"{binding.sys_path} is {state} after the {action} "
                f"(no {action} event from {self.uevents.name} before the deadline)",
            )
        if outcome is WaitOutcome.STATE:
            logs.event(
                LOG,
                "devices.event-missed",
                level=logging.WARNING,
                sys_path=binding.sys_path,
                action=action,
                source=self.uevents.name,
            )

    def settle(self, timeout: float) -> bool:
        return settle_udev(timeout)
