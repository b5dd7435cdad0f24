"""Constructed kernel images for tests: just enough of a real header to pass checks."""

from __future__ import annotations

import struct
from pathlib import Path

SETUP_SECTS = 4


def bzimage(release: str, *, protocol: int = 0x020F, magic: bytes = b"HdrS") -> bytes:
    """A minimal x86 bzImage: boot sector flag, setup header, kernel version string."""
    size = (SETUP_SECTS + 1) * 512 + 4096
    img = bytearray(size)
    img[0x1F1] = SETUP_SECTS
    img[0x1FE:0x200] = b"\x55\xaa"
    img[0x202:0x206] = magic
    struct.pack_into("<H", img, 0x206, protocol)
    version = f"{release} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC\0".encode()
    offset = 0x400  # inside the setup sectors
    img[offset : offset + len(version)] = version
    struct.pack_into("<H", img, 0x20E, offset - 0x200)
    return bytes(img)


def install_kernel(boot: Path, release: str, *, initrd: bool = True) -> tuple[Path, Path | None]:
    """Write boot/vmlinuz-RELEASE (and initrd.img-RELEASE) as a distribution would."""
    boot.mkdir(parents=True, exist_ok=True)
    kernel = boot / f"vmlinuz-{release}"
    kernel.write_bytes(bzimage(release))
    kernel.chmod(0o644)
    rd = None
    if initrd:
        rd = boot / f"initrd.img-{release}"
        rd.write_bytes(b"070701" + b"\0" * 1024)
        rd.chmod(0o644)
    return kernel, rd
