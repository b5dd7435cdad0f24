"""Unified kernel images (UAPI UKI specification): the model and the section rules.

A UKI is a PE file (an EFI stub) whose sections carry a Linux kernel and what
it boots with.  This module reads the section table and the small text
sections through a descriptor the caller opened (no path is opened here),
resolves which sections a profile boots with, and says, section by section,
what liveupd does with them.  Extracting the kernel and initrd is
``uki_extract``'s job.

Profiles (multi-profile UKIs): the sections before the first ``.profile`` are
the *base profile*; each ``.profile`` section starts profile ``@0``, ``@1``, ...
which runs up to the next ``.profile``.  A profile boots with its own sections
and, for every name it lacks, the base profile's (first match wins, as in
systemd-stub).  Without a choice, ``@0`` boots (the base alone when the UKI
has no profiles).  ``.profile`` holds ``ID=`` and ``TITLE=`` lines.

Section rules (docs/kernels.md has the same table):

* honoured: ``.linux`` (required: the kernel, validated as any kernel),
  ``.initrd``, ``.ucode`` (prepended to the initrd, as the stub does),
  ``.cmdline`` (the default command line), ``.uname`` (the release; must agree
  with the kernel's own version string), ``.osrel`` (the title), ``.profile``;
* ignored, they only matter to firmware before the kernel starts:
  ``.splash``, ``.sbat``, ``.hwids`` (a table for choosing ``.dtbauto``/``.efifw``);
* dropped with a warning: ``.pcrsig`` and ``.pcrpkey`` (nothing is measured
  into PCR 11 by a kexec, and the initrd does not get them as
  ``/.extra/tpm2-pcr-*``), ``.efifw`` (firmware for the next firmware reset),
  and ``.dtb`` / ``.dtbauto`` on x86_64 (x86 boots without a device tree);
* refused: no ``.linux`` (an add-on or another PE, not a UKI), an empty
  ``.linux``, a PE built for another architecture, ``.dtb`` / ``.dtbauto`` on
  aarch64 (arm64 kexec_file_load hands the new kernel the running kernel's
  device tree and cannot take the UKI's), a profile that does not exist, a
  ``.uname`` that is not the kernel's release (checked by the caller).

Files next to the UKI that systemd-stub would also use (add-ons, credentials,
system/configuration extensions) are not loaded either; the caller lists them
and they are named in the warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from liveupd.kernel.pe import PeError, PeFile, Section, read_section

MAX_PROFILES = 256  # systemd's UNIFIED_PROFILES_MAX
MAX_TEXT = 64 << 10  # .cmdline, .osrel, .profile: text sections bigger than this are refused
MAX_UNAME = 256


class Name(StrEnum):
    LINUX = ".linux"
    OSREL = ".osrel"
    CMDLINE = ".cmdline"
    INITRD = ".initrd"
    UCODE = ".ucode"
    SPLASH = ".splash"
    DTB = ".dtb"
    UNAME = ".uname"
    SBAT = ".sbat"
    PCRSIG = ".pcrsig"
    PCRPKEY = ".pcrpkey"
    PROFILE = ".profile"
    DTBAUTO = ".dtbauto"
    HWIDS = ".hwids"
    EFIFW = ".efifw"


UKI_SECTIONS = frozenset(n.value for n in Name)


class Rule(StrEnum):
    HONOURED = "honoured"
    IGNORED = "ignored"  # matters to firmware only; nothing is lost by a kexec
    DROPPED = "dropped"  # staged without it, with a warning
    REFUSED = "refused"  # the UKI is not staged


_ALWAYS: dict[Name, tuple[Rule, str]] = {
    Name.LINUX: (Rule.HONOURED, "the kernel: extracted and validated as any kernel"),
    Name.INITRD: (Rule.HONOURED, "the initrd, after .ucode"),
    Name.UCODE: (Rule.HONOURED, "CPU microcode, prepended to the initrd as the stub does"),
    Name.CMDLINE: (Rule.HONOURED, "the default command line"),
    Name.UNAME: (Rule.HONOURED, "the release; must be the kernel's own"),
    Name.OSREL: (Rule.HONOURED, "the title (PRETTY_NAME)"),
    Name.PROFILE: (Rule.HONOURED, "profile selection (ID, TITLE)"),
    Name.SPLASH: (Rule.IGNORED, "a boot splash the firmware shows"),
    Name.SBAT: (Rule.IGNORED, "revocation metadata for shim and the firmware"),
    Name.HWIDS: (Rule.IGNORED, "a hardware table for choosing .dtbauto / .efifw"),
    Name.PCRSIG: (
        Rule.DROPPED,
        "a signed PCR 11 policy: a kexec measures nothing into PCR 11, so secrets sealed to "
        "it will not unlock on the new kernel",
    ),
    Name.PCRPKEY: (
        Rule.DROPPED,
        "the public key of the PCR 11 policy: not measured, not passed to the initrd",
    ),
    Name.EFIFW: (Rule.DROPPED, "firmware for the next firmware reset, which a kexec is not"),
}
_DTB_X86 = (Rule.DROPPED, "a device tree: x86 boots without one")
_DTB_ARM64 = (
    Rule.REFUSED,
    "a device tree: arm64 kexec_file_load hands the new kernel the running kernel's device tree "
    "and cannot take this one. Boot it through the firmware, or stage a plain kernel",
)


def rule_of(name: str, arch: str) -> tuple[Rule, str]:
    """What liveupd does with a UKI section on ``arch`` (x86_64 or aarch64)."""
    section = Name(name)
    if section in (Name.DTB, Name.DTBAUTO):
        return _DTB_ARM64 if arch == "aarch64" else _DTB_X86
    return _ALWAYS[section]


class UkiError(ValueError):
    """A UKI that cannot be staged; the text says why, without the file name."""


@dataclass(frozen=True)
class ProfileInfo:
    index: int
    id: str
    title: str

    @property
    def label(self) -> str:
        return f"@{self.index}" + (f" ({self.id})" if self.id else "")


@dataclass(frozen=True)
class Uki:
    pe: PeFile
    base: tuple[Section, ...]  # the UKI sections before the first .profile
    groups: tuple[tuple[Section, ...], ...]  # each profile's sections, its .profile first
    profiles: tuple[ProfileInfo, ...]
    texts: Mapping[int, str]  # section index -> text, for the small text sections

    def text(self, section: Section | None) -> str | None:
        return None if section is None else self.texts.get(section.index)


@dataclass(frozen=True)
class UkiView:
    """What one profile of a UKI boots with."""

    profile: ProfileInfo | None  # None: a UKI without profiles (the base)
    sections: Mapping[str, Section]  # name -> the section in effect
    cmdline: str | None
    uname: str
    osrel: Mapping[str, str]

    def get(self, name: Name) -> Section | None:
        return self.sections.get(name.value)

    @property
    def title(self) -> str:
        pretty = self.osrel.get("PRETTY_NAME") or self.osrel.get("NAME") or ""
        if self.profile is not None and self.profile.title:
            return f"{pretty} ({self.profile.title})" if pretty else self.profile.title
        return pretty


# ----------------------------------------------------------------- reading --


def parse_env_block(text: str) -> dict[str, str]:
    """os-release style ``KEY=VALUE`` lines (values may be quoted); comments skipped."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _decode(data: bytes, what: str) -> str:
    text = data.split(b"\0", 1)[0]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UkiError(f"its {what} section is not UTF-8 text (byte {e.start})") from None


