"""History reports each device by what verification found about it (case 5).

Whether a device was bound again used to be decided by searching the problems'
messages for its sysfs path: a problem of a child device (whose path starts
with its parent's) marked the parent as not bound again too.  Problems carry
the device's ``sys_path`` now.
"""

from __future__ import annotations

import time

from liveupd import schema
from liveupd.backends.base import Binding, Device, NetInterface
from liveupd.config import Config
from liveupd.transition.history import history
from liveupd.transition.journal import Journal
from liveupd.transition.phases import TransitionState
from liveupd.transition.records import Check, Verification
from liveupd.verify.checks import device_problems
from tests.devices.fakes import MAC, NIC, PCI, VIRTIO_NET, checkpoint_record, write_pending

PARENT = Binding(NIC, "pci", "0000:00:03.0", "virtio-pci")
CHILD = Binding(
    VIRTIO_NET, "virtio", "virtio0", "virtio_net", net=(NetInterface("eth0", MAC, True),)
)


def verified(config: Config, problems: list[object]) -> None:
    write_pending(config.state_dir, checkpoint_record("T1", bindings=(PARENT, CHILD)))
    journal = Journal.create(config.state_dir, "T1", boot_id="b1", old_release="r")
    now = time.time()
    verification = schema.load(
        Verification,
        {
            "started": now,
            "finished": now,
            "running_release": "r2",
            "boot_id": "b2",
            "problems": problems,
        },
    )
    journal.set_state(TransitionState.RECOVERY_FAILED, verification=verification)


def test_a_child_devices_problem_does_not_mark_its_parent(config: Config) -> None:
    # The NIC came back with its driver; its virtio child did not (nor its interface).
    now = [
        Device(PCI, "", "pci0000:00", None),
        Device(NIC, "pci", "0000:00:03.0", "virtio-pci", parent=PCI),
        Device(VIRTIO_NET, "virtio", "virtio0", None, parent=NIC),
    ]
    problems = device_problems([PARENT, CHILD], now)
    assert {p.check for p in problems} == {Check.DEVICE, Check.INTERFACE}
    assert all(p.sys_path == VIRTIO_NET for p in problems)
    assert all(NIC in p.message for p in problems)  # the text names the parent's path too
    verified(config, [schema.dump(p) for p in problems])
    (entry,) = history(config.state_dir)
    bound = {d["sys_path"]: d["bound_again"] for d in entry["devices"]}
    assert bound == {NIC: True, VIRTIO_NET: False}


def test_devices_are_unknown_until_verified_and_back_when_no_problem(config: Config) -> None:
    verified(config, [])
    (entry,) = history(config.state_dir)
    assert [d["bound_again"] for d in entry["devices"]] == [True, True]
