"""Read the PE/COFF headers and sections of an EFI executable through a descriptor.

Only ``os.pread`` on a descriptor the caller opened (and checked): nothing here
opens a path.  A section's data is what an EFI loader (and systemd-stub) reads
from the file: ``min(SizeOfRawData, VirtualSize)`` bytes at PointerToRawData
(SizeOfRawData is rounded up to the file alignment, VirtualSize is not).

Layout (all little-endian): ``MZ`` at 0, the PE header offset at 0x3C; there
``PE\\0\\0``, the COFF header (Machine, NumberOfSections, ..., SizeOfOptionalHeader),
the optional header (magic 0x10B for PE32, 0x20B for PE32+; the data directories
at 96 / 112, the certificate table being entry 4), then the section table:
40 bytes per section (Name[8], VirtualSize, VirtualAddress, SizeOfRawData,
PointerToRawData, ...).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

# A UKI with 256 profiles of a few sections each still fits; a table bigger than
# this is not an executable anyone built on purpose.
MAX_SECTIONS = 2048
HEADER_READ = 4096

MACHINES = {0x8664: "x86_64", 0xAA64: "aarch64", 0x014C: "i386", 0x01C2: "arm"}


class PeError(ValueError):
    """A PE file that cannot be read as one; the text says why, without the file name."""


@dataclass(frozen=True)
class Section:
    name: str
    index: int  # position in the section table
    offset: int  # PointerToRawData
    size: int  # bytes of data in the file: min(SizeOfRawData, VirtualSize)
    virtual_size: int
    raw_size: int


@dataclass(frozen=True)
class PeFile:
    machine: int
    sections: tuple[Section, ...]
    certificate: tuple[int, int]  # the certificate table (file offset, size); (0, 0) if none
    file_size: int

    @property
    def arch(self) -> str:
        return MACHINES.get(self.machine, f"machine 0x{self.machine:04x}")

    @property
    def signed(self) -> bool:
        """It carries an embedded (Authenticode) signature; whether that verifies is not known."""
        return self.certificate[1] > 0

    def find(self, name: str) -> Section | None:
        """The first section called ``name`` (as an EFI loader looks it up)."""
        return next((s for s in self.sections if s.name == name), None)


def _u16(data: bytes, at: int) -> int:
    return int(struct.unpack_from("<H", data, at)[0])


def _u32(data: bytes, at: int) -> int:
    return int(struct.unpack_from("<I", data, at)[0])


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = os.pread(fd, size - got, offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def is_pe(head: bytes) -> bool:
    """``head`` (the first bytes of a file) starts an MZ executable with a PE header inside it."""
    if len(head) < 0x40 or head[:2] != b"MZ":
        return False
    at = _u32(head, 0x3C)
    return at + 4 <= len(head) and head[at : at + 4] == b"PE\0\0"


def read_pe(fd: int, file_size: int) -> PeFile | None:
    """The PE headers of the file behind ``fd``; None when it is not a PE file at all."""
    head = pread_exact(fd, HEADER_READ, 0)
    if len(head) < 0x40 or head[:2] != b"MZ":
        return None
    pe_at = _u32(head, 0x3C)
    if pe_at + 24 > file_size:
        return None
    if pe_at + 24 > len(head):
        head = pread_exact(fd, pe_at + HEADER_READ, 0)
    if head[pe_at : pe_at + 4] != b"PE\0\0":
        return None
    machine, count = _u16(head, pe_at + 4), _u16(head, pe_at + 6)
    opt_size = _u16(head, pe_at + 20)
    opt = pe_at + 24
    if count > MAX_SECTIONS:
        raise PeError(
            f"its PE header claims {count} sections (at most {MAX_SECTIONS} are believed)"
        )
    table = opt + opt_size
    end = table + 40 * count
    if end > file_size:
        raise PeError("truncated: its PE section table runs past the end of the file")
    if end > len(head):
        head = pread_exact(fd, end, 0)
    if opt_size < 2:
        raise PeError("its PE optional header is missing")
    magic = _u16(head, opt)
    if magic == 0x20B:
        count_at, dirs_at = opt + 108, opt + 112
    elif magic == 0x10B:
        count_at, dirs_at = opt + 92, opt + 96
    else:
        raise PeError(f"its PE optional header has an unknown magic 0x{magic:x}")
    certificate = (0, 0)
    if count_at + 4 <= opt + opt_size and _u32(head, count_at) > 4 and dirs_at + 40 <= table:
        cert_offset, cert_size = struct.unpack_from("<II", head, dirs_at + 4 * 8)
        if cert_size:
            if cert_offset == 0 or cert_offset + cert_size > file_size:
                raise PeError(
                    f"truncated: its signature (PE certificate table at {cert_offset}, "
                    f"{cert_size} bytes) runs past the end of the file ({file_size} bytes)"
                )
            certificate = (int(cert_offset), int(cert_size))
    sections: list[Section] = []
    for i in range(count):
        at = table + 40 * i
        raw_name = head[at : at + 8]
        name = raw_name.split(b"\0", 1)[0].decode("ascii", "replace")
        virtual_size, raw_size, raw_offset = (
            _u32(head, at + 8),
            _u32(head, at + 16),
            _u32(head, at + 20),
        )
        size = min(raw_size, virtual_size) if virtual_size else raw_size
        if size and raw_offset + size > file_size:
            raise PeError(
                f"truncated: its section {name!r} ({size} bytes at {raw_offset}) runs past the "
                f"end of the file ({file_size} bytes)"
            )
        sections.append(Section(name, i, raw_offset, size, virtual_size, raw_size))
    return PeFile(machine, tuple(sections), certificate, file_size)


def read_section(fd: int, section: Section, limit: int) -> bytes:
    """A section's data; PeError when it is bigger than ``limit`` (it is read whole)."""
    if section.size > limit:
        raise PeError(
            f"its {section.name} section is {section.size} bytes; more than {limit} is not believed"
        )
    data = pread_exact(fd, section.size, section.offset)
    if len(data) != section.size:
        raise PeError(f"truncated: its {section.name} section ends early (the file shrank?)")
    return data
