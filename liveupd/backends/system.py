"""Facts about the running system, read from /proc (read-only, safe anywhere)."""

from __future__ import annotations

import os
from pathlib import Path

from liveupd.backends.base import Dmi

DMI = Path("/sys/class/dmi/id")


def _dmi(name: str) -> str:
    try:
        return (DMI / name).read_text(errors="replace")[:256].strip()
    except OSError:
        return ""


class ProcSystem:
    def release(self) -> str:
        return os.uname().release

    def boot_id(self) -> str:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()

    def cmdline(self) -> str:
        return Path("/proc/cmdline").read_text().strip()

    def uptime(self) -> float:
        return float(Path("/proc/uptime").read_text().split()[0])

    def dmi(self) -> Dmi:
        return Dmi(vendor=_dmi("sys_vendor"), product=_dmi("product_name"))
