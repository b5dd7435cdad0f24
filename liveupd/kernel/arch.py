"""The per-architecture table: syscall numbers and what kexec_file_load accepts.

Only architectures listed here are supported; anything else is refused with a
clear error rather than guessed at, because a wrong syscall number would call
something else entirely.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import StrEnum

from liveupd.errors import Unsupported


class Arch(StrEnum):
    X86_64 = "x86_64"
    AARCH64 = "aarch64"


@dataclass(frozen=True)
class ArchInfo:
    arch: Arch
    nr_kexec_file_load: int
    nr_reboot: int
    # COMMAND_LINE_SIZE (bytes, the trailing NUL included) when the image does
    # not state its own limit (x86 images do, in the setup header).
    command_line_size: int
    # What a kernel image of this architecture looks like to kexec_file_load.
    image_kind: str


ARCHES: dict[Arch, ArchInfo] = {
    Arch.X86_64: ArchInfo(Arch.X86_64, 320, 169, 2048, "bzImage"),
    Arch.AARCH64: ArchInfo(Arch.AARCH64, 294, 142, 2048, "arm64 Image"),
}

_ALIASES = {"amd64": Arch.X86_64, "arm64": Arch.AARCH64}


def arch_info(machine: str | None = None, pointer_bits: int | None = None) -> ArchInfo:
    """The table row for ``machine`` (default: this machine), or Unsupported."""
    machine = machine if machine is not None else os.uname().machine
    bits = pointer_bits if pointer_bits is not None else struct.calcsize("P") * 8
    arch = _ALIASES.get(machine)
    if arch is None:
        try:
            arch = Arch(machine)
        except ValueError:
            supported = ", ".join(a.value for a in Arch)
            raise Unsupported(
                f"this machine is {machine!r}; liveupd knows the kexec syscalls and kernel "
                f"image formats only for {supported}. Use kexec-tools on this architecture."
            ) from None
    if bits != 64:
        raise Unsupported(
            f"liveupd runs in a {bits}-bit Python on a {arch} kernel; the syscall numbers "
            "differ for that ABI. Run liveupd with the system's 64-bit Python."
        )
    return ARCHES[arch]
