"""End-to-end: real live updates between two real Debian kernels (issue scenarios 1, 2).

One guest, one QEMU process, two real jumps:
    A --busctl (as `make demo`), direct--> B --liveupctl, systemd--> A
After each jump, read back from the guest: the new kernel runs with a new boot
id; liveupd-verify recorded ``completed``; the virtio-net device was unbound
before the jump (transition log) and is bound again with the same MAC; a file
written through the page cache just before Execute is intact; no ext4 journal
needed replaying on either disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.vm import demo
from tests.vm import liveupd_guest as g
from tests.vm.guest_vm import GuestVM
from tests.vm.image import GuestImage
from tests.vm.qemu import NIC_MAC, NIC_PCI_ADDRESS
from tests.vm.shared import module_guest


@pytest.fixture(scope="module")
def guest(vm_image: GuestImage, request: pytest.FixtureRequest) -> Iterator[GuestVM]:
    with module_guest(vm_image, request) as vm:
        g.install(vm)
        yield vm


def assert_landed(vm: GuestVM, old_boot: str, target: str, payload: str) -> dict[str, Any]:
    """The guarantees every successful transition gives; returns its history entry."""
    info = vm.boot_info()
    assert info.release == target == vm.run("uname -r").stdout.strip()
    assert info.boot_id != old_boot
    assert g.wait_verified(vm) == "active", vm.run(
        "journalctl -b -u liveupd-verify --no-pager -o cat", check=False
    ).stdout
    entry = g.history(vm, limit=1)[0]
    assert entry["state"] == "completed", entry
    assert entry["new_release"] == target
    tid = str(entry["id"])
    assert f"liveupd.transition={tid}" in vm.read_text("/proc/cmdline").split()
    # The data written through the page cache just before Execute survived ...
    assert g.payload_sum(vm) == payload
    # ... and no filesystem needed its journal replayed: both were clean.
    mounts, recoveries = g.journal_recovery_lines(vm)
    assert any("(vdb)" in m for m in mounts) and any("(vda)" in m for m in mounts), mounts
    assert recoveries == []
    # The NIC is bound to its driver again, with the same MAC.
    assert g.nic_is_back(vm), g.nic(vm)
    return entry


def assert_nic_unbound_before_jump(vm: GuestVM, tid: str, mode: str) -> None:
    log = g.transition_log(vm, tid)
    events = [e["event"] for e in log]
    recorded = [e for e in log if e["event"] == "devices.recorded"]
    assert any(NIC_PCI_ADDRESS in e["sys_path"] for e in recorded), recorded
    assert any(NIC_MAC in str(e.get("interfaces", "")) for e in recorded), recorded
    if mode == "direct":
        unbound = [e for e in log if e["event"] == "devices.unbound"]
        assert any(NIC_PCI_ADDRESS in e["sys_path"] for e in unbound), unbound
        assert events.index("devices.unbound") < events.index("checkpoint.written")
    else:
        # The system-shutdown helper did the last unbind, after every service had
        # stopped; systemd-shutdown's output goes to the console.
        console = vm.serial_log.read_text(errors="replace")
        lines = [x for x in console.splitlines() if "event=shutdown.unbound" in x]
        assert any(NIC_PCI_ADDRESS in x for x in lines), console[-3000:]


def test_busctl_direct_a_to_b_as_the_demo_does(guest: GuestVM, vm_image: GuestImage) -> None:
    """Plain busctl on the system bus: the path `make demo` shows a new user."""
    vm = guest
    a, b = vm_image.kernel_a.release, vm_image.kernel_b.release
    assert g.nic_is_back(vm)
    old = vm.boot_info()
    update = demo.live_update(vm, vm_image.kernel_b.guest_vmlinuz)
    assert update.payload_intact
    entry = assert_landed(vm, old.boot_id, b, str(g.payload_sum(vm)))
    assert entry["old_release"] == a and entry["mode"] == "direct"
    assert_nic_unbound_before_jump(vm, str(entry["id"]), "direct")
    assert entry["id"] == update.transition
    assert update.report["id"] == update.transition
    assert update.report["state"] == "completed"
    text = demo.render(update)
    assert f"Transition {update.transition}: completed" in text
    assert "bound again" in text and "NOT bound again" not in text
    assert "Filesystems frozen (in order): /data, /" in text
    assert "Data written just before Execute: intact" in text
    # Phases in the order they ran, each on its side of the jump; hooks timed on both.
    old_side, new_side = text.split("Phases on the new kernel:")
    order = [
        line.split()[0]
        for line in old_side.split("Phases on the old kernel")[1].splitlines()[1:]
        if line.strip()
    ]
    assert order == ["check", "load", "quiesce", "unbind", "checkpoint", "flush"], text
    assert "verify" in new_side.split("Hooks:")[0] and "restore" in new_side.split("Hooks:")[0]
    hook_lines = [
        line for line in new_side.split("Hooks:")[1].split("Devices")[0].splitlines() if line
    ]
    assert any("50-network-verify" in line for line in hook_lines), text
    assert all(line.endswith(" ms") for line in hook_lines), text


def test_liveupctl_systemd_mode_b_to_a(guest: GuestVM, vm_image: GuestImage) -> None:
    vm = guest
    a, b = vm_image.kernel_a.release, vm_image.kernel_b.release
    staged = vm.run(["liveupctl", "stage", a], timeout=300)
    assert f"Staged {a}" in staged.stdout
    assert g.kexec_loaded(vm)
    old = vm.boot_info()
    payload = g.write_payload(vm)
    vm.spawn("liveupctl exec --mode systemd >/run/liveupctl-exec.log 2>&1")
    vm.wait_for_new_boot(old.boot_id)
    entry = assert_landed(vm, old.boot_id, a, payload)
    assert entry["old_release"] == b and entry["mode"] == "systemd"
    assert_nic_unbound_before_jump(vm, str(entry["id"]), "systemd")
