"""Devices, storage and verification on a real kernel, inside a guest.

* SysfsDevices unbinds the virtio-net device (at the virtio and at the PCI
  level): its interface vanishes, and comes back with the same MAC on rebind; the root
  disk is refused; a process holding the data disk open is named.
* RealStorage freezes /data: a writer blocks in the kernel until the thaw,
  then finishes; a second freeze is EBUSY, tmpfs cannot be frozen.
* `liveupd --verify` on a guest booted with liveupd.transition=ID and a
  constructed pending record: completed (real udev settle, real device checks,
  the shipped network verify/restore hooks), recovery-failed for a device that
  is not what was recorded, superseded for a record the boot does not name.

Whole transitions through the installed daemon are in test_live_update.py.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.vm.guest_vm import GuestVM
from tests.vm.image import GuestImage
from tests.vm.shared import module_guest

MAC = "52:54:00:12:34:56"
NIC = "/sys/devices/pci0000:00/0000:00:03.0"
DISK = "/sys/devices/pci0000:00/0000:00:04.0"

DEVICES_PROBE = r"""
import json, os, time
from liveupd import schema
from liveupd.config.model import DeviceSelector
from liveupd.devices import link
from liveupd.devices.select import plan_unbind, subsystems_needed
from liveupd.devices.machine import SysfsDevices
from liveupd.errors import InvalidArgument

dev = SysfsDevices()
root = dev.root_devices()
out = {"root": sorted(root)}

def ifaces():
    return {n.ifname: n.mac for n in dev.sysfs.net_interfaces()}

def name_for(mac):
    return next((n for n, m in ifaces().items() if m == mac), None)

out["before"] = ifaces()
for label, selector in [("virtio", {"subsystem": "net"}), ("pci", {"pci-class": "0x02"})]:
    sel = [schema.load(DeviceSelector, selector)]
    plan = plan_unbind(dev.devices(), sel, [], root)
    rec = {"bindings": [b.to_json() for b in plan.bindings]}
    # The daemon enumerates only what the selectors can match: the same plan, fewer devices.
    needed = subsystems_needed(sel, [])
    rec["same_plan_from_needed"] = plan_unbind(dev.devices(needed), sel, [], root) == plan
    rec["devices_all_needed"] = [len(dev.devices()), len(dev.devices(needed))]
    (b,) = plan.bindings
    for n in b.net:
        if n.up:
            dev.set_link(n.ifname, False)
    rec["link_up_after_down"] = [link.is_up(n.ifname) for n in b.net]
    t = time.monotonic()
    dev.unbind(b, 30)
    rec["unbind_s"] = time.monotonic() - t
    rec["driver_after_unbind"] = dev.bound_driver(b.sys_path)
    rec["after_unbind"] = ifaces()
    t = time.monotonic()
    dev.bind(b, 30)
    rec["bind_s"] = time.monotonic() - t
    rec["driver_after_bind"] = dev.bound_driver(b.sys_path)
    rec["after_bind"] = ifaces()
    for n in b.net:
        if n.up:
            dev.set_link(name_for(n.mac) or n.ifname, True)
    rec["link_up_after_bind"] = [link.is_up(name_for(n.mac) or n.ifname) for n in b.net]
    out[label] = rec

try:
    plan_unbind(dev.devices(), [DeviceSelector(subsystem="block")], [], root)
    out["root_refusal"] = None
except InvalidArgument as e:
    out["root_refusal"] = e.message

vdb = next(d for d in dev.devices() if d.subsystem == "block" and d.name == "vdb")
with open("/dev/vdb", "rb"):
    out["vdb_devnodes"] = list(vdb.devnodes)
    out["vdb_holders"] = dev.holders(vdb.sys_path)
    out["vdb_controller_holders"] = dev.holders(vdb.parent)  # virtio device: vdb is below it
out["pid"] = os.getpid()
print(json.dumps(out))
"""

STORAGE_PROBE = r"""
import dataclasses, errno, json, os, subprocess, time
from liveupd.storage.freeze import RealStorage
from liveupd.storage.plan import plan_freeze

st = RealStorage()
mounts = {m.mountpoint: m for m in st.mounts()}
out = {"data": dataclasses.asdict(mounts["/data"]), "root": dataclasses.asdict(mounts["/"])}
plan = plan_freeze(st.mounts(), "auto", "/var/lib/liveupd")
out["plan"] = {"freeze": plan.freeze, "state_mount": plan.state_mount, "skipped": plan.skipped}
st.sync()
st.syncfs("/data")
if os.path.exists("/data/probe"):
    os.unlink("/data/probe")

def state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]

st.freeze("/data")
try:
    try:
        st.freeze("/data")
        out["second_freeze"] = None
    except OSError as e:
        out["second_freeze"] = errno.errorcode[e.errno]
    writer = subprocess.Popen(["sh", "-c", "echo written > /data/probe"])
    deadline = time.monotonic() + 60
    while writer.poll() is None and state(writer.pid) != "D" and time.monotonic() < deadline:
        time.sleep(0.01)
    out["writer_exited_while_frozen"] = writer.poll()
    out["writer_state_while_frozen"] = state(writer.pid) if writer.poll() is None else None
    out["probe_while_frozen"] = os.path.exists("/data/probe")
