"""Enumerate devices with pyudev, as the backends' :class:`Device` records.

pyudev gives the tree, the bound drivers and udev's properties (``ID_*`` need
udevd's database); a few attributes are read through :class:`Sysfs`
(``driver_override``, a PCI device's class, an interface's MAC and flags).
:func:`to_device` works on anything shaped like a pyudev device, so the
conversion is tested with plain objects over a temporary sysfs tree.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from liveupd.backends.base import Device, NetInterface
from liveupd.devices.link import IFF_UP
from liveupd.devices.sysfs import Sysfs


class UdevDevice(Protocol):
    """The part of ``pyudev.Device`` used here."""

    @property
    def sys_path(self) -> str: ...
    @property
    def sys_name(self) -> str: ...
    @property
    def subsystem(self) -> str | None: ...
    @property
    def driver(self) -> str | None: ...
    @property
    def parent(self) -> Any: ...  # UdevDevice | None
    @property
    def device_node(self) -> str | None: ...
    @property
    def device_links(self) -> Iterable[str]: ...
    @property
    def properties(self) -> Mapping[str, str]: ...


def net_interface(sysfs: Sysfs, sys_path: str, ifname: str) -> NetInterface:
    flags = sysfs.read(sys_path, "flags") or "0"
    try:
        up = bool(int(flags, 16) & IFF_UP)
    except ValueError:
        up = False
    return NetInterface(ifname=ifname, mac=sysfs.read(sys_path, "address") or "", up=up)


def to_device(dev: UdevDevice, sysfs: Sysfs) -> Device:
    sys_path = str(dev.sys_path)
    subsystem = str(dev.subsystem or "")
    parent = dev.parent
    nodes = [str(dev.device_node)] if dev.device_node else []
    nodes += sorted(str(link) for link in dev.device_links)
    return Device(
        sys_path=sys_path,
        subsystem=subsystem,
        name=str(dev.sys_name),
        driver=str(dev.driver) if dev.driver else None,
        parent=str(parent.sys_path) if parent is not None else None,
        driver_override=sysfs.driver_override(sys_path),
        pci_class=sysfs.read(sys_path, "class") if subsystem == "pci" else None,
        properties={str(k): str(v) for k, v in dev.properties.items()},
        devnodes=tuple(nodes),
        net=net_interface(sysfs, sys_path, str(dev.sys_name)) if subsystem == "net" else None,
    )


def with_ancestors(devices: Iterable[UdevDevice]) -> list[UdevDevice]:
    """The devices plus every ancestor not already listed (udev does not list them all)."""
    by_path: dict[str, UdevDevice] = {}
    for dev in devices:
        current: UdevDevice | None = dev
        while current is not None and str(current.sys_path) not in by_path:
            by_path[str(current.sys_path)] = current
            current = current.parent
    return list(by_path.values())


def tree_order(device: Device) -> tuple[int, str]:
    """Parents before children."""
    return (device.sys_path.count("/"), device.sys_path)


def convert(devices: Iterable[UdevDevice], sysfs: Sysfs) -> list[Device]:
    out = []
    for dev in with_ancestors(devices):
        try:
            out.append(to_device(dev, sysfs))
        except (OSError, KeyError, ValueError):
            continue  # removed while we looked
    return sorted(out, key=tree_order)


def udev_devices(sysfs: Sysfs, subsystems: frozenset[str] | None = None) -> list[Device]:
    """Every device udev knows (or those of ``subsystems``), with its ancestors, parents first."""
    import pyudev

    context = pyudev.Context()
    if subsystems is None:
        return convert(context.list_devices(), sysfs)
    found = itertools.chain.from_iterable(
        context.list_devices(subsystem=s) for s in sorted(subsystems)
    )
    return convert(found, sysfs)
