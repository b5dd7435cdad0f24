"""The devices that hold the root filesystem: never to be unbound.

From the root filesystem's block device number, through
``/sys/dev/block/MAJ:MIN``, to the device and everything it stands on: its
ancestors (partition, disk, controller, bus) and, for device-mapper or md
devices, the devices in its ``slaves`` directory, recursively.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from liveupd.devices.sysfs import Sysfs
from liveupd.storage.mounts import parse_mountinfo

DEVICES_TOP = "/sys/devices"
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "ceph", "glusterfs", "fuse.sshfs"})
MOUNTINFO = Path("/proc/self/mountinfo")


def root_fstype(root: str = "/", mountinfo: Path = MOUNTINFO) -> str | None:
    try:
        mounts = parse_mountinfo(mountinfo.read_text())
    except OSError:
        return None
    return next((m.fstype for m in reversed(mounts) if m.mountpoint == root), None)


def root_devnum(root: str = "/", mountinfo: Path = MOUNTINFO) -> tuple[int, int] | None:
    """(major, minor) of the block device holding ``root``; None if there is none."""
    st = Path(root).stat()
    if os.major(st.st_dev) != 0:
        return os.major(st.st_dev), os.minor(st.st_dev)
    # btrfs and friends report an anonymous device: ask the mount table for the source.
    try:
        mounts = parse_mountinfo(mountinfo.read_text())
    except OSError:
        return None
    source = next((m.source for m in reversed(mounts) if m.mountpoint == root), None)
    return None if source is None else block_device_of(source)


def block_device_of(source: str) -> tuple[int, int] | None:
    """(major, minor) of a mount's ``source`` when it is a block device node under /dev."""
    if not source.startswith("/dev/"):
        return None
    try:
        st = Path(source).stat()
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def stack(sysfs: Sysfs, sys_path: str) -> set[str]:
    """``sys_path``, its ancestors up to /sys/devices, and the devices it is built on."""
    found: set[str] = set()
    todo = [sys_path]
    while todo:
        path = todo.pop()
        current = path
        while current.startswith(DEVICES_TOP + "/") and current not in found:
            found.add(current)
            for slave in sysfs.listdir(f"{current}/slaves"):
                real = sysfs.resolve(f"{current}/slaves/{slave}")
                if real is not None:
                    todo.append(real)
            current = current.rsplit("/", 1)[0]
    return found


def root_devices(sysfs: Sysfs, devnum: tuple[int, int] | None, fstype: str | None) -> set[str]:
    """sys_paths of every device a root filesystem on ``devnum`` (of ``fstype``) depends on.

    A root on a network filesystem depends on every network device that is up.
    """
    if devnum is not None:
        path = sysfs.resolve(f"/sys/dev/block/{devnum[0]}:{devnum[1]}")
        return stack(sysfs, path) if path else set()
    if fstype in NETWORK_FS:
        found: set[str] = set()
        for net in sysfs.net_interfaces():
            if net.up:
                found |= stack(sysfs, net.sys_path)
        return found
    return set()


def running_root_devices(sysfs: Sysfs) -> set[str]:
    """The devices this machine's root filesystem depends on."""
    return root_devices(sysfs, root_devnum(), root_fstype())
