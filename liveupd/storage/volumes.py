"""The LUKS volumes the next boot unlocks: the root filesystem's, and /etc/crypttab's.

Which volumes (pure, from parsed inputs):

* **the root filesystem's**: from its device number in /proc/self/mountinfo,
  through ``/sys/dev/block/MAJ:MIN``, down device-mapper's ``slaves`` (LVM on
  LUKS, LUKS on RAID...); a mapping whose ``dm/uuid`` starts with
  ``CRYPT-LUKS2-`` was opened from the LUKS2 header of its slave
  (``CRYPT-LUKS1-``: LUKS1; any other ``CRYPT-``: plain dm-crypt, BitLocker...);
* **/etc/crypttab's**: every line the boot unlocks (not ``noauto``), its
  device resolved (``UUID=`` -> ``/dev/disk/by-uuid/``...), read through
  liveupd's safe open (``safeopen``).

A volume in both is one volume (same device node once symlinks are resolved).

Then (``scan``) each LUKS volume's header is read with cryptsetup, a
subprocess with a deadline and a cap on its output, awaited on the event loop
(``luks.inspect``); the file reads before it run in a worker thread, bounded in
time.  Nothing is unlocked, nothing written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from liveupd import programs, safeopen
from liveupd.backends.base import EncryptedVolume, LuksKind, Mount, VolumeScan
from liveupd.bounded import TimedOut, run_bounded
from liveupd.devices.root import block_device_of
from liveupd.devices.sysfs import Sysfs
from liveupd.quoting import quote
from liveupd.storage import crypttab, luks
from liveupd.storage.mounts import parse_mountinfo

CRYPTTAB = "/etc/crypttab"
MOUNTINFO = Path("/proc/self/mountinfo")
CRYPT_KINDS = {"CRYPT-LUKS2-": LuksKind.LUKS2, "CRYPT-LUKS1-": LuksKind.LUKS1}
RUN_TIMEOUT = 10.0  # seconds for one cryptsetup run
READ_TIMEOUT = 10.0  # seconds for the file reads (mountinfo, sysfs, crypttab)
OUTPUT_CAP = 4 << 20  # bytes of JSON: a LUKS2 metadata area is at most 4 MiB
CRYPTSETUP_ENV = programs.ENV


@dataclass(frozen=True)
class Mapping:
    """A dm-crypt mapping under the root filesystem and the device it was opened from."""

    name: str  # dm/name: /dev/mapper/<name>
    device: str  # /dev/<slave>
    kind: LuksKind


# ---------------------------------------------------------------- pure ----


def root_devnum(mounts: Sequence[Mount]) -> str | None:
    """ "MAJ:MIN" of the filesystem mounted on / (the last mount there wins)."""
    return next((m.device for m in reversed(mounts) if m.mountpoint == "/" and m.device), None)


def dev_node(sys_name: str) -> str:
    """A block device's /dev node from its sysfs name (``cciss!c0d0`` -> ``/dev/cciss/c0d0``)."""
    return "/dev/" + sys_name.replace("!", "/")


def crypt_mappings(sysfs: Sysfs, devnum: str) -> list[Mapping]:
    """Every dm-crypt mapping the block device ``devnum`` ("MAJ:MIN") stands on."""
    start = sysfs.resolve(f"/sys/dev/block/{devnum}")
    found: list[Mapping] = []
    seen: set[str] = set()
    todo = [start] if start is not None else []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        slaves = sysfs.listdir(f"{path}/slaves")
        uuid = sysfs.read(path, "dm/uuid") or ""
        if uuid.startswith("CRYPT-"):
            kind = next(
                (k for prefix, k in CRYPT_KINDS.items() if uuid.startswith(prefix)),
                LuksKind.NOT_LUKS,
            )
            name = sysfs.read(path, "dm/name") or path.rsplit("/", 1)[-1]
            found += [Mapping(name, dev_node(s), kind) for s in slaves]
        for s in slaves:
            real = sysfs.resolve(f"{path}/slaves/{s}")
            if real is not None:
                todo.append(real)
    return found


def merge(
    mappings: Sequence[Mapping],
    table: crypttab.Crypttab,
    realpath: Callable[[str], str | None],
) -> list[EncryptedVolume]:
    """The volumes to look at, one per device node; ``realpath``: the node a path
    resolves to (None: it does not exist)."""
    volumes: dict[str, EncryptedVolume] = {}
    order: list[str] = []

    def add(key: str, volume: EncryptedVolume) -> None:
        before = volumes.get(key)
        if before is None:
            volumes[key] = volume
            order.append(key)
            return
        names = before.names + tuple(n for n in volume.names if n not in before.names)
        kind = before.kind if before.kind is not LuksKind.UNREADABLE else volume.kind
        volumes[key] = replace(
            before,
            names=names,
            root=before.root or volume.root,
            crypttab=before.crypttab or volume.crypttab,
            kind=kind,
        )

    for m in mappings:
        node = realpath(m.device) or m.device
        add(node, EncryptedVolume(node, (m.name,), True, "", m.kind))
    for entry in table.entries:
        if not entry.at_boot:
            continue
        path = crypttab.device_path(entry.device)
        if path is None:
            problem = (
                f"/etc/crypttab line {entry.line}: {quote(entry.device)} is not a device "
                "path, UUID=, PARTUUID=, LABEL= or PARTLABEL="
            )
            bad = EncryptedVolume(
                entry.device, (entry.name,), False, entry.device, LuksKind.UNREADABLE, (), problem
            )
            add(f"crypttab:{entry.line}", bad)
            continue
        real = realpath(path)
        if real is None:
            kind = LuksKind.MISSING
        elif not entry.maybe_luks:
            kind = LuksKind.NOT_LUKS
        else:
            kind = LuksKind.UNREADABLE  # not read yet: scan() reads it
        add(real or path, EncryptedVolume(real or path, (entry.name,), False, entry.device, kind))
    return [volumes[k] for k in order]


