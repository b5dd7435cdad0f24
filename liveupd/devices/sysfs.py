"""Sysfs: the one class that reads and writes it.

Everything under ``/sys`` goes through :class:`Sysfs`, which takes the root
the tree hangs from: ``/`` on a machine, a temporary directory in tests
(pyudev and libudev always read the real ``/sys``, so the writes that matter
are kept here, where a test can point them elsewhere).

Paths are given as the kernel spells them (``/sys/devices/...``), which is
also what pyudev reports as ``sys_path``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from liveupd import logs
from liveupd.backends.base import Binding
from liveupd.devices import link

LOG = logs.get("devices")
NO_OVERRIDE = "(null)"  # what driver_override reads as when it is not set


@dataclass(frozen=True)
class NetEntry:
    """A network interface as /sys/class/net shows it."""

    ifname: str
    sys_path: str  # /sys/devices/.../net/<ifname>
    mac: str
    up: bool


class Sysfs:
    """Reads and single writes under ``<root>/sys``."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def path(self, sys_path: str) -> Path:
        if not sys_path.startswith("/sys/") and sys_path != "/sys":
            raise ValueError(f"expected a path under /sys, got {sys_path!r}")
        return self.root / sys_path.lstrip("/")

    def to_sys_path(self, real: Path) -> str:
        """The /sys/... spelling of a real path under the root."""
        return "/" + str(real.relative_to(self.root))

    def read(self, sys_path: str, attr: str) -> str | None:
        """An attribute's text without the trailing newline; None when unreadable."""
        try:
            return self.path(sys_path).joinpath(attr).read_text().rstrip("\n")
        except (OSError, UnicodeDecodeError):
            return None

    def write(self, sys_path: str, value: str) -> None:
        """One write(2) of ``value`` to the attribute file; OSError (errno kept) on failure."""
        fd = os.open(self.path(sys_path), os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def exists(self, sys_path: str) -> bool:
        return self.path(sys_path).exists()

    def device_numbers_below(self, sys_path: str) -> set[tuple[bool, int]]:
        """(is a block device, dev_t) of the device and of every device below it.

        Read from the ``dev`` files of the subtree (symlinks are not followed,
        so only real children count); a ``subsystem`` link to ``block`` makes
        it a block device, anything else a character device.
        """
        keys = set()
        for dirpath, _, filenames in os.walk(self.path(sys_path)):
            if "dev" not in filenames:
                continue
            directory = Path(dirpath)
            try:
                major, minor = (directory / "dev").read_text().strip().split(":")
                is_block = (directory / "subsystem").readlink().name == "block"
                keys.add((is_block, os.makedev(int(major), int(minor))))
            except (OSError, ValueError):
                continue  # gone meanwhile, or not a device number
        return keys

    def resolve(self, sys_path: str) -> str | None:
        """The canonical /sys/devices/... path a (symlinked) path points at."""
        real = self.path(sys_path).resolve()
        try:
            return self.to_sys_path(real) if real.exists() else None
        except ValueError:  # points outside the root
            return None

    def listdir(self, sys_path: str) -> list[str]:
        try:
            return sorted(p.name for p in self.path(sys_path).iterdir())
        except OSError:
            return []

    def driver(self, sys_path: str) -> str | None:
        """The driver the device is bound to, from its ``driver`` link."""
        try:
            return (self.path(sys_path) / "driver").readlink().name
        except OSError:
            return None

    def driver_override(self, sys_path: str) -> str | None:
        value = self.read(sys_path, "driver_override")
        return None if value in (None, "", NO_OVERRIDE) else value

    def net_interfaces(self) -> list[NetEntry]:
        """Every interface in /sys/class/net that belongs to a device (not lo, not virtual)."""
        out = []
        for ifname in self.listdir("/sys/class/net"):
            path = self.resolve(f"/sys/class/net/{ifname}")
            if path is None or path.startswith("/sys/devices/virtual/"):
                continue
            flags = self.read(path, "flags") or "0"
            try:
                up = bool(int(flags, 16) & link.IFF_UP)
            except ValueError:
                up = False
            out.append(NetEntry(ifname, path, self.read(path, "address") or "", up))
        return out

    # -------------------------------------------------------------- writes --

    def unbind(self, binding: Binding) -> None:
        self.write(f"/sys/bus/{binding.subsystem}/drivers/{binding.driver}/unbind", binding.name)

    def bind(self, binding: Binding) -> None:
        self.write(f"/sys/bus/{binding.subsystem}/drivers/{binding.driver}/bind", binding.name)

    def set_driver_override(self, sys_path: str, value: str | None) -> None:
        # An empty line clears it (a plain "" write is refused on older kernels).
        self.write(f"{sys_path}/driver_override", value if value else "\n")
