"""The small interfaces between the engine and the machine.

Everything that touches the machine (the kexec syscalls, sysfs, freezing,
facts about the running system) sits behind one of these protocols.  The real
implementations live with their subject (``liveupd.kernel``,
``liveupd.devices``, ``liveupd.storage``); the simulated ones in
``liveupd.backends.dryrun`` record what they would have done.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
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


@dataclass(frozen=True)
class Refusal:
    """One named reason a live update is refused on this machine.

    ``reason`` is a stable name (``kexec-load-disabled``, ``tpm2-unlock``, ...:
    the table in docs/dbus-api.md); ``message`` says what is wrong and how to fix it.
    """

    reason: str
    message: str

    def text(self) -> str:
        return f"{self.reason}: {self.message}"


class KexecBackend(Protocol):
    def refusals(self) -> list[Refusal]:
        """Each reason kexec cannot work here, named, with its fix; empty when it can."""

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

    async def encrypted_volumes(self) -> VolumeScan:
        """The LUKS volumes the next boot unlocks (the root filesystem's, /etc/crypttab's),
        each with what its header says; nothing is unlocked or written.  Never blocks the
        event loop: file reads run in a worker thread, cryptsetup as a subprocess."""


class LuksKind(StrEnum):
    LUKS2 = "luks2"
    LUKS1 = "luks1"  # no tokens
    NOT_LUKS = "not-luks"  # plain dm-crypt, TrueCrypt, BitLocker, ...
    MISSING = "missing"  # the device does not exist now
    UNREADABLE = "unreadable"  # its header could not be read: ``problem`` says why


@dataclass(frozen=True)
class EncryptedVolume:
    """A volume the boot unlocks, as its LUKS header describes it."""

    device: str  # the device node inspected (/dev/vda2; a crypttab path as resolved)
    names: tuple[str, ...]  # its crypttab name(s), or the device-mapper name of the root's
    root: bool  # the root filesystem is on it
    crypttab: str  # the device as /etc/crypttab gives it ("" when it is not listed there)
    kind: LuksKind
    tokens: tuple[str, ...] = ()  # LUKS2 token types, in token-id order
    problem: str = ""  # UNREADABLE: why


@dataclass(frozen=True)
class VolumeScan:
    volumes: tuple[EncryptedVolume, ...]
    problems: tuple[str, ...] = ()  # what could not be read (/etc/crypttab, mountinfo)


# -------------------------------------------------------------- watchdog ----


@dataclass(frozen=True)
class Watchdog:
    """A hardware watchdog as /sys/class/watchdog shows it."""

    name: str  # watchdog0
    devnode: str  # /dev/watchdog0
    identity: str  # the driver's name for it ("i6300ESB timer")
    sys_path: str  # the device it belongs to (/sys/devices/pci0000:00/0000:00:08.0)
    subsystem: str  # that device's bus (pci, platform): /sys/bus/<subsystem>/drivers/<driver>
    device: str  # that device's kernel name (0000:00:08.0)
    driver: str | None  # the driver bound to it (None: unbound)
    module: str | None  # the driver's module (None: built into the kernel)
    active: bool  # the timer runs (state "active")
    nowayout: bool
    bootstatus: int  # WDIOF_* flags the driver read at probe (32: it reset the machine)
    timeout: int | None = None  # seconds, as programmed now


_WATCHDOG_NAME = re.compile(r"watchdog[0-9]+")
_MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


@dataclass(frozen=True, kw_only=True)
class WatchdogRecord:
    """The watchdog a transition arms: journaled (undo), checkpointed (the new kernel)."""

    name: str
    devnode: str
    identity: str
    sys_path: str
    subsystem: str
    device: str
    driver: str
    # None: the driver is built into the kernel.  A default, because journal lines
    # leave out None fields: without one, such a journal read back as corrupt.
    module: str | None = None
    timeout: int  # seconds asked for ([exec] watchdog-sec)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WatchdogRecord:
        """Checked field by field: TypeError/ValueError naming the field that is wrong."""
        if not isinstance(data, Mapping):
            raise TypeError("watchdog: expected an object")
        record = cls(**data)
        for name in ("name", "devnode", "identity", "sys_path", "subsystem", "device", "driver"):
            if not isinstance(getattr(record, name), str):
                raise TypeError(f"watchdog.{name}: expected a string")
        if record.module is not None and not isinstance(record.module, str):
            raise TypeError("watchdog.module: expected a string or null")
        if isinstance(record.timeout, bool) or not isinstance(record.timeout, int):
            raise TypeError("watchdog.timeout: expected an integer")
        if not 1 <= record.timeout <= 3600:
            raise ValueError("watchdog.timeout: expected 1 to 3600 seconds")
        # These name sysfs and /dev paths that are written to as root.
        if not _WATCHDOG_NAME.fullmatch(record.name):
            raise ValueError("watchdog.name: expected watchdogN (N a number)")
        if record.devnode != f"/dev/{record.name}":
            raise ValueError("watchdog.devnode: expected /dev/ and the watchdog's name")
        for name in ("subsystem", "driver", "device"):
            value = getattr(record, name)
            if not value or "/" in value or ".." in value or "\0" in value:
                raise ValueError(f"watchdog.{name}: expected a name without '/' or '..'")
        if record.module is not None and not _MODULE_NAME.fullmatch(record.module):
            raise ValueError("watchdog.module: expected letters, digits, '_' and '-', not first")
        return record


class WatchdogBusy(OSError):
    """Another process holds the watchdog open (systemd's RuntimeWatchdogSec=, usually)."""


class WatchdogBackend(Protocol):
    """The hardware watchdog: armed before the jump, taken over and released after it.

    On the old kernel ``arm`` leaves the timer running where nothing can stop it
    (open, timeout, nowayout, the device unbound from its driver); ``disarm``
    stops it again when the jump did not happen.  On the new kernel ``take_over``
    loads the driver (which the new kernel's command line kept from loading),
    opens the device and programs it; ``feed`` pings it; ``release`` closes it,
    with the magic character (stopped) or without (left running for PID 1).
    """

    def watchdogs(self) -> list[Watchdog]:
        """Every watchdog the kernel has registered (no driver, no entry)."""

    def arm(self, record: WatchdogRecord) -> int:
        """Arm it for the jump; the timeout it runs with.  WatchdogBusy if held."""

    def disarm(self, record: WatchdogRecord) -> None:
        """Stop it, whatever ``arm`` got to (idempotent)."""

    def load(self, record: WatchdogRecord) -> Watchdog:
        """The registered watchdog of ``record``'s device, its driver loaded first if it is
        not (the new kernel's command line kept udev from loading it).  OSError if none."""

    def take_over(self, record: WatchdogRecord, timeout: int) -> int:
        """``load``, then open and program it; the timeout set.  WatchdogBusy if held."""

    def feed(self) -> None: ...

    def release(self, *, keep_running: bool, timeout: int = 0) -> None:
        """Close what ``take_over`` opened: with the magic character (it stops), or
        (``keep_running``) without, after setting ``timeout`` seconds if given."""

    def manager_watchdog(self) -> tuple[float, str]:
        """PID 1's RuntimeWatchdogSec= in seconds (0: off) and its WatchdogDevice= ("")."""

    def module_index(self, release: str) -> tuple[str, str]:
        """Kernel ``release``'s modules.dep and modules.builtin (``""``: the file is missing);
        OSError (or safeopen.UnsafeFile) when neither can be read."""


# ----------------------------------------------------------------- kdump ----


class KdumpBackend(Protocol):
    """The crash kernel (kdump): never unloaded by liveupd, loaded again after a jump.

    A kexec replaces the kernel, and its crash kernel with it; the old kernel's
    unload (``KexecBackend.unload``) only ever unloads the normal image.
    """

    def crash_loaded(self) -> bool | None:
        """/sys/kernel/kexec_crash_loaded (None: this kernel has no crash kexec)."""

    def crash_size(self) -> int | None:
        """/sys/kernel/kexec_crash_size: bytes reserved by crashkernel= (None: unknown)."""

    def loader(self) -> str | None:
        """The distribution's crash kernel loader (kdump-tools' kdump-config), or None."""

    def load(self, timeout: float) -> str:
        """Run the loader (``kdump-config load``) within ``timeout`` seconds: "" when it
        succeeded, else what went wrong (its exit status and last output line, a timeout)."""


# ---------------------------------------------------------------- system ----


class SystemBackend(Protocol):
    """Facts about the running system (read-only)."""

    def release(self) -> str: ...

    def boot_id(self) -> str: ...

    def cmdline(self) -> str: ...

    def uptime(self) -> float: ...

    def dmi(self) -> Dmi:
        """/sys/class/dmi/id's sys_vendor and product_name ("" where there are none)."""


@dataclass(frozen=True)
class Dmi:
    vendor: str
    product: str


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
    """Login sessions (logind), and the units that accept new ones (systemd).  Async:
    the real one talks D-Bus to logind, and to systemd for the units."""

    async def sessions(self) -> list[Session]:
        """Every session logind knows, in its order; OSError when logind cannot tell."""

    async def session_of(self, pid: int) -> str | None:
        """The id of the session process ``pid`` belongs to; None when it is in none."""

    async def terminate(self, session_id: str) -> None:
        """Ask logind to end the session (stop its scope); OSError on failure."""

    async def gone(self, session_id: str) -> bool:
        """Whether the session no longer exists (its scope stopped and was collected)."""

    async def active_units(self, units: Sequence[str]) -> list[str]:
        """Those of ``units`` systemd has active (listeners listening), in their order;
        OSError when it cannot tell."""

    async def stop_unit(self, unit: str) -> None:
        """Stop the unit and wait for its stop job to finish; OSError on failure."""

    async def start_unit(self, unit: str) -> None:
        """Start the unit and wait for its start job to finish; OSError on failure."""


# -------------------------------------------------------------- services ----


@dataclass(frozen=True)
class ServiceTask:
    """One process of a service's cgroup, as CRIU's preflight needs it."""

    pid: int
    ppid: int
    devices: tuple[str, ...] = ()  # character/block device files it holds open
    anon_bytes: int = 0  # smaps_rollup "Anonymous:" (what the images hold)
    own_mount_ns: bool = False  # its mount namespace is not PID 1's


@dataclass(frozen=True)
class ServiceTree:
    """A running service unit: its main process and every process of its cgroup."""

    unit: str
    active: str  # systemd's ActiveState
    main_pid: int  # 0: none
    tasks: tuple[ServiceTask, ...] = ()
    stdio_sockets: tuple[int, ...] = ()  # inodes of the sockets on the main PID's fds 1, 2


@dataclass(frozen=True)
class UnitStatus:
    active: str  # ActiveState
    main_pid: int
    result: str  # Result (success, exit-code, protocol, ...)
    start_usec: int = 0  # InactiveExitTimestampMonotonic
    ready_usec: int = 0  # ActiveEnterTimestampMonotonic


@dataclass(frozen=True)
class ProgramRun:
    rc: int
    output: str  # its last lines


class ServiceBackend(Protocol):
    """Service units (systemd) and programs run outside liveupd's sandbox (CRIU)."""

    async def inspect(self, unit: str) -> ServiceTree:
        """The unit's processes; OSError when systemd cannot tell."""

    async def run_outside(self, name: str, argv: list[str], timeout: float) -> ProgramRun:
        """Run ``argv`` as a transient unit ``name`` (systemd-run) and wait for it."""

    async def resume(self, unit: str) -> None:
        """SIGCONT every process of the unit (sent by systemd); OSError on failure."""

    async def start(self, unit: str, timeout: float) -> UnitStatus:
        """Start the unit (or wait for the start under way); its status after."""

    async def reload(self) -> None:
        """systemctl daemon-reload: generators run again."""

    async def start_fresh(self, unit: str, timeout: float) -> UnitStatus:
        """Reload, reset its failed state, start it again; its status after."""

    def free_bytes(self, path: str) -> int:
        """Bytes free for root on the filesystem holding ``path``."""


class NoServices:
    """A machine without service units (the dry run): nothing can be preserved."""

    async def inspect(self, unit: str) -> ServiceTree:
        raise OSError(errno.ENOENT, f"the simulated machine runs no service units ({unit})")

    async def run_outside(self, name: str, argv: list[str], timeout: float) -> ProgramRun:
        raise OSError(errno.ENOSYS, f"the simulated machine runs no programs ({name})")

    async def resume(self, unit: str) -> None:
        raise OSError(errno.ENOENT, f"the simulated machine runs no service units ({unit})")

    async def start(self, unit: str, timeout: float) -> UnitStatus:
        raise OSError(errno.ENOENT, f"the simulated machine runs no service units ({unit})")

    async def reload(self) -> None:
        return None

    async def start_fresh(self, unit: str, timeout: float) -> UnitStatus:
        raise OSError(errno.ENOENT, f"the simulated machine runs no service units ({unit})")

    def free_bytes(self, path: str) -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize


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
    watchdog: WatchdogBackend
    kdump: KdumpBackend
    files: FileBackend = field(default_factory=DurableFiles)
    faults: FaultPoints = field(default_factory=NoFaults)
    # The services [preserve] lists (CRIU); the dry run's machine has none.
    services: ServiceBackend = field(default_factory=NoServices)
    # The dry-run machine only: boot the loaded kernel after the simulated jump,
    # for the daemon's rehearsal of the new boot's verification (manager.py).
    simulated_boot: Callable[[], None] | None = None
