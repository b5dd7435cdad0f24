"""The unbind step: records, link down before unbind, undo order, refusal without change."""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable

import pytest

from liveupd.backends.base import Binding, Device, NetInterface
from liveupd.config import Config
from liveupd.devices.steps import BINDINGS, DevicesCheckStep, UnbindStep, undo_rebind
from liveupd.errors import Failed, InvalidArgument
from liveupd.hooks.discovery import effective_hooks
from liveupd.transition.context import read_log
from liveupd.transition.journal import Journal
from liveupd.transition.phases import ExecMode
from liveupd.transition.undo import RebindUndo
from tests.conftest import HookFactory
from tests.devices.fakes import (
    ETH0,
    MAC,
    NIC,
    VIRTIO_BLK,
    VIRTIO_NET,
    FakeDevices,
    context,
    machine_devices,
    prepare,
    run_step,
)

NET_AND_NIC = """
[devices]
unbind = [{ subsystem = "net" }, { pci-class = "0x02" }]
"""


def test_records_then_links_down_then_unbinds_children_first(
    write_config: Callable[[str], Config],
) -> None:
    config = write_config(NET_AND_NIC)
    devices = FakeDevices(holders={ETH0: ["sshd (pid 42)"]})
    ctx = context(config, devices)
    record = run_step(UnbindStep(), ctx)

    assert devices.ops == [("link-down", "eth0"), ("unbind", VIRTIO_NET), ("unbind", NIC)]
    assert isinstance(record, RebindUndo)
    assert [b.sys_path for b in record.bindings] == [VIRTIO_NET, NIC]
    assert record.bindings[0].net == (NetInterface("eth0", MAC, True),)
    # The records reach the journal (once: as the undo record), and whoever holds the
    # device is named.
    (entry,) = Journal.load(ctx.journal.path).steps()
    assert entry.undo == record
    assert set(json.loads((ctx.dir / "journal.json").read_text().splitlines()[1])) == {
        "event",
        "at",
        "steps",
    }
    events = {e["event"]: e for e in read_log(ctx.dir)}
    assert events["devices.recorded"]["driver"] in ("virtio_net", "virtio-pci")
    assert events["devices.in-use"]["holders"] == "sshd (pid 42)"
    # One enumeration (it is slow), of only the subsystems the selectors can match.
    assert devices.enumerations == [frozenset({"net", "pci"})]


def test_hooks_requests_are_unbound_too(
    write_config: Callable[[str], Config], make_hook: HookFactory, hook_dirs: object
) -> None:
    config = write_config('[devices]\nunbind = [{ driver = "nothing-has-this" }]\n')
    make_hook("30-nic", "unbind", None, extra='unbind = [{ pci-class = "0x02" }]')
    hooks = tuple(effective_hooks(config.hook_dirs))
    devices = FakeDevices()
    run_step(UnbindStep(hooks), context(config, devices))
    assert ("unbind", NIC) in devices.ops


def test_root_device_refused_before_anything_changes(
    write_config: Callable[[str], Config],
) -> None:
    config = write_config('[devices]\nunbind = [{ subsystem = "net" }, { subsystem = "block" }]\n')
    devices = FakeDevices()
    ctx = context(config, devices)
    with pytest.raises(InvalidArgument, match=f"refusing to unbind {VIRTIO_BLK}"):
        asyncio.run(DevicesCheckStep().apply(ctx))
    with pytest.raises(InvalidArgument):
        UnbindStep().prepare(ctx)
    assert devices.ops == []  # no link set down, nothing unbound
    assert devices.unbound == set()


def test_failure_binds_back_in_reverse_order_and_brings_links_up(
    write_config: Callable[[str], Config],
) -> None:
    config = write_config(NET_AND_NIC)
    devices = FakeDevices(fail={("unbind", NIC): errno.EBUSY})
    ctx = context(config, devices)
    step = UnbindStep()
    prepare(step, ctx)
    with pytest.raises(Failed) as e:
        asyncio.run(step.apply(ctx))
    assert devices.ops == [
        ("link-down", "eth0"),
        ("unbind", VIRTIO_NET),
        ("unbind", NIC),  # fails: EBUSY
        ("bind", VIRTIO_NET),  # NIC is still bound: only virtio0 needs binding
        ("link-up", "eth0"),
    ]
    assert f"unbinding {NIC} from driver virtio-pci failed" in e.value.message
    assert "bound again" in e.value.message
    assert devices.unbound == set() and devices.down == set()


