"""Pure planning for devices: which bindings to undo, and which to refuse.

A selector matches a device when every key it gives matches (AND); a list of
selectors matches when any does (OR).  A matched device that has no driver of
its own (a network interface, a block device) stands for the nearest ancestor
that has one: that binding is what gets unbound.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from liveupd import paths
from liveupd.backends.base import Binding, Device
from liveupd.config.model import DeviceSelector
from liveupd.errors import InvalidArgument


def matches(selector: DeviceSelector, device: Device) -> bool:
    if selector.subsystem is not None and device.subsystem != selector.subsystem:
        return False
    if selector.driver is not None and device.driver != selector.driver:
        return False
    if selector.pci_class is not None and not (
        device.pci_class and device.pci_class.lower().startswith(selector.pci_class)
    ):
        return False
    if selector.sysfs_path is not None and not fnmatch.fnmatchcase(
        device.sys_path, selector.sysfs_path
    ):
        return False
    if selector.property is not None:
        for key, value in selector.property.items():
            if not fnmatch.fnmatchcase(device.properties.get(key, ""), value):
                return False
    return True


def matches_any(selectors: Iterable[DeviceSelector], device: Device) -> bool:
    return any(matches(s, device) for s in selectors)


def subsystems_needed(
    selectors: Iterable[DeviceSelector], keep: Iterable[DeviceSelector]
) -> frozenset[str] | None:
    """The subsystems whose devices (with their ancestors) a plan needs; None: all.

    A device can only match a selector that names a subsystem if it is in that
    subsystem, and a ``pci-class`` one if it is a PCI device; the network
    interfaces are always needed (a binding records those below it).  A
    selector that names neither (driver, sysfs-path or property alone) can
    match anything, so every device is needed.
    """
    found = {"net"}
    for s in (*selectors, *keep):
        if s.subsystem is not None:
            found.add(s.subsystem)
        elif s.pci_class is not None:
            found.add("pci")
        else:
            return None
    return frozenset(found)


def restrict(devices: Sequence[Device], subsystems: frozenset[str] | None) -> list[Device]:
    """The devices of ``subsystems`` and their ancestors (all of them for None), in order."""
    if subsystems is None:
        return list(devices)
    by_path = {d.sys_path: d for d in devices}
    keep: set[str] = set()
    for d in devices:
        current: Device | None = d if d.subsystem in subsystems else None
        while current is not None and current.sys_path not in keep:
            keep.add(current.sys_path)
            current = by_path.get(current.parent) if current.parent else None
    return [d for d in devices if d.sys_path in keep]


def bound_ancestor(device: Device, by_path: dict[str, Device]) -> Device | None:
    """The device itself if it has a driver, else its nearest ancestor that has one."""
    current: Device | None = device
    while current is not None:
        if current.driver:
            return current
        current = by_path.get(current.parent) if current.parent else None
    return None


def _related(a: str, b: str) -> bool:
    """One path is the other, or an ancestor of it."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _below(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor + "/")


@dataclass(frozen=True)
class UnbindPlan:
    bindings: tuple[Binding, ...]  # in unbind order; rebind in reverse
    kept: tuple[str, ...]  # sys_paths matched but kept (config ``keep``)


def plan_unbind(
    devices: Sequence[Device],
    selectors: Sequence[DeviceSelector],
    keep: Sequence[DeviceSelector],
    root_devices: set[str],
    *,
    config_file: str = str(paths.CONFIG_FILE),
) -> UnbindPlan:
    """Bindings to undo.  InvalidArgument (nothing changed) if one holds the root fs.

    A ``keep`` selector protects the binding it matches, every binding above
    it and every binding below it: unbinding a device takes away everything
    below it, and keeping a bridge keeps what hangs off it.
    """
    by_path = {d.sys_path: d for d in devices}
    kept_paths = {d.sys_path for d in devices if matches_any(keep, d)}
    chosen: dict[str, Device] = {}
    kept: list[str] = []
    for device in devices:
        if not matches_any(selectors, device):
            continue
        target = bound_ancestor(device, by_path)
        if target is None or target.sys_path in chosen or target.sys_path in kept:
            continue
        if any(_related(target.sys_path, k) for k in kept_paths):
            kept.append(target.sys_path)
            continue
        if target.sys_path in root_devices:
            raise InvalidArgument(
                f"refusing to unbind {target.sys_path} (driver {target.driver}): it holds the "
                f"root filesystem. It was selected through {device.sys_path}; narrow "
                "[devices] unbind (or the hook's unbind) or add it to [devices] keep in "
                f"{config_file}. Nothing was changed."
            )
        chosen[target.sys_path] = target
    # Each interface belongs to the deepest chosen binding above it: that unbind removes it.
    bindings = []
    for target in chosen.values():
        deeper = [p for p in chosen if p != target.sys_path and _below(p, target.sys_path)]
        nets = tuple(
            d.net
            for d in devices
            if d.net is not None
            and _below(d.sys_path, target.sys_path)
            and not any(_below(d.sys_path, p) for p in deeper)
        )
        bindings.append(
            Binding(
                sys_path=target.sys_path,
                subsystem=target.subsystem,
                name=target.name,
                driver=target.driver or "",
                driver_override=target.driver_override,
                net=nets,
            )
        )
    # Children before parents: a deeper binding is undone first.
    bindings.sort(key=lambda b: (-b.sys_path.count("/"), b.sys_path))
    return UnbindPlan(tuple(bindings), tuple(kept))
