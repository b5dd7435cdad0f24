"""The small interfaces between the engine and the machine.

Everything that touches the machine (the kexec syscalls, sysfs, freezing,
facts about the running system) sits behind one of these protocols.  The real
implementations live with their subject (``liveupd.kernel``,
``liveupd.devices``, ``liveupd.storage``); the simulated ones in
``liveupd.backends.dryrun`` record what they would have done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from liveupd.backends.files import DurableFiles
from liveupd.transition.phases import ExecMode

# ---------------------------------------------------------------- kernel ----


@dataclass(frozen=True)
class OpenedKernel:
    """A kernel (and initrd) validated through open descriptors, ready to load.

    The descriptors are the ones that were checked; the loader hands exactly
    these to kexec_file_load, so a file swapped after the check is never loaded.
    """

    release: str
    kernel_path: str
    initrd_path: str | None
    kernel_fd: int
    initrd_fd: int | None
    sha256: str


class KexecBackend(Protocol):
    def preflight(self) -> list[str]:
        """Each reason kexec cannot work here, with its fix; empty when it can."""

    def load(self, kernel: OpenedKernel, cmdline: str) -> None:
        """Load the kernel for a later jump (kexec_file_load)."""

    def unload(self) -> None:
        """Unload whatever is loaded; no error when nothing is."""

    def is_loaded(self) -> bool: ...

    def jump(self, mode: ExecMode) -> None:
        """Jump into the loaded kernel: the point of no return.

        ``direct``: reboot(LINUX_REBOOT_CMD_KEXEC), which does not return on
        success.  ``systemd``: start kexec.target (systemd finishes the job).
        Returns only in dry-run or for ``systemd`` mode; raises on failure.
        """


# --------------------------------------------------------------- devices ----


@dataclass(frozen=True)
class NetInterface:
    ifname: str
    mac: str
    up: bool


@dataclass(frozen=True)
class Device:
    """One device as enumerated from sysfs/udev."""

    sys_path: str
    subsystem: str
    name: str  # the kernel name (sys_name): what a driver's bind/unbind files take
    driver: str | None
    parent: str | None = None  # sys_path of the parent device
    driver_override: str | None = None
    pci_class: str | None = None  # e.g. "0x020000"
    properties: Mapping[str, str] = field(default_factory=dict)
    devnodes: tuple[str, ...] = ()
    net: NetInterface | None = None


@dataclass(frozen=True)
class Binding:
    """A device bound to a driver, recorded before unbind so it can be restored."""

    sys_path: str
    subsystem: str  # the bus: /sys/bus/<subsystem>/drivers/<driver>
    name: str
    driver: str
    driver_override: str | None = None
    net: tuple[NetInterface, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Binding:
        net = tuple(NetInterface(**n) for n in data.get("net", ()))
        return cls(
            sys_path=data["sys_path"],
            subsystem=data["subsystem"],
            name=data["name"],
            driver=data["driver"],
            driver_override=data.get("driver_override"),
            net=net,
        )


class DeviceBackend(Protocol):
    def devices(self, subsystems: frozenset[str] | None = None) -> list[Device]:
        """Every device in the tree (bound or not), parents before children.

        With ``subsystems``, only the devices of those subsystems and their
        ancestors (enumerating every device is slow).
        """

    def root_devices(self) -> set[str]:
        """sys_paths of the devices that hold the root filesystem (and their parents)."""

    def holders(self, sys_path: str) -> list[str]:
        """Processes holding open a node of the device or of any device below it,
        as ``'name (pid N)'``."""

    def set_link(self, ifname: str, up: bool) -> None: ...

    def unbind(self, binding: Binding, timeout: float) -> None:
        """Unbind and wait for the removal to be seen, within ``timeout``."""

    def bind(self, binding: Binding, timeout: float) -> None:
        """Bind to the recorded driver and wait for the device to appear."""

    def bound_driver(self, sys_path: str) -> str | None: ...

    def settle(self, timeout: float) -> bool:
        """Wait until udev has processed every queued event; False if ``timeout`` passed."""


# --------------------------------------------------------------- storage ----


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    fstype: str
    source: str
    writable: bool
    block_backed: bool  # the filesystem lives on a block device (major != 0)
    device: str = ""  # "major:minor"


class StorageBackend(Protocol):
    def mounts(self) -> list[Mount]: ...

    def sync(self) -> None: ...

    def syncfs(self, mountpoint: str) -> None: ...

    def freeze(self, mountpoint: str) -> None:
        """FIFREEZE; raises OSError (errno kept) when the filesystem cannot be frozen."""

    def thaw(self, mountpoint: str) -> None:
        """FITHAW; no error when the filesystem is not frozen."""


# ---------------------------------------------------------------- system ----


class SystemBackend(Protocol):
    """Facts about the running system (read-only)."""

    def release(self) -> str: ...

    def boot_id(self) -> str: ...

    def cmdline(self) -> str: ...

    def uptime(self) -> float: ...


# -------------------------------------------------------------- sessions ----


@dataclass(frozen=True)
class Session:
    """One login session as logind knows it (org.freedesktop.login1.Session)."""

    id: str
    uid: int
    user: str
    remote: bool  # logind's Remote: PAM_RHOST was set and is not this machine
    service: str  # the PAM service (``sshd`` for SSH logins)
    leader: int  # the session leader's PID (0: unknown)
    state: str  # online, active or closing
    remote_host: str = ""
    scope: str = ""  # the session's scope unit (session-N.scope)


class SessionBackend(Protocol):
    """Login sessions (logind).  Async: the real one talks D-Bus."""

    async def sessions(self) -> list[Session]:
        """Every session logind knows, in its order; OSError when logind cannot tell."""

    async def session_of(self, pid: int) -> str | None:
        """The id of the session process ``pid`` belongs to; None when it is in none."""

    async def terminate(self, session_id: str) -> None:
        """Ask logind to end the session (stop its scope); OSError on failure."""

    async def gone(self, session_id: str) -> bool:
        """Whether the session no longer exists (its scope stopped and was collected)."""


# ----------------------------------------------------------------- files ----


class FileBackend(Protocol):
    """How the journal reaches the disk (the dry-run machine can make it fail)."""

    def append(self, path: Path, data: bytes, *, durable: bool) -> None:
        """Append ``data`` to an existing file; with ``durable``, fsync it before returning."""

    def replace(self, path: Path, data: bytes, *, durable: bool) -> None:
        """Atomically replace (or create) ``path`` with ``data`` (mode 0600)."""


# ---------------------------------------------------------------- faults ----


class FaultPoints(Protocol):
    """Where the dry-run machine injects failures into work that is not a machine call.

    ``check(op)`` is called just before such an operation (``hook-spawn``: a hook
    program is about to be started).  The real machine injects nothing; the
    dry-run machine raises the OSError its fault plan gives for this call.
    """

    def check(self, op: str) -> None: ...


class NoFaults:
    """The real machine: nothing is injected."""

    def check(self, op: str) -> None:
        del op


@dataclass(frozen=True)
class Backends:
    kexec: KexecBackend
    devices: DeviceBackend
    storage: StorageBackend
    system: SystemBackend
    sessions: SessionBackend
    dry_run: bool
    files: FileBackend = field(default_factory=DurableFiles)
    faults: FaultPoints = field(default_factory=NoFaults)
    # The dry-run machine only: boot the loaded kernel after the simulated jump,
    # for the daemon's rehearsal of the new boot's verification (manager.py).
    simulated_boot: Callable[[], None] | None = None
