"""In-memory machines for device, storage and verification tests: they record every call."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from liveupd.backends import dryrun
from liveupd.backends.base import (
    Backends,
    Binding,
    Device,
    Mount,
    NetInterface,
    VolumeScan,
    WatchdogRecord,
)
from liveupd.config import Config
from liveupd.devices.select import restrict
from liveupd.fsio import atomic_write_json
from liveupd.transition.checkpoint import Checkpoint, OldKernel, pending_path, write_checkpoint
from liveupd.transition.context import Target, TransitionContext
from liveupd.transition.events import Event
from liveupd.transition.journal import Journal, transitions_dir
from liveupd.transition.phases import ExecMode
from liveupd.transition.steps import Step
from liveupd.transition.undo import AnyUndo

PCI = "/sys/devices/pci0000:00"
NIC = f"{PCI}/0000:00:03.0"
VIRTIO_NET = f"{NIC}/virtio0"
ETH0 = f"{VIRTIO_NET}/net/eth0"
DISK_CTRL = f"{PCI}/0000:00:04.0"
VIRTIO_BLK = f"{DISK_CTRL}/virtio1"
VDA = f"{VIRTIO_BLK}/block/vda"
MAC = "52:54:00:12:34:56"


def machine_devices() -> list[Device]:
    """A small VM: a virtio NIC (eth0) and the virtio disk holding the root filesystem."""
    return [
        Device(PCI, "", "pci0000:00", None),
        Device(NIC, "pci", "0000:00:03.0", "virtio-pci", parent=PCI, pci_class="0x020000"),
        Device(VIRTIO_NET, "virtio", "virtio0", "virtio_net", parent=NIC),
        Device(
            ETH0,
            "net",
            "eth0",
            None,
            parent=VIRTIO_NET,
            properties={"ID_NET_DRIVER": "virtio_net", "ID_PATH": "pci-0000:00:03.0"},
            net=NetInterface("eth0", MAC, True),
        ),
        Device(DISK_CTRL, "pci", "0000:00:04.0", "virtio-pci", parent=PCI, pci_class="0x010000"),
        Device(VIRTIO_BLK, "virtio", "virtio1", "virtio_blk", parent=DISK_CTRL),
        Device(VDA, "block", "vda", None, parent=VIRTIO_BLK, devnodes=("/dev/vda",)),
    ]


ROOT = {VDA, VIRTIO_BLK, DISK_CTRL, PCI}


class FakeDevices:
    """A DeviceBackend over a list of devices; ``ops`` records (op, argument) in order."""

    def __init__(
        self,
        devices: Iterable[Device] | None = None,
        *,
        root: Iterable[str] = ROOT,
        ops: list[tuple[str, str]] | None = None,
        fail: dict[tuple[str, str], int] | None = None,
        holders: dict[str, list[str]] | None = None,
        settles: bool = True,
    ) -> None:
        self.all = list(devices if devices is not None else machine_devices())
        self.root = set(root)
        self.ops = ops if ops is not None else []
        self.fail = fail or {}
        self._holders = holders or {}
        self.settles = settles
        self.unbound: set[str] = set()
        self.down: set[str] = set()
        self.enumerations: list[frozenset[str] | None] = []  # the subsystems asked for

    def _maybe_fail(self, op: str, key: str) -> None:
        code = self.fail.get((op, key))
        if code:
            raise OSError(code, f"{op} {key}: {os.strerror(code)}")

    def devices(self, subsystems: frozenset[str] | None = None) -> list[Device]:
        self.enumerations.append(subsystems)
        return restrict(self._devices(), subsystems)

    def _devices(self) -> list[Device]:
        out = []
        for d in self.all:
            if any(d.sys_path.startswith(u + "/") for u in self.unbound) and d.net is not None:
                continue
            now = replace(d, driver=None) if d.sys_path in self.unbound else d
            if now.net is not None and now.net.ifname in self.down:
                now = replace(now, net=replace(now.net, up=False))
            out.append(now)
        return out

    def root_devices(self) -> set[str]:
        return set(self.root)

    def holders(self, sys_path: str) -> list[str]:
        found: list[str] = []
        for path, names in sorted(self._holders.items()):
            if path == sys_path or path.startswith(sys_path + "/"):
                found += [n for n in names if n not in found]
        return found

    def set_link(self, ifname: str, up: bool) -> None:
        self.ops.append(("link-up" if up else "link-down", ifname))
        self._maybe_fail("set_link", ifname)
        (self.down.discard if up else self.down.add)(ifname)

    def unbind(self, binding: Binding, timeout: float) -> None:
        self.ops.append(("unbind", binding.sys_path))
        self._maybe_fail("unbind", binding.sys_path)
        if binding.sys_path in self.unbound:
            raise OSError(errno.ENODEV, "not bound")
        self.unbound.add(binding.sys_path)

    def bind(self, binding: Binding, timeout: float) -> None:
        self.ops.append(("bind", binding.sys_path))
        self._maybe_fail("bind", binding.sys_path)
        self.unbound.discard(binding.sys_path)

    def bound_driver(self, sys_path: str) -> str | None:
        return next((d.driver for d in self._devices() if d.sys_path == sys_path), None)

    def settle(self, timeout: float) -> bool:
        self.ops.append(("settle", f"{timeout:g}"))
        return self.settles


def mounts() -> list[Mount]:
    return [
        Mount("/", "ext4", "/dev/vda", True, True, "254:0"),
        Mount("/data", "ext4", "/dev/vdb", True, True, "254:16"),
        Mount("/srv/cache", "xfs", "/dev/vdc", True, True, "254:32"),
        Mount("/run", "tmpfs", "tmpfs", True, False, "0:25"),
        Mount("/proc", "proc", "proc", True, False, "0:22"),
        Mount("/merged", "overlay", "overlay", True, False, "0:40"),
    ]


class FakeStorage:
    """A StorageBackend; ``frozen`` is what is frozen now; ``writes_while_frozen`` is checked."""

    def __init__(
        self,
        mount_list: Iterable[Mount] | None = None,
        *,
        ops: list[tuple[str, str]] | None = None,
        fail: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.mount_list = list(mount_list if mount_list is not None else mounts())
        self.ops = ops if ops is not None else []
        self.fail = fail or {}
        self.frozen: list[str] = []

    def _maybe_fail(self, op: str, key: str) -> None:
        code = self.fail.get((op, key))
        if code:
            raise OSError(code, os.strerror(code))

    def mounts(self) -> list[Mount]:
        return list(self.mount_list)

    def sync(self) -> None:
        self.ops.append(("sync", ""))

    def syncfs(self, mountpoint: str) -> None:
        self.ops.append(("syncfs", mountpoint))
        self._maybe_fail("syncfs", mountpoint)

    def freeze(self, mountpoint: str) -> None:
        self.ops.append(("freeze", mountpoint))
        self._maybe_fail("freeze", mountpoint)
        if mountpoint in self.frozen:
            raise OSError(errno.EBUSY, "already frozen")
        self.frozen.append(mountpoint)

    def thaw(self, mountpoint: str) -> None:
        self.ops.append(("thaw", mountpoint))
        self._maybe_fail("thaw", mountpoint)
        if mountpoint in self.frozen:
            self.frozen.remove(mountpoint)

    async def encrypted_volumes(self) -> VolumeScan:
        return VolumeScan(())


TARGET = Target(
    release="6.1.0-56-cloud-amd64",
    kernel_path="/boot/vmlinuz-6.1.0-56-cloud-amd64",
    initrd_path="/boot/initrd.img-6.1.0-56-cloud-amd64",
    cmdline="root=/dev/vda rw liveupd.transition=T1",
    sha256="0" * 64,
)


def backends(
    state_dir: Path,
    devices: FakeDevices | None = None,
    storage: FakeStorage | None = None,
    machine_file: Path | None = None,
    *,
    dry_run: bool = True,
) -> Backends:
    """Dry-run kexec and system facts, with the given device and storage fakes.

    ``dry_run=False`` labels the fakes as a real machine (for the advice its errors give);
    kexec stays the dry-run one.
    """
    sim = dryrun.make(state_dir, machine_file)
    return Backends(
        kexec=sim.kexec,
        devices=devices if devices is not None else sim.devices,
        storage=storage if storage is not None else sim.storage,
        system=sim.system,
        sessions=sim.sessions,
        dry_run=dry_run,
        watchdog=sim.watchdog,
        kdump=sim.kdump,
    )


def context(
    config: Config,
    devices: FakeDevices | None = None,
    storage: FakeStorage | None = None,
    *,
    mode: ExecMode = ExecMode.DIRECT,
    transition_id: str = "T1",
    events: list[Event] | None = None,
    dry_run: bool = True,
) -> TransitionContext:
    state_dir = config.state_dir
    journal = Journal.create(state_dir, transition_id, boot_id="boot-1", old_release="old")
    sink = events.append if events is not None else (lambda e: None)
    return TransitionContext(
        transition_id=transition_id,
        config=config,
        backends=backends(state_dir, devices, storage, dry_run=dry_run),
        journal=journal,
        events=sink,
        target=TARGET,
        mode=mode,
    )


def prepare(step: Step, ctx: TransitionContext) -> AnyUndo | None:
    """What the engine does before a step: prepare it and journal its undo record."""
    record = step.prepare(ctx)
    ctx.journal.step_started(step.key, step.phase, record)
    return record


def run_step(step: Step, ctx: TransitionContext) -> AnyUndo | None:
    """Prepare, journal and apply a step as the engine would (without its rollback)."""
    record = prepare(step, ctx)
    asyncio.run(step.apply(ctx))
    return record


# liveupd's own words on a new command line on the default dry-run machine (it has an
# i6300esb watchdog): panic= (the default [exec] panic-sec), the driver kept out.
OURS = "panic=10 modprobe.blacklist=i6300esb"


def checkpoint_record(
    transition_id: str = "T1",
    *,
    bindings: tuple[Binding, ...] = (),
    mode: str = "direct",
    old_boot_id: str = "00000000-0000-4000-8000-000000000001",
    old_kernel: str | None = "/boot/vmlinuz-6.1.0-55-cloud-amd64",
    dry_run: bool = False,
    target: Target = TARGET,
    watchdog: WatchdogRecord | None = None,
    crash_loaded: bool | None = None,
) -> Checkpoint:
    return Checkpoint(
        id=transition_id,
        written=1_700_000_000.0,
        mode=mode,
        old=OldKernel(
            release="6.1.0-55-cloud-amd64",
            boot_id=old_boot_id,
            cmdline="BOOT_IMAGE=/vmlinuz root=/dev/vda rw console=ttyS0",
            kernel_path=old_kernel,
            initrd_path=old_kernel.replace("vmlinuz", "initrd.img") if old_kernel else None,
        ),
        new=target,
        bindings=bindings,
        freeze=("/data", "/"),
        freeze_skipped=(("/run", "tmpfs cannot be frozen"),),
        hook_state_dirs={},
        dry_run=dry_run,
        watchdog=watchdog,
        crash_loaded=crash_loaded,
    )


def write_pending(state_dir: Path, record: Checkpoint) -> Path:
    """The transition's checkpoint and the pending pointer, as the checkpoint step writes them."""
    tdir = transitions_dir(state_dir) / record.id
    write_checkpoint(tdir, record)
    atomic_write_json(pending_path(state_dir), {"id": record.id})
    return tdir