finally:
    st.thaw("/data")
out["writer_rc"] = writer.wait(timeout=60)
with open("/data/probe") as f:
    out["probe_after_thaw"] = f.read().strip()
st.thaw("/data")  # not frozen: no error
try:
    st.freeze("/run")
    out["tmpfs_freeze"] = None
    st.thaw("/run")
except OSError as e:
    out["tmpfs_freeze"] = e.errno
print(json.dumps(out))
"""

# Builds a pending transition as the old kernel would have left it, for the running boot.
PENDING_BUILDER = r"""
import dataclasses, json, os, sys, time
from pathlib import Path
from liveupd.backends.system import ProcSystem
from liveupd.config.model import DeviceSelector
from liveupd.devices.select import plan_unbind
from liveupd.devices.machine import SysfsDevices
from liveupd.fsio import atomic_write_json
from liveupd.transition.checkpoint import Checkpoint, OldKernel, pending_path, write_checkpoint
from liveupd.transition.context import Target
from liveupd.transition.journal import Journal
from liveupd.transition.phases import TransitionState

state_dir, tid, spoil = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
system = ProcSystem()
release = system.release()
dev = SysfsDevices()
plan = plan_unbind(dev.devices(), [DeviceSelector(subsystem="net")], [], dev.root_devices())
bindings = plan.bindings
if spoil == "driver":
    bindings = tuple(dataclasses.replace(b, driver="e1000e") for b in bindings)
target = Target(release=release, kernel_path=f"/boot/vmlinuz-{release}",
                initrd_path=f"/boot/initrd.img-{release}", cmdline=system.cmdline(),
                sha256="0" * 64)
journal = Journal.create(state_dir, tid, boot_id="00000000-0000-4000-8000-00000000dead",
                         old_release="6.1.0-0-old", target=target.to_json(), mode="direct")
journal.set_state(TransitionState.RUNNING)
record = Checkpoint(
    id=tid, written=time.time() - 40, mode="direct",
    old=OldKernel("6.1.0-0-old", "00000000-0000-4000-8000-00000000dead", "root=/dev/vda ro"),
    new=target, bindings=bindings, freeze=("/data", "/"),
)
write_checkpoint(journal.dir, record)
atomic_write_json(pending_path(state_dir), {"id": tid})
stamp = time.clock_gettime_ns(time.CLOCK_REALTIME) - 30 * 10**9
(journal.dir / "exec-stamp").write_text(f"{stamp}\n")
# What the shipped 20-network quiesce hook saved on the old kernel.
saved = journal.dir / "hooks" / "20-network"
saved.mkdir(parents=True)
(saved / "interfaces").write_text("".join(f"{n.ifname} {n.mac}\n" for b in bindings for n in b.net))
(saved / "default-route").write_text("yes\n")
print(json.dumps({"bindings": [b.to_json() for b in bindings]}))
"""

TRANSITION = r"""
import asyncio, json, sys
from pathlib import Path
from liveupd.backends.real import make
from liveupd.config.load import load_config
from liveupd.transition.context import StageRequest
from liveupd.assembly import make_engine
from liveupd.transition.phases import ExecMode

async def main():
    config = load_config(Path(sys.argv[1]))
    engine = make_engine(config, make(config), events=lambda e: print(e, flush=True))
    t = await engine.stage(StageRequest(kernel=sys.argv[2]))
    print("staged", t.id, flush=True)
    await engine.start_execute(t, ExecMode.DIRECT)
    print("still here:", t.state, t.error and t.error.message, flush=True)

asyncio.run(main())
"""


def guest_json(vm: GuestVM, script: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    path = "/root/probe.py"
    vm.write_file(path, script, mode=0o700)
    result = vm.run(["python3", path, *args], timeout=timeout)
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def verify(vm: GuestVM, state_dir: str, *, check: bool = True) -> int:
    conf = f"/etc/liveupd-vmtest-{state_dir.rsplit('/', 1)[1]}.conf"
    vm.write_file(conf, f'[daemon]\nstate-dir = "{state_dir}"\n[verify]\nsettle-timeout = 60\n')
    result = vm.run(["liveupd", "--verify", "--config", conf], timeout=600, check=False)
    print(f"\n[verify {state_dir}] rc={result.rc}\n{result.stderr[-3000:]}")
    if check:
        assert result.rc == 0, result.stderr
    return int(result.rc or 0)


def journal(vm: GuestVM, state_dir: str, tid: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(vm.read_text(f"{state_dir}/transitions/{tid}/journal.json"))
    return data


@pytest.fixture(scope="module")
def guest(vm_image: GuestImage, request: pytest.FixtureRequest) -> Iterator[GuestVM]:
    """Kernel A, booted as if by transition VMT1's kexec; the project installed."""
    with module_guest(vm_image, request, append_extra="liveupd.transition=VMT1") as vm:
        vm.install_project()
        yield vm


