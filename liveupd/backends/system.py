"""Facts about the running system, read from /proc (read-only, safe anywhere)."""

from __future__ import annotations

import os
from pathlib import Path


class ProcSystem:
    def release(self) -> str:
        return os.uname().release

    def boot_id(self) -> str:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()

    def cmdline(self) -> str:
        return Path("/proc/cmdline").read_text().strip()

    def uptime(self) -> float:
        return float(Path("/proc/uptime").read_text().split()[0])