def test_undo_rebinds_parents_first_then_links_up(write_config: Callable[[str], Config]) -> None:
    config = write_config(NET_AND_NIC)
    devices = FakeDevices()
    ctx = context(config, devices)
    record = run_step(UnbindStep(), ctx)
    devices.ops.clear()
    assert isinstance(record, RebindUndo)
    asyncio.run(undo_rebind(ctx, record))
    assert devices.ops == [("bind", NIC), ("bind", VIRTIO_NET), ("link-up", "eth0")]
    # Undo again (a crash during the undo): idempotent, binds nothing twice.
    devices.ops.clear()
    asyncio.run(undo_rebind(ctx, record))
    assert devices.ops == [("link-up", "eth0")]


def test_undo_failure_names_the_device_and_the_fix(write_config: Callable[[str], Config]) -> None:
    config = write_config("")
    devices = FakeDevices(fail={("bind", VIRTIO_NET): errno.ENODEV})
    devices.unbound.add(VIRTIO_NET)
    b = Binding(VIRTIO_NET, "virtio", "virtio0", "virtio_net")
    with pytest.raises(Failed) as e:
        asyncio.run(undo_rebind(context(config, devices, dry_run=False), RebindUndo(bindings=(b,))))
    assert f"{VIRTIO_NET} -> virtio_net" in e.value.message
    assert "/sys/bus/SUBSYSTEM/drivers/DRIVER/bind" in e.value.message
    # A simulated machine (dry run) is not told to write to a real /sys.
    devices.unbound.add(VIRTIO_NET)
    with pytest.raises(Failed) as e:
        asyncio.run(
            undo_rebind(context(config, devices, transition_id="T2"), RebindUndo(bindings=(b,)))
        )
    assert "/sys/bus" not in e.value.message
    assert "the machine is simulated" in e.value.message


def test_link_up_finds_a_renamed_interface_by_mac(write_config: Callable[[str], Config]) -> None:
    config = write_config("")
    devices = FakeDevices()
    b = Binding(
        VIRTIO_NET, "virtio", "virtio0", "virtio_net", net=(NetInterface("ens3", MAC, True),)
    )
    asyncio.run(undo_rebind(context(config, devices), RebindUndo(bindings=(b,))))
    assert devices.ops == [("link-up", "eth0")]  # eth0 carries the recorded MAC now


def test_systemd_mode_only_records(write_config: Callable[[str], Config]) -> None:
    config = write_config(NET_AND_NIC)
    devices = FakeDevices()
    ctx = context(config, devices, mode=ExecMode.SYSTEMD)
    assert run_step(UnbindStep(), ctx) is None  # nothing to undo: nothing is unbound here
    assert devices.ops == []
    # The checkpoint step gets the bindings: the shutdown helper unbinds from the record.
    assert [b.sys_path for b in ctx.facts.get_or(BINDINGS, ())] == [VIRTIO_NET, NIC]


def test_failure_after_two_unbinds_binds_parents_before_children(
    write_config: Callable[[str], Config],
) -> None:
    nic2 = "/sys/devices/pci0000:00/0000:00:06.0"
    extra = Device(
        nic2,
        "pci",
        "0000:00:06.0",
        "e1000e",
        parent="/sys/devices/pci0000:00",
        pci_class="0x020000",
    )
    config = write_config(NET_AND_NIC)
    devices = FakeDevices([*machine_devices(), extra], fail={("unbind", nic2): errno.EIO})
    ctx = context(config, devices)
    step = UnbindStep()
    prepare(step, ctx)
    with pytest.raises(Failed, match=r"0000:00:06\.0 from driver e1000e failed"):
        asyncio.run(step.apply(ctx))
    assert devices.ops == [
        ("link-down", "eth0"),
        ("unbind", VIRTIO_NET),
        ("unbind", NIC),
        ("unbind", nic2),  # fails
        ("bind", NIC),  # the parent first ...
        ("bind", VIRTIO_NET),  # ... then the child, then its link
        ("link-up", "eth0"),
    ]
