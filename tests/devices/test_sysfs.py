"""Sysfs reads and writes on a temporary tree: records, unbind/bind, root devices."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liveupd.backends.base import Binding, NetInterface
from liveupd.config.model import DeviceSelector
from liveupd.devices.enumerate import convert
from liveupd.devices.machine import SysfsDevices
from liveupd.devices.root import root_devices
from liveupd.devices.select import plan_unbind
from liveupd.devices.sysfs import Sysfs
from tests.devices.tree import (
    DISK,
    DM0,
    ETH0,
    MAC,
    NIC,
    NULL_RDEV,
    PCI,
    VDA,
    VDA2,
    VIRTIO0,
    VIRTIO1,
    FakeKernel,
    build,
    udev_view,
)

NET_BINDING = Binding(
    VIRTIO0, "virtio", "virtio0", "virtio_net", net=(NetInterface("eth0", MAC, True),)
)


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(build(tmp_path / "root"))


def backend(kernel: FakeKernel) -> SysfsDevices:
    return SysfsDevices(
        kernel,
        uevents=kernel.source,
        enumerate_devices=lambda: convert(udev_view(kernel), kernel),
        root_devices=lambda: root_devices(kernel, (254, 2), "ext4"),
    )


def test_paths_map_under_the_root(tmp_path: Path) -> None:
    sysfs = Sysfs(tmp_path)
    assert sysfs.path("/sys/devices/x") == tmp_path / "sys/devices/x"
    with pytest.raises(ValueError, match="under /sys"):
        sysfs.path("/etc/passwd")


def test_binding_records_from_the_tree(kernel: FakeKernel) -> None:
    devices = {d.sys_path: d for d in backend(kernel).devices()}
    # Parents first, with the ancestor udev does not list.
    assert next(iter(devices)) == PCI
    nic, eth = devices[NIC], devices[ETH0]
    assert (nic.subsystem, nic.driver, nic.driver_override, nic.pci_class) == (
        "pci",
        "virtio-pci",
        None,  # "(null)" means no override
        "0x020000",
    )
    assert eth.net == NetInterface("eth0", MAC, True)  # flags 0x1003: IFF_UP
    assert eth.properties["ID_NET_DRIVER"] == "virtio_net"
    assert devices[VDA].devnodes == ("/dev/vda", "/dev/disk/by-label/liveupd-root")
    assert devices[VIRTIO0].parent == NIC

    plan = plan_unbind(list(devices.values()), [DeviceSelector(subsystem="net")], [], set())
    assert plan.bindings == (NET_BINDING,)
    assert Binding.from_json(NET_BINDING.to_json()) == NET_BINDING


def test_driver_override_and_link_state_are_read(kernel: FakeKernel) -> None:
    kernel.path(NIC).joinpath("driver_override").write_text("virtio-pci\n")
    kernel.path(ETH0).joinpath("flags").write_text("0x1002\n")
    devices = {d.sys_path: d for d in backend(kernel).devices()}
    assert devices[NIC].driver_override == "virtio-pci"
    assert devices[ETH0].net == NetInterface("eth0", MAC, False)


def test_unbind_writes_the_driver_unbind_file_and_waits_for_the_event(kernel: FakeKernel) -> None:
    dev = backend(kernel)
    dev.unbind(NET_BINDING, timeout=30)
    assert kernel.writes == [("/sys/bus/virtio/drivers/virtio_net/unbind", "virtio0")]
    assert dev.bound_driver(VIRTIO0) is None
    assert dev.interfaces_under(NIC) == []


def test_unbind_of_a_device_not_bound_to_the_driver_changes_nothing(kernel: FakeKernel) -> None:
    wrong = Binding(VIRTIO0, "virtio", "virtio0", "virtio_blk")
    with pytest.raises(OSError) as e:
        backend(kernel).unbind(wrong, timeout=30)
    assert e.value.errno == errno.ENODEV
    assert "bound to virtio_net, not virtio_blk" in str(e.value)
    assert kernel.writes == []


def test_unbind_without_event_but_done_succeeds_with_a_warning(
    kernel: FakeKernel, caplog: pytest.LogCaptureFixture
) -> None:
    kernel.events = False
    with caplog.at_level(logging.WARNING, logger="liveupd"):
        backend(kernel).unbind(NET_BINDING, timeout=0.3)
    assert kernel.driver(VIRTIO0) is None
    assert "devices.event-missed" in caplog.text


def test_unbind_that_does_not_happen_times_out_naming_the_device(kernel: FakeKernel) -> None:
    kernel.stuck = True
    start = time.monotonic()
    with pytest.raises(OSError) as e:
        backend(kernel).unbind(NET_BINDING, timeout=0.3)
    assert e.value.errno == errno.ETIMEDOUT
    assert f"{VIRTIO0} is still bound to virtio_net after the unbind" in str(e.value)
    assert time.monotonic() - start < 5


def test_bind_restores_the_override_then_binds_and_waits_for_the_interface(
    kernel: FakeKernel,
) -> None:
    dev = backend(kernel)
    nic = Binding(NIC, "pci", "0000:00:03.0", "virtio-pci", driver_override="virtio-pci")
    dev.unbind(nic, timeout=30)
    kernel.writes.clear()
    dev.bind(nic, timeout=30)
    assert kernel.writes == [
        (f"{NIC}/driver_override", "virtio-pci"),
        ("/sys/bus/pci/drivers/virtio-pci/bind", "0000:00:03.0"),
    ]
    assert dev.bound_driver(NIC) == "virtio-pci"


def test_bind_clears_an_override_that_was_not_there(kernel: FakeKernel) -> None:
    dev = backend(kernel)
    dev.unbind(NET_BINDING, timeout=30)
    kernel.path(VIRTIO0).joinpath("driver_override").write_text("vfio\n")
    kernel.writes.clear()
    dev.bind(NET_BINDING, timeout=30)
    assert kernel.writes[0] == (f"{VIRTIO0}/driver_override", "\n")
    assert [n.mac for n in dev.interfaces_under(VIRTIO0)] == [MAC]


def test_bind_of_a_bound_device_writes_nothing(kernel: FakeKernel) -> None:
    backend(kernel).bind(NET_BINDING, timeout=30)
    assert kernel.writes == []


def test_bind_that_does_not_bring_the_interface_back_times_out(kernel: FakeKernel) -> None:
    dev = backend(kernel)
    dev.unbind(NET_BINDING, timeout=30)
    kernel.stuck = True
    with pytest.raises(OSError) as e:
        dev.bind(NET_BINDING, timeout=0.3)
    assert e.value.errno == errno.ETIMEDOUT
    assert "not bound to virtio_net with its interfaces" in str(e.value)


def test_interfaces_skip_virtual_ones(kernel: FakeKernel) -> None:
    assert [(n.ifname, n.mac, n.up) for n in kernel.net_interfaces()] == [("eth0", MAC, True)]


def test_root_devices_follow_partitions_and_ancestors(kernel: FakeKernel) -> None:
    assert root_devices(kernel, (254, 2), "ext4") == {
        VDA2,
        VDA,
        f"{VIRTIO1}/block",
        VIRTIO1,
        DISK,
        PCI,
    }


def test_root_devices_follow_device_mapper_slaves(kernel: FakeKernel) -> None:
    found = root_devices(kernel, (253, 0), "ext4")
    assert {DM0, VDA2, VDA, VIRTIO1, DISK}.issubset(found)
    assert NIC not in found and VIRTIO0 not in found


def test_network_root_protects_the_interfaces_that_are_up(kernel: FakeKernel) -> None:
    assert {ETH0, VIRTIO0, NIC}.issubset(root_devices(kernel, None, "nfs4"))
    assert root_devices(kernel, None, "tmpfs") == set()


def test_unbinding_the_root_disk_is_refused_on_the_tree(kernel: FakeKernel) -> None:
    from liveupd.errors import InvalidArgument

    dev = backend(kernel)
    with pytest.raises(InvalidArgument, match=VIRTIO1):
        plan_unbind(dev.devices(), [DeviceSelector(subsystem="block")], [], dev.root_devices())


def test_device_numbers_below_are_the_subtree_s_own(kernel: FakeKernel) -> None:
    blk = {(True, os.makedev(254, n)) for n in (0, 1, 2)}
    assert kernel.device_numbers_below(DISK) == blk  # the disk and its partitions
    assert kernel.device_numbers_below(VDA2) == {(True, os.makedev(254, 2))}
    # dm-0's slaves/vda2 is a symlink: not below dm-0.
    assert kernel.device_numbers_below(DM0) == {(True, os.makedev(253, 0))}
    assert kernel.device_numbers_below(NIC) == {(False, NULL_RDEV)}


def test_holders_are_found_below_the_binding(kernel: FakeKernel) -> None:
    # A process holding /dev/null open holds "the character device below the NIC".
    code = "import sys; f=open('/dev/null'); print('ready', flush=True); sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        devices = backend(kernel)
        assert f"(pid {proc.pid})" in " ".join(devices.holders(NIC))
        assert f"(pid {proc.pid})" not in " ".join(devices.holders(DISK))
    finally:
        proc.kill()
        proc.wait()
