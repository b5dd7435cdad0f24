"""Take a unified kernel image apart through its open descriptor.

``open_uki`` reads the PE section table and the UKI's text sections, resolves
the profile, applies the section rules (``uki.assess``) and copies

* ``.linux`` into a sealed memfd (the kernel, loaded as any kernel after the
  same header checks), and
* ``.ucode`` then ``.initrd`` (each padded to 4 bytes, as systemd-stub joins
  them), then an extra initrd the caller opened, into another sealed memfd.

Nothing is copied through a path: the descriptor is the one the caller opened
and checked, and the memfds have no path at all.  ``probe`` reads only what a
kernel listing needs (release, title, profiles, rules) without copying.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from liveupd.kernel.image import MAX_DECOMPRESSED, ImageError, parse_image
from liveupd.kernel.memfd import FdRange, SealedWriter, sealed
from liveupd.kernel.pe import PeError, PeFile, is_pe, pread_exact, read_pe, read_section
from liveupd.kernel.uki import (
    Assessment,
    Name,
    Uki,
    UkiError,
    UkiView,
    assess,
    find_profile,
    read_uki,
    view,
)

INITRD_ALIGN = 4
EXTRA_DIR_SUFFIX = ".extra.d"
# Files systemd-stub picks up from beside the UKI (<uki>.extra.d/) and from the
# ESP's loader/ directory, none of which a kexec'd kernel gets.
_EXTRA_KINDS = (
    (".addon.efi", "add-on"),
    (".cred", "credential"),
    (".confext.raw", "configuration extension"),
    (".sysext.raw", "system extension"),
    (".raw", "system extension"),
)
_GLOBAL_EXTRA_DIRS = ("loader/addons", "loader/credentials")


# Sections only a UKI or a UKI add-on has (an EFI-stub kernel may have .sbat, .dtb).
_UKI_ONLY = frozenset(
    n.value
    for n in (
        Name.LINUX,
        Name.OSREL,
        Name.CMDLINE,
        Name.INITRD,
        Name.UCODE,
        Name.UNAME,
        Name.PROFILE,
        Name.PCRSIG,
        Name.PCRPKEY,
    )
)


def looks_like_uki(fd: int) -> bool:
    """A PE file with a UKI's sections, or an add-on's (cheap: the headers only)."""
    head = pread_exact(fd, 4096, 0)
    if not is_pe(head) or head[4:8] == b"zimg":
        return False
    try:
        pe = read_pe(fd, os.fstat(fd).st_size)
    except PeError:
        return True  # a damaged PE that claims to be one: let open_uki say what is wrong
    return pe is not None and any(s.name in _UKI_ONLY for s in pe.sections)


@dataclass(frozen=True)
class UkiFacts:
    """What a listing shows of one UKI (its default profile)."""

    view: UkiView
    assessment: Assessment
    profiles: tuple[str, ...]  # "@0 (regular)", ...
    linux: FdRange
    pe: PeFile


def _load(fd: int, size: int, profile: str, arch: str, extras: Sequence[str]) -> UkiFacts:
    try:
        pe = read_pe(fd, size)
    except PeError as e:
        raise UkiError(str(e)) from None
    if pe is None:
        raise UkiError("is not a PE file, so not a unified kernel image")
    u: Uki = read_uki(fd, pe)
    v = view(u, find_profile(u, profile))
    a = assess(v, pe, arch, extras)
    linux = v.get(Name.LINUX)
    span = FdRange(fd, linux.offset, linux.size) if linux is not None else FdRange(fd, 0, 0)
    return UkiFacts(v, a, tuple(p.label for p in u.profiles), span, pe)


def probe(fd: int, size: int, arch: str, extras: Sequence[str] = ()) -> UkiFacts:
    """Release, title, profiles and rules of a UKI's default profile; UkiError if unreadable."""
    return _load(fd, size, "", arch, extras)


def kernel_release(fd: int, facts: UkiFacts) -> str:
    """The release: ``.uname``, else the version string of the kernel in ``.linux``."""
    if facts.view.uname:
        return facts.view.uname
    linux = facts.view.get(Name.LINUX)
    if linux is None:
        return ""
    try:
        return parse_image(read_section(fd, linux, MAX_DECOMPRESSED)).kernel.release
    except (ImageError, PeError):
        return ""


def extras_of(path: Path) -> tuple[str, ...]:
    """Files systemd-stub would add to this UKI that a kexec does not (names only)."""
    found: list[str] = []
    dirs = [path.with_name(path.name + EXTRA_DIR_SUFFIX)]
    esp = path.parent.parent.parent  # .../EFI/Linux/x.efi -> the ESP (or /boot)
    if path.parent.name.lower() == "linux" and path.parent.parent.name.lower() == "efi":
        dirs += [esp / d for d in _GLOBAL_EXTRA_DIRS]
    for d in dirs:
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(d), key=lambda e: e.name):
                lower = entry.name.lower()
                kind = next((k for suffix, k in _EXTRA_KINDS if lower.endswith(suffix)), None)
                if kind is not None and not entry.name.startswith("."):
                    found.append(f"{kind} {d / entry.name}")
    return tuple(found)


@dataclass(frozen=True)
class OpenedUki:
    """A UKI taken apart: sealed memfds for its kernel and initrd (close() them)."""

    facts: UkiFacts
    linux_fd: int
    initrd_fd: int | None
    initrd_parts: tuple[str, ...]  # what the initrd memfd holds, in order

    @property
    def view(self) -> UkiView:
        return self.facts.view

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.facts.assessment.warnings

    def close(self) -> None:
        os.close(self.linux_fd)
        if self.initrd_fd is not None:
            os.close(self.initrd_fd)


def open_uki(
    fd: int,
    size: int,
    *,
    profile: str,
    arch: str,
    with_initrd: bool = True,
    extra_initrd: FdRange | None = None,
    extras: Sequence[str] = (),
    name: str = "uki",
) -> OpenedUki:
    """Check the UKI's sections and copy its kernel and initrd into sealed memfds.

    UkiError when a section rule refuses it (the text says which and why).
    ``with_initrd=False`` leaves out .ucode and .initrd (an initrd "none" request).
    """
    facts = _load(fd, size, profile, arch, extras)
    if facts.assessment.refusal:
        raise UkiError(facts.assessment.refusal)
    linux_fd = sealed(f"liveupd-{name}-linux", [facts.linux])
    try:
        parts: list[FdRange] = []
        labels: list[str] = []
        if with_initrd:
            for section_name in (Name.UCODE, Name.INITRD):
                s = facts.view.get(section_name)
                if s is not None and s.size:
                    parts.append(FdRange(fd, s.offset, s.size))
                    labels.append(section_name.value)
        if extra_initrd is not None:
            parts.append(extra_initrd)
            labels.append("the given initrd")
        initrd_fd = None
        if parts:
            with SealedWriter(f"liveupd-{name}-initrd") as w:
                for part in parts:
                    w.copy(part)
                    w.pad(INITRD_ALIGN)
                initrd_fd = w.seal()
    except BaseException:
        os.close(linux_fd)
        raise
    return OpenedUki(facts, linux_fd, initrd_fd, tuple(labels))
