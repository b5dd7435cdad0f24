"""A small sysfs tree in a temporary directory, and a fake kernel acting on its writes.

The tree is a VM's: a virtio NIC at 0000:00:03.0 (virtio0, eth0) and a virtio
disk at 0000:00:04.0 (virtio1, vda with partitions, a dm-0 over vda2).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveupd.devices.sysfs import Sysfs
from liveupd.devices.uevents import Uevent

PCI = "/sys/devices/pci0000:00"
NIC = f"{PCI}/0000:00:03.0"
VIRTIO0 = f"{NIC}/virtio0"
ETH0 = f"{VIRTIO0}/net/eth0"
DISK = f"{PCI}/0000:00:04.0"
VIRTIO1 = f"{DISK}/virtio1"
VDA = f"{VIRTIO1}/block/vda"
VDA2 = f"{VDA}/vda2"
DM0 = "/sys/devices/virtual/block/dm-0"
MAC = "52:54:00:12:34:56"
NULL_RDEV = os.stat("/dev/null").st_rdev


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def build(root: Path) -> Path:
    """Create the tree under ``root``/sys; returns ``root``."""
    s = root / "sys"

    def p(sys_path: str) -> Path:
        return root / sys_path.lstrip("/")

    for bus, drv in [("pci", "virtio-pci"), ("virtio", "virtio_net"), ("virtio", "virtio_blk")]:
        for f in ("bind", "unbind"):
            _write(s / "bus" / bus / "drivers" / drv / f, "")
    _write(s / "bus/pci/drivers_probe", "")
    for dev, cls in [(NIC, "0x020000"), (DISK, "0x010000")]:
        _write(p(dev) / "class", cls + "\n")
        _write(p(dev) / "driver_override", "(null)\n")
        _write(p(dev) / "uevent", "")
        _link(p(dev) / "driver", s / "bus/pci/drivers/virtio-pci")
    _link(p(VIRTIO0) / "driver", s / "bus/virtio/drivers/virtio_net")
    _link(p(VIRTIO1) / "driver", s / "bus/virtio/drivers/virtio_blk")
    _write(p(ETH0) / "address", MAC + "\n")
    _write(p(ETH0) / "flags", "0x1003\n")
    _link(p(ETH0) / "device", p(VIRTIO0))
    _link(s / "class/net/eth0", p(ETH0))
    _write(s / "devices/virtual/net/lo/address", "00:00:00:00:00:00\n")
    _write(s / "devices/virtual/net/lo/flags", "0x9\n")
    _link(s / "class/net/lo", s / "devices/virtual/net/lo")
    _write(p(VDA) / "dev", "254:0\n")
    _write(p(VDA) / "vda1" / "dev", "254:1\n")
    _write(p(VDA2) / "dev", "254:2\n")
    _write(p(DM0) / "dev", "253:0\n")
    _link(p(DM0) / "slaves" / "vda2", p(VDA2))
    for block in (p(VDA), p(VDA) / "vda1", p(VDA2), p(DM0)):
        _link(block / "subsystem", s / "class/block")
    # A character device below the NIC (as a TAP or a serial port would have): /dev/null's number.
    _write(p(VIRTIO0) / "nullish" / "dev", f"{os.major(NULL_RDEV)}:{os.minor(NULL_RDEV)}\n")
    _link(p(VIRTIO0) / "nullish" / "subsystem", s / "class/mem")
    _link(s / "dev/block/254:0", p(VDA))
    _link(s / "dev/block/254:1", p(VDA) / "vda1")
    _link(s / "dev/block/254:2", p(VDA2))
    _link(s / "dev/block/253:0", p(DM0))
    return root


class FakeEvents:
    """A UeventSource fed by the fake kernel; ``next`` blocks like a netlink poll."""

    name = "fake"

    def __init__(self) -> None:
        self.queue: queue.Queue[Uevent] = queue.Queue()
        self.listening = 0

    def put(self, event: Uevent) -> None:
        if self.listening:
            self.queue.put(event)

    def next(self, timeout: float) -> Uevent | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    @contextlib.contextmanager
    def open(self) -> Iterator[FakeEvents]:
        self.listening += 1
        try:
            yield self
        finally:
            self.listening -= 1


@dataclass
class FakeKernel(Sysfs):
    """Sysfs over the tree; writes to bind/unbind/driver_override act as the kernel would.

    ``events``: announce the change (False: the change happens silently);
    ``stuck``: the write is accepted but nothing changes.
    """

    root: Path
    source: FakeEvents = field(default_factory=FakeEvents)
    events: bool = True
    stuck: bool = False
    writes: list[tuple[str, str]] = field(default_factory=list)
    children: Mapping[str, str] = field(default_factory=lambda: {VIRTIO0: ETH0})

    def __post_init__(self) -> None:
        super().__init__(self.root)
        self._parked = self.root / "parked"

    def write(self, sys_path: str, value: str) -> None:
        self.writes.append((sys_path, value))
        super().write(sys_path, value)  # the file exists, or ENOENT as in sysfs
        if self.stuck:
            return
        parts = sys_path.split("/")
        if sys_path.endswith("/driver_override"):
            return
        bus, driver, action = parts[3], parts[5], parts[6]
        device = self._find(bus, value)
        if action == "unbind":
            (self.path(device) / "driver").unlink()
            child = self.children.get(device)
            if child:
                self._parked.mkdir(exist_ok=True)
                shutil.move(self.path(child), self._parked / "child")
                (self.root / "sys/class/net/eth0").unlink()
                self._emit("remove", child)
            self._emit("unbind", device)
        elif action == "bind":
            drv = self.root / "sys/bus" / bus / "drivers" / driver
            _link(self.path(device) / "driver", drv)
            child = self.children.get(device)
            if child and (self._parked / "child").exists():
                shutil.move(self._parked / "child", self.path(child))
                _link(self.root / "sys/class/net/eth0", self.path(child))
                self._emit("add", child)
            self._emit("bind", device)

    def _find(self, bus: str, name: str) -> str:
        for dev in (NIC, VIRTIO0, DISK, VIRTIO1):
            if dev.rsplit("/", 1)[1] == name:
                return dev
        raise OSError(19, f"no {bus} device {name}")

    def _emit(self, action: str, sys_path: str) -> None:
        if self.events:
            self.source.put(Uevent(action, sys_path))


@dataclass(frozen=True)
class FakeUdevDevice:
    """What pyudev would report for one device of the tree."""

    sys_path: str
    subsystem: str | None
    sys_name: str
    driver: str | None
    parent: Any = None
    device_node: str | None = None
    device_links: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)


def udev_view(sysfs: Sysfs) -> list[FakeUdevDevice]:
    """The tree's devices as udev lists them (the PCI root bus itself is not listed)."""
    root = FakeUdevDevice(PCI, None, "pci0000:00", None)
    nic = FakeUdevDevice(NIC, "pci", "0000:00:03.0", sysfs.driver(NIC), root)
    v0 = FakeUdevDevice(VIRTIO0, "virtio", "virtio0", sysfs.driver(VIRTIO0), nic)
    eth = FakeUdevDevice(
        ETH0,
        "net",
        "eth0",
        None,
        v0,
        properties={"INTERFACE": "eth0", "ID_NET_DRIVER": "virtio_net"},
    )
    disk = FakeUdevDevice(DISK, "pci", "0000:00:04.0", sysfs.driver(DISK), root)
    v1 = FakeUdevDevice(VIRTIO1, "virtio", "virtio1", sysfs.driver(VIRTIO1), disk)
    vda = FakeUdevDevice(
        VDA, "block", "vda", None, v1, "/dev/vda", ("/dev/disk/by-label/liveupd-root",)
    )
    return [eth, vda, nic, v0, disk, v1]