def test_unbind_and_rebind_the_nic(guest: GuestVM) -> None:
    out = guest_json(guest, DEVICES_PROBE)
    print(f"\n[devices] {json.dumps(out, indent=1)}")
    # udev names it (enp0s3 on this image); whatever the name, the MAC is the NIC's.
    ((ifname, mac),) = out["before"].items()
    assert mac == MAC
    assert DISK in out["root"] and NIC not in out["root"]
    for label, sys_path, driver in [
        ("virtio", f"{NIC}/virtio0", "virtio_net"),
        ("pci", NIC, "virtio-pci"),
    ]:
        rec = out[label]
        (b,) = rec["bindings"]
        assert (b["sys_path"], b["driver"]) == (sys_path, driver)
        assert b["net"] == [{"ifname": ifname, "mac": MAC, "up": True}]
        assert rec["link_up_after_down"] == [False]
        assert rec["driver_after_unbind"] is None
        assert rec["after_unbind"] == {}  # the interface vanished with its driver
        assert rec["driver_after_bind"] == driver
        # Back with the same MAC, and already renamed by udev: the bind event was udev's.
        assert rec["after_bind"] == {ifname: MAC}
        assert rec["link_up_after_bind"] == [True]
        assert rec["unbind_s"] < 30 and rec["bind_s"] < 30
        assert rec["same_plan_from_needed"], rec
        every, needed = rec["devices_all_needed"]
        assert needed < every, rec
    assert out["root_refusal"] is not None
    assert f"{DISK}/virtio1" in out["root_refusal"] and "root filesystem" in out["root_refusal"]
    assert "/dev/vdb" in out["vdb_devnodes"]
    assert f"python3 (pid {out['pid']})" in out["vdb_holders"]
    assert f"python3 (pid {out['pid']})" in out["vdb_controller_holders"]


def test_freeze_blocks_writers_until_thaw(guest: GuestVM) -> None:
    out = guest_json(guest, STORAGE_PROBE)
    print(f"\n[storage] {json.dumps(out, indent=1)}")
    assert out["data"]["fstype"] == "ext4" and out["data"]["block_backed"]
    assert out["plan"]["freeze"][-1] == "/" and out["plan"]["state_mount"] == "/"
    assert "/data" in out["plan"]["freeze"]
    assert out["second_freeze"] == "EBUSY"
    assert out["writer_exited_while_frozen"] is None
    assert out["writer_state_while_frozen"] == "D"  # blocked in the kernel
    assert out["probe_while_frozen"] is False
    assert out["writer_rc"] == 0 and out["probe_after_thaw"] == "written"
    assert out["tmpfs_freeze"] == errno.EOPNOTSUPP  # ENOTSUP: the same number


def test_verification_of_a_constructed_pending_record(guest: GuestVM) -> None:
    # Completed: this boot names VMT1, runs its target release, devices are back.
    built = guest_json(guest, PENDING_BUILDER, "/var/lib/liveupd-ok", "VMT1", "")
    assert built["bindings"][0]["net"][0]["mac"] == MAC
    verify(guest, "/var/lib/liveupd-ok")
    j = journal(guest, "/var/lib/liveupd-ok", "VMT1")
    v = j["verification"]
    print(f"\n[verify ok] {json.dumps(v, indent=1)}")
    assert j["state"] == "completed", v
    assert v["problems"] == []
    assert 30 <= v["downtime"]["downtime_s"] < 600
    assert v["downtime"]["kernel_to_verified_s"] > 0
    hooks = {(s["key"], s["phase"], s["status"]) for s in j["steps"]}
    assert ("hook:50-network-verify", "verify", "done") in hooks
    assert ("hook:20-network-restore", "restore", "done") in hooks
    assert not guest.run("test -e /var/lib/liveupd-ok/pending", check=False).ok
    # Idempotent: the daemon's start would find nothing left.
    verify(guest, "/var/lib/liveupd-ok")
    assert journal(guest, "/var/lib/liveupd-ok", "VMT1") == j

    # Recovery-failed: the record says the NIC had another driver.
    guest_json(guest, PENDING_BUILDER, "/var/lib/liveupd-bad", "VMT1", "driver")
    assert verify(guest, "/var/lib/liveupd-bad", check=False) == 1
    j = journal(guest, "/var/lib/liveupd-bad", "VMT1")
    assert j["state"] == "recovery-failed"
    (problem,) = j["verification"]["problems"]
    assert problem["check"] == "device"
    assert "bound to virtio_net, expected e1000e" in problem["message"]

    # Superseded: a record this boot does not name.
    guest_json(guest, PENDING_BUILDER, "/var/lib/liveupd-other", "VMT9", "")
    verify(guest, "/var/lib/liveupd-other")
    j = journal(guest, "/var/lib/liveupd-other", "VMT9")
    assert j["state"] == "superseded"
    assert "no liveupd.transition=VMT9" in j["verification"]["superseded"]
