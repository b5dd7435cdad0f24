"""The real backends: they touch the machine.  Never used by host tests."""

from __future__ import annotations

from liveupd.backends.base import Backends
from liveupd.backends.system import ProcSystem
from liveupd.config import Config


def make(config: Config) -> Backends:
    from liveupd.devices.machine import SysfsDevices
    from liveupd.devices.watchdog_dev import RealWatchdog
    from liveupd.kernel.kdump import SysKdump
    from liveupd.kernel.loader import RealKexec
    from liveupd.preserve.systemd import SystemdServices
    from liveupd.sessions.logind import LogindSessions
    from liveupd.storage.freeze import RealStorage

    return Backends(
        kexec=RealKexec(config),
        devices=SysfsDevices(),
        storage=RealStorage(),
        system=ProcSystem(),
        sessions=LogindSessions(),
        dry_run=False,
        watchdog=RealWatchdog(),
        kdump=SysKdump(),
        services=SystemdServices(),
    )