# The text sections read whole, and how big each may be.
_TEXT_SECTIONS = {
    Name.CMDLINE: MAX_TEXT,
    Name.OSREL: MAX_TEXT,
    Name.PROFILE: 4096,
    Name.UNAME: MAX_UNAME,
}


def read_uki(fd: int, pe: PeFile) -> Uki:
    """The UKI's profiles and text sections (read through ``fd``); UkiError if malformed."""
    base: list[Section] = []
    groups: list[list[Section]] = []
    for s in pe.sections:
        if s.name == Name.PROFILE:
            groups.append([s])
        elif s.name in UKI_SECTIONS:
            (groups[-1] if groups else base).append(s)
    if len(groups) > MAX_PROFILES:
        raise UkiError(f"has {len(groups)} profiles; at most {MAX_PROFILES} are allowed")
    texts: dict[int, str] = {}
    try:
        for s in pe.sections:
            if s.name in _TEXT_SECTIONS:
                limit = _TEXT_SECTIONS[Name(s.name)]
                texts[s.index] = _decode(read_section(fd, s, limit), s.name)
    except PeError as e:
        raise UkiError(str(e)) from None
    profiles = []
    for i, group in enumerate(groups):
        meta = parse_env_block(texts.get(group[0].index, ""))
        profiles.append(ProfileInfo(i, meta.get("ID", ""), meta.get("TITLE", "")))
    return Uki(pe, tuple(base), tuple(tuple(g) for g in groups), tuple(profiles), texts)


