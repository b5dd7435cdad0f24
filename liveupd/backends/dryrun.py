"""Dry-run backends: a simulated machine that records what would have been done.

Nothing here touches the real machine: no syscall, no sysfs write, no ioctl.
The simulated machine (its devices, mounts and system facts) comes from a JSON
file (``LIVEUPD_DRY_RUN_MACHINE`` or ``machine_file``) or, without one, is a
small built-in virtual machine.  Its mutable state (what is loaded, unbound,
frozen) is kept in ``<state-dir>/dry-run/`` so that a restarted daemon (crash
recovery) sees what the previous one did, and every operation is appended to
``calls.jsonl`` there for tests to read.

The description's ``"sessions"`` lists the simulated machine's login sessions
(``Session``'s fields, as logind would report them) and ``"caller_session"``
names the session any caller is in (the simulation cannot map a real PID):
ending one is recorded (``terminate_session``) and lasts until the next boot.
``"units"`` maps a systemd unit to its state (``{"ssh.socket": "active"}``; a
unit not listed is inactive): stopping or starting one is recorded
(``stop_unit``, ``start_unit``) and lasts until the next boot; an error
injected for ``list_units`` on one of the units asked about fails the whole
question, as one call to systemd would.

The description's ``"faults"`` (see ``backends/faults.py``) makes the Nth call
of an operation fail once: every machine operation, starting a hook program,
and writing the journal.

``SimMachine.boot_loaded()`` (``Backends.simulated_boot``) is the simulated
jump's other half: the machine "boots" the loaded kernel, with its command
line and a new boot id.  What was unbound, set down or frozen belongs to the
old boot and is gone, and nothing is loaded.  The new boot is persisted with
the machine's state, keyed by the description's own boot id: a description
that names another boot (a test simulating a real reboot) is taken as it is.
The description's ``"after_jump"`` says what the jump leads to: ``"boot"``
(the default: that new boot, which the dry-run daemon then verifies, as a
rehearsal), ``"halt"`` (nothing: the daemon stays in ``exec`` as if it had
gone down with the old kernel, for tests that start the next boot's daemon
themselves with a description of the new boot) or ``"fall-back"`` (the new
kernel hangs: the armed watchdog resets the machine, or, without one,
someone power-cycles it, and the firmware boots the old kernel again, with a
new boot id and the old command line).

``"watchdogs"`` lists the machine's hardware watchdogs (``name``,
``identity``, ``sys_path``, ``subsystem``, ``device``, ``driver``,
``module``; ``"busy": true``: another process holds it open; ``"bootstatus"``:
its WDIOF_* boot status, 32 after a watchdog reset); the default
machine has one, an i6300esb.  ``"manager_watchdog_sec"`` is PID 1's
RuntimeWatchdogSec= (default 0: off).  ``"kernel_modules"`` maps a kernel
release to the modules its modules.dep lists (a release not in it has no
module index); without it every kernel has every described watchdog's module.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from liveupd.backends import files
from liveupd.backends.base import (
    Backends,
    Binding,
    Device,
    Dmi,
    EncryptedVolume,
    LuksKind,
    Mount,
    NetInterface,
    OpenedKernel,
    Refusal,
    Session,
    VolumeScan,
    Watchdog,
    WatchdogBusy,
    WatchdogRecord,
)
from liveupd.backends.faults import Fault, FaultPlan, InvalidFaultPlan, fail, injected_error
from liveupd.devices.select import restrict
from liveupd.fsio import atomic_write_json
from liveupd.transition.phases import ExecMode

MACHINE_ENV = "LIVEUPD_DRY_RUN_MACHINE"
AFTER_JUMP = ("boot", "halt", "fall-back")
WDIOF_CARDRESET = 0x0020

_PCI = "/sys/devices/pci0000:00"
DEFAULT_MACHINE: dict[str, Any] = {
    "system": {
        "release": "6.1.0-55-cloud-amd64",
        "boot_id": "00000000-0000-4000-8000-000000000001",
        "cmdline": "root=/dev/vda rw console=ttyS0",
        "uptime": 100.0,
    },
    "devices": [
        {"sys_path": _PCI, "subsystem": "", "name": "pci0000:00", "driver": None},
        {
            "sys_path": f"{_PCI}/0000:00:03.0",
            "subsystem": "pci",
            "name": "0000:00:03.0",
            "driver": "virtio-pci",
            "parent": _PCI,
            "pci_class": "0x020000",
        },
        {
            "sys_path": f"{_PCI}/0000:00:03.0/virtio0",
            "subsystem": "virtio",
            "name": "virtio0",
            "driver": "virtio_net",
            "parent": f"{_PCI}/0000:00:03.0",
        },
        {
            "sys_path": f"{_PCI}/0000:00:03.0/virtio0/net/eth0",
            "subsystem": "net",
            "name": "eth0",
            "driver": None,
            "parent": f"{_PCI}/0000:00:03.0/virtio0",
            "net": {"ifname": "eth0", "mac": "52:54:00:12:34:56", "up": True},
        },
        {
            "sys_path": f"{_PCI}/0000:00:04.0",
            "subsystem": "pci",
            "name": "0000:00:04.0",
            "driver": "virtio-pci",
            "parent": _PCI,
            "pci_class": "0x010000",
        },
        {
            "sys_path": f"{_PCI}/0000:00:04.0/virtio1",
            "subsystem": "virtio",
            "name": "virtio1",
            "driver": "virtio_blk",
            "parent": f"{_PCI}/0000:00:04.0",
        },
        {
            "sys_path": f"{_PCI}/0000:00:04.0/virtio1/block/vda",
            "subsystem": "block",
            "name": "vda",
            "driver": None,
            "parent": f"{_PCI}/0000:00:04.0/virtio1",
            "devnodes": ["/dev/vda"],
        },
    ],
    "root_devices": [
        f"{_PCI}/0000:00:04.0/virtio1/block/vda",
        f"{_PCI}/0000:00:04.0/virtio1",
        f"{_PCI}/0000:00:04.0",
        _PCI,
    ],
    "mounts": [
        {"mountpoint": "/", "fstype": "ext4", "source": "/dev/vda", "writable": True,
         "block_backed": True, "device": "254:0"},
        {"mountpoint": "/data", "fstype": "ext4", "source": "/dev/vdb", "writable": True,
         "block_backed": True, "device": "254:16"},
        {"mountpoint": "/run", "fstype": "tmpfs", "source": "tmpfs", "writable": True,
         "block_backed": False, "device": "0:25"},
        {"mountpoint": "/proc", "fstype": "proc", "source": "proc", "writable": True,
         "block_backed": False, "device": "0:22"},
    ],
    "watchdogs": [
        {"name": "watchdog0", "identity": "i6300ESB timer", "sys_path": f"{_PCI}/0000:00:08.0",
         "subsystem": "pci", "device": "0000:00:08.0", "driver": "i6300ESB timer",
         "module": "i6300esb"},
    ],
}  # fmt: skip


class SimMachine:
    """The simulated machine's static description plus its persisted mutable state."""

    def __init__(self, state_dir: Path, machine_file: Path | None = None) -> None:
        self.dir = state_dir / "dry-run"
        self.dir.mkdir(parents=True, exist_ok=True)
        source = machine_file or (
            Path(os.environ[MACHINE_ENV]) if MACHINE_ENV in os.environ else None
        )
        self.description: dict[str, Any] = (
            json.loads(source.read_text()) if source else DEFAULT_MACHINE
        )
        try:
            self.faults = FaultPlan.from_json(self.description.get("faults"))
        except InvalidFaultPlan as e:
            raise ValueError(f"{source}: {e}") from None
        self.after_jump = self.description.get("after_jump", "boot")
        if self.after_jump not in AFTER_JUMP:
            raise ValueError(
                f"{source}: after_jump: expected one of {', '.join(AFTER_JUMP)}, "
                f"not {str(self.after_jump)[:40]!r}"
            )
        self._lock = threading.Lock()

    @property
    def state_file(self) -> Path:
        return self.dir / "machine.json"

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            data = {}
        data.setdefault("loaded", None)
        data.setdefault("unbound", {})
        data.setdefault("frozen", [])
        data.setdefault("links_down", [])
        data.setdefault("watchdog_armed", None)
        data.setdefault("watchdog_held", None)
        return data

    def system(self) -> dict[str, Any]:
        """The running system's facts: the description's, or a simulated boot's since."""
        described: dict[str, Any] = self.description["system"]
        boot = self.state().get("boot")
        if isinstance(boot, dict) and boot.get("over") == described["boot_id"]:
            return {**described, **boot["system"], "started": boot["started"]}
        return described

    def boot_loaded(self) -> None:
        """Boot the loaded kernel (the simulated jump's effect): a new boot id, nothing
        loaded, unbound, set down or frozen.

        ``after_jump = "fall-back"``: the new kernel hangs, and the machine comes back
        on the old one (its release and command line), reset by the watchdog armed
        for the jump if there was one.
        """
        with self._lock:
            state = self.state()
        loaded = state["loaded"]
        if loaded is None:
            raise OSError(errno.EINVAL, "no kernel loaded: nothing to boot")
        described = self.description["system"]
        armed = state.get("watchdog_armed")
        if self.after_jump == "fall-back":
            system = {
                "release": described["release"],
                "boot_id": str(uuid.uuid4()),
                "cmdline": described["cmdline"],
            }
            # The firmware reset clears the timer; the driver reads why at probe.
            watchdog = {"bootstatus": WDIOF_CARDRESET if armed else 0}
        else:
            system = {
                "release": loaded["release"],
                "boot_id": str(uuid.uuid4()),
                "cmdline": loaded["cmdline"],
            }
            # A kexec is not a reset: the armed timer runs on into the new kernel.
            watchdog = {"running": armed} if armed else {}
        boot = {"over": described["boot_id"], "system": system}
        change: dict[str, Any] = {
            "boot": {**boot, "started": time.time(), "watchdog": watchdog},
            "loaded": None,
            "unbound": {},
            "links_down": [],
            "frozen": [],
            "sessions_ended": [],
            "units": {},
            "watchdog_armed": None,
            "watchdog_held": None,
            "crash_loaded": False,  # a new kernel has no crash kernel until one is loaded
        }
        self.update("boot", change, **system)

    def boot_watchdog(self) -> dict[str, Any]:
        """What the current simulated boot inherited from the last jump ({} for none)."""
        boot = self.state().get("boot")
        if isinstance(boot, dict) and boot.get("over") == self.description["system"]["boot_id"]:
            return dict(boot.get("watchdog") or {})
        return {}

    def update(self, op: str, change: dict[str, Any], **record: Any) -> None:
        with self._lock:
            state = self.state()
            state.update(change)
            atomic_write_json(self.state_file, state)
            with (self.dir / "calls.jsonl").open("a") as f:
                f.write(json.dumps({"op": op, **record}, sort_keys=True) + "\n")

    def record(self, op: str, **record: Any) -> None:
        self.update(op, {}, **record)

    def calls(self) -> list[dict[str, Any]]:
        try:
            lines = (self.dir / "calls.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines]


class DryRunKexec:
    def __init__(self, machine: SimMachine) -> None:
        self.m = machine

    def refusals(self) -> list[Refusal]:
        """The description's ``"preflight"``: a reason's message (named ``preflight``), or
        ``{"reason": name, "message": text}``."""
        out = []
        for p in self.m.description.get("preflight", []):
            if isinstance(p, dict):
                out.append(Refusal(str(p["reason"]), str(p["message"])))
            else:
                out.append(Refusal("preflight", str(p)))
        return out

    def load(self, kernel: OpenedKernel, cmdline: str) -> None:
        self.m.faults.check("kexec-load")
        # What kexec_file_load would get: the open, checked descriptors (their sizes are
        # read through them, as the kernel reads them), cmdline_len with its NUL, flags.
        kernel_size = os.fstat(kernel.kernel_fd).st_size
        initrd_size = os.fstat(kernel.initrd_fd).st_size if kernel.initrd_fd is not None else None
        flags = ["KEXEC_FILE_NO_INITRAMFS"] if kernel.initrd_fd is None else []
        loaded = {
            "release": kernel.release,
            "kernel": kernel.kernel_path,
            "initrd": kernel.initrd_path,
            "cmdline": cmdline,
            "cmdline_len": len(cmdline.encode()) + 1,
            "sha256": kernel.sha256,
            "kernel_size": kernel_size,
            "initrd_size": initrd_size,
            "flags": flags,
        }
        self.m.update("kexec_file_load", {"loaded": loaded}, **loaded)

    def unload(self) -> None:
        self.m.faults.check("kexec-unload")
        self.m.update("kexec_unload", {"loaded": None})

    def is_loaded(self) -> bool:
        return self.m.state()["loaded"] is not None

    def jump(self, mode: ExecMode) -> None:
        self.m.faults.check("jump")
        if not self.is_loaded():
            raise OSError(errno.EINVAL, "no kernel loaded")
        self.m.record("jump", mode=str(mode), loaded=self.m.state()["loaded"])


def _injected(machine: SimMachine, op: str, key: str) -> None:
    """Raise the error the machine description injects for ``op`` on ``key``, if any.

    ``"errors": {"unbind": {"<sys_path>": "EBUSY"}, "freeze": {"/data": "EIO"}}``
    """
    name = machine.description.get("errors", {}).get(op, {}).get(key)
    if name:
        code = getattr(errno, str(name))
        raise OSError(code, f"{op} {key}: {os.strerror(code)} (injected by the dry-run machine)")


def _boot_id(machine: SimMachine) -> str:
    return str(machine.system()["boot_id"])


class DryRunDevices:
    """Simulated devices.  What was unbound or set down lasts until the next (simulated) boot."""

    def __init__(self, machine: SimMachine) -> None:
        self.m = machine

    def _state(self) -> dict[str, Any]:
        state = self.m.state()
        if state.get("devices_boot", _boot_id(self.m)) != _boot_id(self.m):
            state.update(unbound={}, links_down=[])  # a new boot probed everything again
        return state

    def devices(self, subsystems: frozenset[str] | None = None) -> list[Device]:
        self.m.faults.check("enumerate")
        return restrict(self._devices(), subsystems)

    def _devices(self) -> list[Device]:
        state = self._state()
        out = []
        for d in self.m.description["devices"]:
            net = d.get("net")
            driver = d.get("driver")
            if d["sys_path"] in state["unbound"] or self._under_unbound(d["sys_path"], state):
                if d["sys_path"] in state["unbound"]:
                    driver = None
                elif net is not None:
                    continue  # the interface disappeared with its device's driver
            if net is not None and net["ifname"] in state["links_down"]:
                net = {**net, "up": False}
            out.append(
                Device(
                    sys_path=d["sys_path"],
                    subsystem=d["subsystem"],
                    name=d["name"],
                    driver=driver,
                    parent=d.get("parent"),
                    driver_override=d.get("driver_override"),
                    pci_class=d.get("pci_class"),
                    properties=d.get("properties", {}),
                    devnodes=tuple(d.get("devnodes", ())),
                    net=NetInterface(**net) if net else None,
                )
            )
        return out

    @staticmethod
    def _under_unbound(sys_path: str, state: dict[str, Any]) -> bool:
        return any(sys_path.startswith(p + "/") for p in state["unbound"])

    def root_devices(self) -> set[str]:
        return set(self.m.description.get("root_devices", ()))

    def holders(self, sys_path: str) -> list[str]:
        holders: dict[str, list[str]] = self.m.description.get("holders", {})
        found: list[str] = []
        for path, names in sorted(holders.items()):
            if path == sys_path or path.startswith(sys_path + "/"):
                found += [n for n in names if n not in found]
        return found

    def set_link(self, ifname: str, up: bool) -> None:
        self.m.faults.check("set-link")
        _injected(self.m, "set_link", ifname)
        down = set(self._state()["links_down"])
        (down.discard if up else down.add)(ifname)
        change = {"links_down": sorted(down), "devices_boot": _boot_id(self.m)}
        self.m.update("set_link", change, ifname=ifname, up=up)

    def unbind(self, binding: Binding, timeout: float) -> None:
        self.m.faults.check("unbind")
        _injected(self.m, "unbind", binding.sys_path)
        unbound = dict(self._state()["unbound"])
        if binding.sys_path in unbound:
            raise OSError(errno.ENODEV, f"{binding.name} is not bound")
        unbound[binding.sys_path] = binding.to_json()
        change = {"unbound": unbound, "devices_boot": _boot_id(self.m)}
        self.m.update("unbind", change, **binding.to_json())

    def bind(self, binding: Binding, timeout: float) -> None:
        self.m.faults.check("bind")
        _injected(self.m, "bind", binding.sys_path)
        unbound = dict(self._state()["unbound"])
        if binding.sys_path not in unbound:
            raise OSError(errno.EBUSY, f"{binding.name} is already bound")
        del unbound[binding.sys_path]
        change = {"unbound": unbound, "devices_boot": _boot_id(self.m)}
        self.m.update("bind", change, **binding.to_json())

    def bound_driver(self, sys_path: str) -> str | None:
        for d in self._devices():
            if d.sys_path == sys_path:
                return d.driver
        return None

    def settle(self, timeout: float) -> bool:
        """``"udev_settles": false`` in the description simulates a settle timeout."""
        settles = bool(self.m.description.get("udev_settles", True))
        self.m.record("udev_settle", timeout=timeout, settled=settles)
        return settles


class DryRunStorage:
    """Simulated storage.  What was frozen stays frozen until thawed or the next boot."""

    def __init__(self, machine: SimMachine) -> None:
        self.m = machine

    def _frozen(self) -> list[str]:
        state = self.m.state()
        if state.get("storage_boot", _boot_id(self.m)) != _boot_id(self.m):
            return []
        return list(state["frozen"])

    def mounts(self) -> list[Mount]:
        return [Mount(**m) for m in self.m.description["mounts"]]

    def sync(self) -> None:
        self.m.faults.check("sync")
        self.m.record("sync")

    def syncfs(self, mountpoint: str) -> None:
        self.m.faults.check("syncfs")
        self.m.record("syncfs", mountpoint=mountpoint)

    def freeze(self, mountpoint: str) -> None:
        self.m.faults.check("freeze")
        _injected(self.m, "freeze", mountpoint)
        frozen = self._frozen()
        mount = next((m for m in self.mounts() if m.mountpoint == mountpoint), None)
        if mount is None or not mount.block_backed:
            raise OSError(errno.EOPNOTSUPP, f"cannot freeze {mountpoint}")
        if mountpoint in frozen:
            raise OSError(errno.EBUSY, f"{mountpoint} is already frozen")
        frozen.append(mountpoint)
        change = {"frozen": frozen, "storage_boot": _boot_id(self.m)}
        self.m.update("freeze", change, mountpoint=mountpoint)

    def thaw(self, mountpoint: str) -> None:
        self.m.faults.check("thaw")
        _injected(self.m, "thaw", mountpoint)
        frozen = self._frozen()
        if mountpoint in frozen:
            frozen.remove(mountpoint)
        change = {"frozen": frozen, "storage_boot": _boot_id(self.m)}
        self.m.update("thaw", change, mountpoint=mountpoint)

    async def encrypted_volumes(self) -> VolumeScan:
        """The description's ``"luks_volumes"`` (EncryptedVolume's fields) and
        ``"luks_problems"``."""
        volumes = []
        for v in self.m.description.get("luks_volumes", []):
            volumes.append(
                EncryptedVolume(
                    device=str(v["device"]),
                    names=tuple(str(n) for n in v.get("names", [])),
                    root=bool(v.get("root", False)),
                    crypttab=str(v.get("crypttab", "")),
                    kind=LuksKind(v.get("kind", "luks2")),
                    tokens=tuple(str(t) for t in v.get("tokens", [])),
                    problem=str(v.get("problem", "")),
                )
            )
        problems = tuple(str(p) for p in self.m.description.get("luks_problems", []))
        return VolumeScan(tuple(volumes), problems)


class DryRunSessions:
    """Simulated login sessions: those of the description, less the ones ended this boot."""

    def __init__(self, machine: SimMachine) -> None:
        self.m = machine

    def _ended(self) -> list[str]:
        state = self.m.state()
        if state.get("sessions_boot", _boot_id(self.m)) != _boot_id(self.m):
            return []
        return [str(i) for i in state.get("sessions_ended", [])]

    async def sessions(self) -> list[Session]:
        ended = self._ended()
        described: list[dict[str, Any]] = self.m.description.get("sessions", [])
        return [Session(**d) for d in described if str(d["id"]) not in ended]

    async def session_of(self, pid: int) -> str | None:
        del pid  # the simulation cannot tell a real process's session: the description does
        caller = self.m.description.get("caller_session")
        return str(caller) if caller else None

    async def terminate(self, session_id: str) -> None:
        _injected(self.m, "terminate_session", session_id)
        if session_id not in {s.id for s in await self.sessions()}:
            raise OSError(errno.ENOENT, f"no session {session_id}")
        change = {
            "sessions_ended": [*self._ended(), session_id],
            "sessions_boot": _boot_id(self.m),
        }
        self.m.update("terminate_session", change, session=session_id)

    async def gone(self, session_id: str) -> bool:
        return session_id in self._ended()

    def _units(self) -> dict[str, str]:
        """Each unit's state: the description's, changed by this boot's stops and starts."""
        units = {str(k): str(v) for k, v in self.m.description.get("units", {}).items()}
        state = self.m.state()
        if state.get("units_boot") == _boot_id(self.m):
            units.update(state.get("units", {}))
        return units

    def _set_unit(self, op: str, unit: str, active: str) -> None:
        change = {"units": {**self._units(), unit: active}, "units_boot": _boot_id(self.m)}
        self.m.update(op, change, unit=unit)

    async def active_units(self, units: Sequence[str]) -> list[str]:
        for unit in units:  # systemd answers for all of them at once, or not at all
            _injected(self.m, "list_units", unit)
        known = self._units()
        return [u for u in units if known.get(u) == "active"]

    async def stop_unit(self, unit: str) -> None:
        self.m.faults.check("unit-stop")
        _injected(self.m, "stop_unit", unit)
        self._set_unit("stop_unit", unit, "inactive")

    async def start_unit(self, unit: str) -> None:
        self.m.faults.check("unit-start")
        _injected(self.m, "start_unit", unit)
        self._set_unit("start_unit", unit, "active")


class SimSystem:
    def __init__(self, machine: SimMachine) -> None:
        self.m = machine

    def _fact(self, key: str) -> Any:
        return self.m.system()[key]

    def release(self) -> str:
        return str(self._fact("release"))

    def boot_id(self) -> str:
        return str(self._fact("boot_id"))

    def cmdline(self) -> str:
        return str(self._fact("cmdline"))

    def uptime(self) -> float:
        system = self.m.system()
        if "started" in system:  # a simulated boot: its uptime runs
            return max(0.0, time.time() - float(system["started"]))
        return float(system["uptime"])

    def dmi(self) -> Dmi:
        dmi = self.m.system().get("dmi", {})
        return Dmi(vendor=str(dmi.get("vendor", "")), product=str(dmi.get("product", "")))


class DryRunWatchdog:
    """Simulated watchdogs: what is armed, taken over and released is recorded."""

    def __init__(self, machine: SimMachine) -> None:
        self.m = machine
        self.fed = 0  # pings since take_over (in memory: not worth a line each)

    def _described(self) -> list[dict[str, Any]]:
        return list(self.m.description.get("watchdogs", []))

    def watchdogs(self) -> list[Watchdog]:
        state = self.m.state()
        inherited = self.m.boot_watchdog()
        out = []
        for w in self._described():
            armed = state.get("watchdog_armed") or {}
            held = state.get("watchdog_held") or {}
            unbound = armed.get("name") == w["name"] and armed.get("unbound")
            # The new boot of a jump that left it running: its driver was kept out by the
            # command line until verification loads it to take it over.
            not_loaded = (
                inherited.get("running")
                and not held
                and state.get("watchdog_loaded_boot") != _boot_id(self.m)
            )
            if unbound or not_loaded:
                continue  # no driver bound: not registered
            out.append(
                Watchdog(
                    name=w["name"],
                    devnode=f"/dev/{w['name']}",
                    identity=w.get("identity", ""),
                    sys_path=w["sys_path"],
                    subsystem=w.get("subsystem", "pci"),
                    device=w.get("device", w["sys_path"].rsplit("/", 1)[-1]),
                    driver=w.get("driver"),
                    module=w.get("module"),
                    active=bool(held.get("name") == w["name"]),
                    nowayout=False,
                    bootstatus=int(inherited.get("bootstatus", w.get("bootstatus", 0))),
                    timeout=held.get("timeout") if held.get("name") == w["name"] else None,
                )
            )
        return out

    def _busy(self, name: str) -> None:
        for w in self._described():
            if w["name"] == name and w.get("busy"):
                raise WatchdogBusy(
                    errno.EBUSY,
                    f"/dev/{name} is held open by another process (the simulated machine's "
                    'description says "busy": true)',
                )

    def arm(self, record: WatchdogRecord) -> int:
        self.m.faults.check("watchdog-arm")
        _injected(self.m, "watchdog_arm", record.name)
        self._busy(record.name)
        armed = {"name": record.name, "timeout": record.timeout, "unbound": True}
        self.m.update("watchdog_arm", {"watchdog_armed": armed}, **record.to_json())
        return record.timeout

    def disarm(self, record: WatchdogRecord) -> None:
        self.m.faults.check("watchdog-disarm")
        self.m.update("watchdog_disarm", {"watchdog_armed": None}, name=record.name)

    def load(self, record: WatchdogRecord) -> Watchdog:
        found = next((w for w in self.watchdogs() if w.sys_path == record.sys_path), None)
        if found is None:
            raise OSError(errno.ENODEV, f"no watchdog at {record.sys_path} (simulated)")
        return found

    def take_over(self, record: WatchdogRecord, timeout: int) -> int:
        self.m.faults.check("watchdog-take-over")
        _injected(self.m, "watchdog_take_over", record.name)
        if not any(w["sys_path"] == record.sys_path for w in self._described()):
            raise OSError(errno.ENODEV, f"no watchdog at {record.sys_path} (simulated)")
        self._busy(record.name)
        held = {"name": record.name, "timeout": timeout}
        self.fed = 0
        change = {"watchdog_held": held, "watchdog_loaded_boot": _boot_id(self.m)}
        self.m.update("watchdog_take_over", change, name=record.name, timeout=timeout)
        return timeout

    def feed(self) -> None:
        if not self.m.state().get("watchdog_held"):
            raise OSError(errno.EBADF, "no watchdog is held")
        self.fed += 1

    def release(self, *, keep_running: bool, timeout: int = 0) -> None:
        held = self.m.state().get("watchdog_held")
        if not held:
            return
        self.m.update(
            "watchdog_release",
            {"watchdog_held": None},
            name=held["name"],
            keep_running=keep_running,
            timeout=timeout,
            fed=self.fed,
        )

    def manager_watchdog(self) -> tuple[float, str]:
        return float(self.m.description.get("manager_watchdog_sec", 0)), ""

    def module_index(self, release: str) -> tuple[str, str]:
        known = self.m.description.get("kernel_modules")
        if known is None:
            modules = [str(w["module"]) for w in self._described() if w.get("module")]
        elif not isinstance(known, dict) or not isinstance(known.get(release, []), list):
            raise OSError(errno.EINVAL, 'the simulated machine\'s "kernel_modules" is malformed')
        elif release not in known:
            raise OSError(
                errno.ENOENT,
                f"/usr/lib/modules/{release}/modules.dep: missing (simulated: not in the "
                'description\'s "kernel_modules")',
            )
        else:
            modules = [str(m) for m in known[release]]
        return "".join(f"kernel/drivers/watchdog/{m}.ko.xz:\n" for m in modules), ""


class DryRunKdump:
    """The description's ``"kdump"``: ``{"crash_loaded": true, "crash_size": N, "loader":
    "ok" | "fails" | "no-effect" | "hangs" | null}`` (default: no crash kexec at all).
    A simulated boot starts with no crash kernel, as a real one does."""

    def __init__(self, machine: SimMachine) -> None:
        self.m = machine

    def _described(self) -> dict[str, Any]:
        kdump = self.m.description.get("kdump")
        return kdump if isinstance(kdump, dict) else {}

    def crash_loaded(self) -> bool | None:
        if "crash_loaded" not in self._described():
            return None
        state = self.m.state()
        if "crash_loaded" in state:
            return bool(state["crash_loaded"])
        return bool(self._described()["crash_loaded"])

    def crash_size(self) -> int | None:
        size = self._described().get("crash_size")
        return int(size) if size is not None else None

    def loader(self) -> str | None:
        return "/usr/sbin/kdump-config" if self._described().get("loader") else None

    def load(self, timeout: float) -> str:
        how = self._described().get("loader")
        self.m.record("kdump_load", how=how, timeout=timeout)
        if not how:
            return "no loader is installed (kdump-tools' kdump-config)"
        if how == "fails":
            return "'/usr/sbin/kdump-config load' exited with status 1: no crashkernel memory"
        if how == "hangs":
            return f"'/usr/sbin/kdump-config load' did not finish within {timeout:g} s"
        if how == "ok":
            self.m.update("kdump_loaded", {"crash_loaded": True})
        return ""


class DryRunFiles:
    """The journal's writes, through the real files, with the fault plan's failures.

    Journal faults are counted from the first journal this process creates (a
    replace of a file that does not exist yet), so that crash recovery's writes
    to older journals never shift them.
    """

    def __init__(self, machine: SimMachine) -> None:
        self.m = machine
        self.counting = False

    def _take(self, op: str) -> Fault | None:
        return self.m.faults.take(op) if self.counting else None

    def append(self, path: Path, data: bytes, *, durable: bool) -> None:
        fault = self._take("journal-write")
        if fault is not None:
            # ENOSPC: part of the record made it (a short write); EIO: all of it, then
            # the error (as from fsync): either way the file no longer matches memory.
            files.append(path, data[: len(data) // 2] if fault.error == "ENOSPC" else data,
                         durable=False)  # fmt: skip
            raise injected_error(fault)
        files.append(path, data, durable=durable)
        self._synced(durable)

    def replace(self, path: Path, data: bytes, *, durable: bool) -> None:
        if not self.counting and not path.exists():
            self.counting = True  # the first journal this process creates
        fault = self._take("journal-write")
        if fault is not None:
            raise injected_error(fault)  # atomic: the old file (or none) stays
        files.DurableFiles().replace(path, data, durable=durable)
        self._synced(durable)

    def _synced(self, durable: bool) -> None:
        if durable and (fault := self._take("journal-sync")) is not None:
            fail(fault)


def make(state_dir: Path, machine_file: Path | None = None) -> Backends:
    m = SimMachine(state_dir, machine_file)
    return Backends(
        kexec=DryRunKexec(m),
        devices=DryRunDevices(m),
        storage=DryRunStorage(m),
        system=SimSystem(m),
        sessions=DryRunSessions(m),
        dry_run=True,
        watchdog=DryRunWatchdog(m),
        kdump=DryRunKdump(m),
        files=DryRunFiles(m),
        faults=m.faults,
        simulated_boot=m.boot_loaded if m.after_jump != "halt" else None,
    )
