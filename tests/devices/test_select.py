"""Selection of the devices to unbind: selector keys, AND/OR, keep, root refusal."""

from __future__ import annotations

from dataclasses import replace

import pytest

from liveupd import schema
from liveupd.backends.base import Device, NetInterface
from liveupd.config.model import DeviceSelector
from liveupd.devices.select import matches, plan_unbind, restrict, subsystems_needed
from liveupd.errors import InvalidArgument
from tests.devices.fakes import (
    DISK_CTRL,
    ETH0,
    MAC,
    NIC,
    PCI,
    ROOT,
    VDA,
    VIRTIO_BLK,
    VIRTIO_NET,
    machine_devices,
)


def sel(**keys: object) -> DeviceSelector:
    """A selector validated as a file's would be (``pci_class=`` is the key ``pci-class``)."""
    return schema.load(DeviceSelector, {k.replace("_", "-"): v for k, v in keys.items()})


def device(path: str) -> Device:
    return next(d for d in machine_devices() if d.sys_path == path)


def chosen(selectors: list[DeviceSelector], keep: list[DeviceSelector] | None = None) -> list[str]:
    plan = plan_unbind(machine_devices(), selectors, keep or [], ROOT)
    return [b.sys_path for b in plan.bindings]


@pytest.mark.parametrize(
    ("selector", "path", "expected"),
    [
        ({"subsystem": "net"}, ETH0, True),
        ({"subsystem": "net"}, VIRTIO_NET, False),
        ({"driver": "virtio_net"}, VIRTIO_NET, True),
        ({"driver": "virtio_net"}, VIRTIO_BLK, False),
        ({"pci-class": "0x02"}, NIC, True),  # a class prefix: network controllers
        ({"pci-class": "0x0200"}, NIC, True),
        ({"pci-class": "0x0201"}, NIC, False),
        ({"pci-class": "0x02"}, DISK_CTRL, False),
        ({"pci-class": "0x02"}, ETH0, False),  # not a PCI device: no class
        ({"sysfs-path": "/sys/devices/pci0000:00/0000:00:03.0*"}, VIRTIO_NET, True),
        ({"sysfs-path": "/sys/devices/pci0000:00/0000:00:03.0"}, VIRTIO_NET, False),
        ({"property": {"ID_NET_DRIVER": "virtio*"}}, ETH0, True),
        ({"property": {"ID_NET_DRIVER": "e1000*"}}, ETH0, False),
        ({"property": {"ID_NET_DRIVER": "virtio*", "ID_PATH": "pci-0000:00:04.0"}}, ETH0, False),
    ],
)
def test_each_selector_key(selector: dict[str, object], path: str, expected: bool) -> None:
    assert matches(sel(**selector), device(path)) is expected


def test_keys_of_one_selector_must_all_match() -> None:
    assert matches(sel(subsystem="virtio", driver="virtio_net"), device(VIRTIO_NET))
    assert not matches(sel(subsystem="virtio", driver="virtio_blk"), device(VIRTIO_NET))
    assert not matches(sel(subsystem="pci", driver="virtio_net"), device(VIRTIO_NET))


def test_any_selector_of_a_list_selects() -> None:
    # Neither alone selects both, the list does (OR); the disk is refused below, so use
    # a machine without the root disk to see the OR.
    devices = [d for d in machine_devices() if d.sys_path not in (VDA,)]
    selectors = [sel(driver="virtio_net"), sel(subsystem="virtio", driver="virtio_blk")]
    plan = plan_unbind(devices, selectors, [], set())
    assert sorted(b.sys_path for b in plan.bindings) == [VIRTIO_NET, VIRTIO_BLK]


def test_a_device_without_driver_stands_for_its_bound_ancestor() -> None:
    plan = plan_unbind(machine_devices(), [sel(subsystem="net")], [], ROOT)
    (b,) = plan.bindings
    # The binding record: what the rebind and the verification need.
    assert (b.sys_path, b.subsystem, b.name, b.driver) == (
        VIRTIO_NET,
        "virtio",
        "virtio0",
        "virtio_net",
    )
    assert b.driver_override is None
    assert b.net == (NetInterface("eth0", MAC, True),)


def test_driver_override_is_recorded() -> None:
    devices = [
        replace(d, driver_override="virtio-pci") if d.sys_path == NIC else d
        for d in machine_devices()
    ]
    (b,) = plan_unbind(devices, [sel(pci_class="0x02")], [], ROOT).bindings
    assert (b.sys_path, b.driver, b.driver_override) == (NIC, "virtio-pci", "virtio-pci")


