"""Find the installed kernels in the allowed directories (``kernel.allowed-dirs``).

In each allowed directory D:

* ``D/vmlinuz-RELEASE`` with ``D/initrd.img-RELEASE`` (Debian, Ubuntu),
  ``D/initramfs-RELEASE.img`` (Fedora, Arch), ``D/initrd-RELEASE`` (SUSE);
* ``D/RELEASE/vmlinuz`` (D = /usr/lib/modules), with an initrd next to it or
  named as above in any allowed directory;
* Boot Loader Specification entries ``D/loader/entries/*.conf`` (D = /boot,
  /efi, /boot/efi) naming a ``linux`` kernel, its ``initrd`` and ``options``;
* unified kernel images, type #2 entries ``D/EFI/Linux/*.efi`` (read by
  ``uki_discovery``: their release comes from ``.uname`` or the kernel inside).

One kernel per release: a UKI wins (it is what systemd-boot boots, with its own
command line), then a BLS entry (it carries the boot loader's command line),
then /boot, then /usr/lib/modules.  Nothing is validated here, only found
(entries are read through liveupd.safeopen); staging validates.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from liveupd.config import Config
from liveupd.kernel import uki_discovery
from liveupd.kernel.bls import BlsEntry, for_arch, read_entries
from liveupd.kernel.versions import version_key
from liveupd.quoting import clip

_RELEASE = re.compile(r"^\d[A-Za-z0-9._+~-]*$")
_SKIP_SUFFIXES = (".old", ".bak", ".sig", ".dpkg-tmp", ".dpkg-new", ".dpkg-old", ".tmp")


class Source(StrEnum):
    UKI = "uki"
    BLS = "bls"
    BOOT = "boot"
    MODULES = "modules"


_PREFERENCE = {Source.UKI: 0, Source.BLS: 1, Source.BOOT: 2, Source.MODULES: 3}


@dataclass(frozen=True)
class InstalledKernel:
    release: str
    kernel_path: str
    initrd_path: str | None
    running: bool
    source: Source = Source.BOOT
    cmdline: str | None = None  # a BLS entry's options
    entry: str | None = None  # the BLS entry file
    title: str = ""
    initrds: tuple[str, ...] = ()  # every initrd named (a BLS entry may name several)
    profiles: tuple[str, ...] = ()  # a UKI's profiles ("@0 (regular)", ...)


@dataclass(frozen=True)
class Scan:
    kernels: list[InstalledKernel]  # oldest first
    problems: list[str]  # entries that could not be used, and why
    unreadable: tuple[str, ...] = ()  # UKIs whose release could not be read (in problems too)


def is_release(text: str) -> bool:
    return bool(_RELEASE.match(text)) and not text.endswith(_SKIP_SUFFIXES)


def boot_initrd(directory: Path, release: str) -> Path | None:
    for name in (
        f"initrd.img-{release}",
        f"initramfs-{release}.img",
        f"initrd-{release}",
        f"initrd-{release}.img",
    ):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def find_initrd(dirs: Sequence[Path], release: str, beside: Path | None = None) -> Path | None:
    if beside is not None:
        for name in ("initrd", "initrd.img", "initramfs.img"):
            if (beside / name).is_file():
                return beside / name
    for d in dirs:
        found = boot_initrd(d, release)
        if found is not None:
            return found
    return None


def release_from_path(path: Path) -> str | None:
    """RELEASE from .../vmlinuz-RELEASE or .../RELEASE/vmlinuz (None otherwise)."""
    if path.name.startswith("vmlinuz-"):
        release = path.name.removeprefix("vmlinuz-")
        return release if is_release(release) else None
    if path.name == "vmlinuz" and is_release(path.parent.name):
        return path.parent.name
    return None


def from_bls(entry: BlsEntry, running_release: str) -> tuple[InstalledKernel | None, str]:
    linux = next((c for c in entry.candidates(entry.linux) if c.exists()), None)
    if linux is None:
        return None, f"{entry.path}: its kernel {clip(entry.linux)} does not exist"
    initrds: list[str] = []
    for name in entry.initrd:
        found = next((c for c in entry.candidates(name) if c.exists()), None)
        if found is None:
            return None, f"{entry.path}: its initrd {clip(name)} does not exist"
        initrds.append(str(found))
    release = entry.version or release_from_path(linux)
    if not release or not is_release(release):
        return None, (
            f"{entry.path}: no release: it has no 'version' line and {linux.name} does not name one"
        )
    return (
        InstalledKernel(
            release=release,
            kernel_path=str(linux),
            initrd_path=initrds[0] if initrds else None,
            running=release == running_release,
            source=Source.BLS,
            cmdline=entry.options,
            entry=entry.path,
            title=entry.title,
            initrds=tuple(initrds),
        ),
        "",
    )


def scan(config: Config, running_release: str, machine: str | None = None) -> Scan:
    machine = machine or os.uname().machine
    dirs = [Path(d) for d in config.kernel.allowed_dirs]
    found: list[InstalledKernel] = []
    problems: list[str] = []
    for d in dirs:
        entries, bad = read_entries(d)
        problems += bad
        for entry in entries:
            if not for_arch(entry, machine):
                continue
            kernel, problem = from_bls(entry, running_release)
            if kernel is not None:
                found.append(kernel)
            elif problem:
                problems.append(problem)
    for d in dirs:
        for k in sorted(d.glob("vmlinuz-*")):
            release = release_from_path(k)
            if release is None or not k.is_file():
                continue
            initrd = find_initrd([d, *dirs], release)
            found.append(_plain(release, k, initrd, running_release, Source.BOOT))
        for k in sorted(d.glob("*/vmlinuz")):
            release = release_from_path(k)
            if release is None or not k.is_file():
                continue
            initrd = find_initrd(dirs, release, beside=k.parent)
            found.append(_plain(release, k, initrd, running_release, Source.MODULES))
    unreadable: list[str] = []
    for u in uki_discovery.find(config.kernel.allowed_dirs, machine):
        if not u.release or not is_release(u.release):
            problems.append(f"{u.path}: {u.problem or f'its release {u.release!r} is not one'}")
            unreadable.append(u.path)
            continue
        found.append(
            InstalledKernel(
                release=u.release,
                kernel_path=u.path,
                initrd_path=None,
                running=u.release == running_release,
                source=Source.UKI,
                title=u.title,
                profiles=u.profiles,
            )
        )
    best: dict[str, InstalledKernel] = {}
    for candidate in found:
        have = best.get(candidate.release)
        if have is None or _PREFERENCE[candidate.source] < _PREFERENCE[have.source]:
            best[candidate.release] = candidate
    ordered = sorted(best.values(), key=lambda k: version_key(k.release))
    return Scan(ordered, problems, tuple(unreadable))


def _plain(
    release: str, kernel: Path, initrd: Path | None, running_release: str, source: Source
) -> InstalledKernel:
    return InstalledKernel(
        release=release,
        kernel_path=str(kernel),
        initrd_path=str(initrd) if initrd else None,
        running=release == running_release,
        source=source,
        initrds=(str(initrd),) if initrd else (),
    )


def list_kernels(config: Config, running_release: str) -> list[InstalledKernel]:
    """Installed kernels, oldest first (so ``[-1]`` is the newest); the running one marked."""
    return scan(config, running_release).kernels