def to_read(volume: EncryptedVolume) -> bool:
    """Whether cryptsetup must read its header (LUKS2 for its tokens, or not yet known)."""
    return volume.kind is LuksKind.LUKS2 or (
        volume.kind is LuksKind.UNREADABLE and not volume.problem
    )


# ------------------------------------------------------------- the I/O ----


def _realpath(path: str) -> str | None:
    try:
        real = os.path.realpath(path, strict=True)
    except OSError:
        return None
    return real


def _root_devnum(mounts: Sequence[Mount]) -> str | None:
    devnum = root_devnum(mounts)
    if devnum is None or not devnum.startswith("0:"):
        return devnum
    # btrfs and friends: an anonymous device number; the mount's source is the device.
    source = next((m.source for m in reversed(mounts) if m.mountpoint == "/"), "")
    found = block_device_of(source)
    return None if found is None else f"{found[0]}:{found[1]}"


def read_crypttab(path: str = CRYPTTAB) -> tuple[crypttab.Crypttab, str]:
    """The parsed file (empty when there is none) and why it could not be read ("")."""
    try:
        with safeopen.open_file(path, safeopen.Kind.CRYPTTAB) as f:
            text = safeopen.read_text(f)
    except safeopen.UnsafeFile as e:
        if e.refusal is safeopen.Refusal.MISSING:
            return crypttab.Crypttab((), ()), ""
        return crypttab.Crypttab((), ()), str(e)
    except OSError as e:
        return crypttab.Crypttab((), ()), f"{path}: {e.strerror or e}"
    return crypttab.parse(text), ""


def find(
    sysfs: Sysfs | None = None, mountinfo: Path = MOUNTINFO, crypttab_path: str = CRYPTTAB
) -> VolumeScan:
    """Blocking file reads: call in a worker thread (``scan`` does).  The volumes whose
    headers are still to be read (``to_read``) have kind UNREADABLE and no problem."""
    problems: list[str] = []
    try:
        mounts = parse_mountinfo(mountinfo.read_text())
    except (OSError, ValueError) as e:
        mounts = []
        problems.append(f"cannot read {mountinfo} to find the root filesystem's device: {e}")
    devnum = _root_devnum(mounts)
    mappings = crypt_mappings(sysfs or Sysfs(), devnum) if devnum else []
    table, problem = read_crypttab(crypttab_path)
    if problem:
        problems.append(problem)
    return VolumeScan(tuple(merge(mappings, table, _realpath)), tuple(problems))


async def run_capped(
    argv: list[str],
    *,
    timeout: float = RUN_TIMEOUT,
    search_path: str = CRYPTSETUP_ENV["PATH"],
    output_cap: int = OUTPUT_CAP,
) -> programs.Completed:
    """Run a cryptsetup command (``programs.run_capped``: stdin /dev/null, a clean
    environment, a deadline, capped output).  ``search_path``: where the program is
    looked for (tests give their own)."""
    program = shutil.which(argv[0], path=search_path)
    if program is None:
        return programs.Completed(
            None, "", "", f"{argv[0]} is not installed (Debian: apt install cryptsetup-bin)"
        )
    return await programs.run_capped(
        [program, *argv[1:]],
        timeout=timeout,
        output_cap=output_cap,
        env=CRYPTSETUP_ENV,
        name=argv[0],
    )


async def scan(run: luks.Run = run_capped, find: Callable[[], VolumeScan] = find) -> VolumeScan:
    """The volumes the next boot unlocks, each header read; and what could not be read."""
    try:
        found = await run_bounded(find, timeout=READ_TIMEOUT, what="finding the LUKS volumes")
    except TimedOut as e:
        return VolumeScan((), (f"{e} (a hung /sys or /etc?)",))
    out: list[EncryptedVolume] = []
    for found_volume in found.volumes:
        volume = found_volume
        if to_read(volume):
            header = await luks.inspect(volume.device, run)
            volume = replace(volume, kind=header.kind, tokens=header.tokens, problem=header.problem)
        out.append(volume)
    return VolumeScan(tuple(out), found.problems)