def test_children_are_unbound_before_parents_and_each_interface_once() -> None:
    plan = plan_unbind(machine_devices(), [sel(subsystem="net"), sel(pci_class="0x02")], [], ROOT)
    assert [b.sys_path for b in plan.bindings] == [VIRTIO_NET, NIC]
    # eth0 goes away with virtio0: only that binding sets it down and checks it later.
    assert [len(b.net) for b in plan.bindings] == [1, 0]


def test_root_device_is_refused_with_a_clear_error() -> None:
    with pytest.raises(InvalidArgument) as e:
        plan_unbind(machine_devices(), [sel(subsystem="block")], [], ROOT)
    msg = e.value.message
    assert f"refusing to unbind {VIRTIO_BLK} (driver virtio_blk)" in msg
    assert "root filesystem" in msg and f"selected through {VDA}" in msg
    assert "[devices] keep" in msg and "Nothing was changed" in msg


def test_root_ancestor_is_refused_too() -> None:
    with pytest.raises(InvalidArgument, match=DISK_CTRL):
        plan_unbind(machine_devices(), [sel(pci_class="0x01")], [], ROOT)


def test_keep_excludes_and_reports() -> None:
    plan = plan_unbind(
        machine_devices(),
        [sel(subsystem="net"), sel(subsystem="block")],
        [sel(subsystem="block")],
        ROOT,
    )
    assert [b.sys_path for b in plan.bindings] == [VIRTIO_NET]
    assert plan.kept == (VIRTIO_BLK,)


def test_keep_of_an_ancestor_or_a_descendant_protects_the_binding() -> None:
    # Keeping the PCI function keeps the virtio device below it ...
    assert chosen([sel(subsystem="net")], [sel(sysfs_path=NIC)]) == []
    # ... and keeping the interface keeps the device whose unbind would remove it.
    assert chosen([sel(driver="virtio_net")], [sel(subsystem="net")]) == []
    # A keep elsewhere in the tree does not.
    assert chosen([sel(subsystem="net")], [sel(sysfs_path=DISK_CTRL)]) == [VIRTIO_NET]


def test_nothing_matches_nothing_planned() -> None:
    plan = plan_unbind(machine_devices(), [sel(driver="e1000e")], [], ROOT)
    assert plan.bindings == () and plan.kept == ()


def test_an_unbound_device_is_not_selected() -> None:
    devices = [
        replace(d, driver=None) if d.sys_path == VIRTIO_NET else d for d in machine_devices()
    ]
    # eth0's nearest bound ancestor is now the PCI function itself.
    assert [
        b.sys_path for b in plan_unbind(devices, [sel(subsystem="net")], [], ROOT).bindings
    ] == [NIC]
    assert PCI not in chosen([sel(subsystem="net")])


def test_subsystems_needed() -> None:
    assert subsystems_needed([sel(subsystem="net")], []) == frozenset({"net"})
    needed = subsystems_needed([sel(**{"pci-class": "0x02"})], [sel(subsystem="block")])
    assert needed == frozenset({"net", "pci", "block"})
    # A selector that can match any subsystem needs every device.
    assert subsystems_needed([sel(subsystem="net"), sel(driver="e1000e")], []) is None
    assert subsystems_needed([sel(subsystem="net")], [sel(**{"sysfs-path": "/sys/x*"})]) is None


def test_restrict_keeps_the_subsystems_and_their_ancestors_in_order() -> None:
    devices = machine_devices()
    only_net = restrict(devices, frozenset({"net"}))
    assert [d.sys_path for d in only_net] == [
        d.sys_path for d in devices if d.sys_path in {PCI, NIC, VIRTIO_NET, ETH0}
    ]
    assert restrict(devices, None) == devices


@pytest.mark.parametrize(
    ("selectors", "keep"),
    [
        ([{"subsystem": "net"}], []),
        ([{"pci-class": "0x02"}], []),
        ([{"subsystem": "virtio"}], [{"subsystem": "net"}]),
        ([{"subsystem": "pci"}], [{"subsystem": "block"}]),
        ([{"subsystem": "net"}, {"subsystem": "virtio", "driver": "virtio_net"}], []),
    ],
)
def test_a_plan_from_the_needed_subsystems_equals_the_plan_from_every_device(
    selectors: list[dict[str, object]], keep: list[dict[str, object]]
) -> None:
    unbind = [sel(**s) for s in selectors]
    kept = [sel(**k) for k in keep]
    devices = machine_devices()
    needed = subsystems_needed(unbind, kept)
    assert needed is not None
    full_error: str | None = None
    try:
        full = plan_unbind(devices, unbind, kept, set())
    except InvalidArgument as e:
        full_error = e.message
    try:
        part = plan_unbind(restrict(devices, needed), unbind, kept, set())
    except InvalidArgument as e:
        assert e.message == full_error
    else:
        assert full_error is None
        assert part == full