_INDEX = re.compile(r"^@?(\d{1,3})$")


def find_profile(uki: Uki, wanted: str) -> int | None:
    """The profile ``wanted`` names (``""``: the default; ``@1`` / ``1``; or an ID)."""
    wanted = wanted.strip()
    if not wanted:
        return 0 if uki.profiles else None
    m = _INDEX.match(wanted)
    have = ", ".join(p.label for p in uki.profiles) or "none (only the base profile)"
    if m:
        index = int(m.group(1))
        if index < len(uki.profiles) or (index == 0 and not uki.profiles):
            return index if uki.profiles else None
        raise UkiError(f"has no profile @{index} (its profiles: {have})")
    for p in uki.profiles:
        if p.id == wanted:
            return p.index
    raise UkiError(f"has no profile with ID {wanted[:64]!r} (its profiles: {have})")


def view(uki: Uki, profile: int | None) -> UkiView:
    """The sections profile ``profile`` (None: the base) boots with."""
    own = uki.groups[profile][1:] if profile is not None else ()
    chosen: dict[str, Section] = {}
    for group in (own, uki.base):
        for s in group:
            chosen.setdefault(s.name, s)
    cmdline = uki.text(chosen.get(Name.CMDLINE))
    if cmdline is not None:
        cmdline = cmdline.strip(" \t\r\n")
    uname = (uki.text(chosen.get(Name.UNAME)) or "").strip()
    osrel = parse_env_block(uki.text(chosen.get(Name.OSREL)) or "")
    info = uki.profiles[profile] if profile is not None else None
    return UkiView(info, chosen, cmdline, uname, osrel)


# ------------------------------------------------------------------- rules --


@dataclass(frozen=True)
class Assessment:
    honoured: tuple[str, ...]
    warnings: tuple[str, ...]  # what is left out, one line each
    refusal: str  # why it cannot be staged ("" when it can)


def assess(v: UkiView, pe: PeFile, arch: str, extras: Sequence[str] = ()) -> Assessment:
    """Apply the section rules to one profile on ``arch``; ``extras`` are files beside it."""
    honoured: list[str] = []
    warnings: list[str] = []
    refusals: list[str] = []
    linux = v.get(Name.LINUX)
    if pe.arch != arch:
        refusals.append(f"it is a UKI for {pe.arch}; this machine is {arch}")
    if linux is None:
        refusals.append(
            "it has no .linux section, so it is not a unified kernel image (a UKI add-on, or "
            "another EFI program)"
        )
    elif linux.size == 0:
        refusals.append("its .linux section is empty")
    for name in (n.value for n in Name if n.value in v.sections):
        rule, why = rule_of(name, arch)
        if rule is Rule.HONOURED:
            honoured.append(name)
        elif rule is Rule.DROPPED:
            warnings.append(f"{name} left out: {why}")
        elif rule is Rule.REFUSED:
            refusals.append(f"it has a {name} section, {why}")
    for extra in extras:
        warnings.append(f"{extra} left out: systemd-stub would load it, liveupd does not")
    return Assessment(tuple(honoured), tuple(warnings), "; ".join(refusals))
