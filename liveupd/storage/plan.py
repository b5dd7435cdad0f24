"""Pure planning for storage: which filesystems to sync and freeze, in what order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from liveupd import paths
from liveupd.backends.base import Mount
from liveupd.errors import InvalidArgument

# Kernel interfaces that are not storage at all: ``auto`` ignores them silently.
PSEUDO = frozenset(
    {
        "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs",
        "debugfs", "tracefs", "configfs", "pstore", "efivarfs", "bpf", "mqueue",
        "hugetlbfs", "autofs", "binfmt_misc", "fusectl", "rpc_pipefs", "nsfs",
    }
)  # fmt: skip

# Filesystems that cannot be frozen or need not be (no block device behind them).
UNFREEZABLE = frozenset(
    {
        "tmpfs", "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "overlay",
        "squashfs", "iso9660", "nfs", "nfs4", "cifs", "fuse", "ramfs", "securityfs",
        "debugfs", "tracefs", "configfs", "pstore", "efivarfs", "bpf", "mqueue",
        "hugetlbfs", "autofs", "binfmt_misc", "fusectl", "rpc_pipefs", "nsfs",
    }
)  # fmt: skip


@dataclass(frozen=True)
class FreezePlan:
    freeze: tuple[str, ...]  # mount points, in freeze order (thaw in reverse)
    sync: tuple[str, ...]  # writable local filesystems to syncfs
    skipped: tuple[tuple[str, str], ...]  # (mount point, why) for the report
    # The mount point of the filesystem holding the state directory when it is
    # frozen (always last): from its freeze on, the daemon writes nothing.
    state_mount: str | None = None


def _depth(mountpoint: str) -> int:
    return 0 if mountpoint == "/" else len(PurePosixPath(mountpoint).parts)


def local_writable(mount: Mount) -> bool:
    return mount.writable and mount.block_backed and mount.fstype not in UNFREEZABLE


def containing_mount(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount that holds ``path`` (the longest mount point that is a prefix)."""
    best: Mount | None = None
    for m in mounts:
        mp = m.mountpoint.rstrip("/") or "/"
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (
            best is None or len(mp) >= len(best.mountpoint)
        ):
            best = m
    return best


def plan_freeze(
    mounts: Sequence[Mount],
    setting: str | Sequence[str],
    state_dir: str,
    *,
    config_file: str = str(paths.CONFIG_FILE),
) -> FreezePlan:
    """Decide what to freeze.

    ``auto`` freezes every writable local block-backed filesystem (other
    writable filesystems, tmpfs or overlay say, are reported as skipped; kernel
    interfaces such as proc are ignored).  An explicit list names mount points;
    one that is not mounted is an error.  Children are
    frozen before their parents, so the root comes after the others, and the
    filesystem holding the state directory comes last of all: the exec
    timestamp is written to it just before it freezes.  Bind mounts of an
    already chosen filesystem are skipped, and so are filesystems that cannot
    be frozen (reported, not failed on).
    """
    by_point = {m.mountpoint: m for m in mounts}  # later mounts hide earlier ones
    if setting == "auto":
        chosen = [m for m in by_point.values() if m.writable and m.fstype not in PSEUDO]
    else:
        missing = [p for p in setting if p not in by_point]
        if missing:
            raise InvalidArgument(
                f"storage.freeze names {', '.join(missing)}, which is not mounted; "
                f'fix the list in {config_file} or use freeze = "auto"'
            )
        chosen = [by_point[p] for p in setting]
    skipped: list[tuple[str, str]] = []
    freeze: list[Mount] = []
    seen_devices: set[str] = set()
    for m in chosen:
        if m.fstype in UNFREEZABLE:
            skipped.append((m.mountpoint, f"{m.fstype} cannot be frozen"))
        elif not m.block_backed:
            skipped.append((m.mountpoint, f"{m.fstype} is not on a block device"))
        elif not m.writable:
            skipped.append((m.mountpoint, "read-only"))
        elif m.device and m.device in seen_devices:
            skipped.append((m.mountpoint, "same filesystem as another mount point"))
        else:
            seen_devices.add(m.device)
            freeze.append(m)
    state_mount = containing_mount(state_dir, list(by_point.values()))

    def holds_state(m: Mount) -> bool:
        # The state directory may sit on a bind mount of a filesystem frozen elsewhere.
        if state_mount is None:
            return False
        if m.device and state_mount.device:
            return m.device == state_mount.device
        return m.mountpoint == state_mount.mountpoint

    def order(m: Mount) -> tuple[bool, int, str]:
        return (holds_state(m), -_depth(m.mountpoint), m.mountpoint)

    freeze.sort(key=order)
    sync = tuple(m.mountpoint for m in by_point.values() if local_writable(m))
    frozen_state = next((m.mountpoint for m in freeze if holds_state(m)), None)
    return FreezePlan(tuple(m.mountpoint for m in freeze), sync, tuple(skipped), frozen_state)
