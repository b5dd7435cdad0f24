"""Recognise a kernel image from its bytes (pure: no file access here).

Formats:

* x86 **bzImage**: the boot sector flag 0xAA55 at 0x1FE, the setup header
  magic ``HdrS`` at 0x202, the boot protocol version at 0x206 (2.06 or newer:
  that is where ``cmdline_size`` appeared), and at 0x20E a pointer (plus 0x200)
  to the kernel version string.  kexec_file_load on x86_64 also needs protocol
  2.12+, LOADED_HIGH and the 64-bit xloadflags (checked as for the kernel's
  own bzImage64 probe).
* **arm64 Image**: magic ``ARM\\x64`` at 0x38; the version comes from the
  ``Linux version R (`` banner inside the (uncompressed) image.
* **EFI zboot**: ``MZ`` + ``zimg`` at 4, a compressed payload (offset at 8,
  size at 12, compression name at 0x18) holding an arm64 Image.
* **compressed**: a gzip/xz/lzma/bzip2/zstd file holding an image (Debian's arm64
  ``vmlinuz`` is a gzip'd Image; zstd needs python3-zstandard).
* **unified kernel image**: a PE with a ``.linux`` section.  kexec_file_load
  does not take one; ``uki_extract`` takes it apart before anything here sees
  the kernel, so this only describes one met where a kernel was expected.

An EFI-stub kernel is also a PE file; its certificate table tells whether it
carries an embedded (Authenticode) signature.
"""

from __future__ import annotations

import bz2
import io
import lzma
import re
import struct
import zlib
from dataclasses import dataclass
from enum import StrEnum

MIN_PROTOCOL = 0x0206  # cmdline_size appeared in 2.06
KEXEC64_PROTOCOL = 0x020C  # the x86_64 kexec_file_load loader needs 2.12
LOADED_HIGH = 0x01
XLF_KERNEL_64 = 0x01
XLF_CAN_BE_LOADED_ABOVE_4G = 0x02
# x86 kexec_file_load keeps room to append " elfcorehdr=0x<addr>" (MAX_ELFCOREHDR_STR_LEN).
X86_ELFCOREHDR_RESERVE = 30
MAX_DECOMPRESSED = 512 << 20  # a kernel image bigger than this is not believed
MIN_SIZE = 1024  # as the kernel's own bzImage probe: anything shorter is not a kernel

_BANNER = re.compile(rb"Linux version (\d[^\s\x00]*) \(")


class ImageFormat(StrEnum):
    BZIMAGE = "bzImage"
    ARM64_IMAGE = "arm64 Image"
    EFI_ZBOOT = "EFI zboot"
    COMPRESSED = "compressed"
    UKI = "unified kernel image"


class ImageError(ValueError):
    """Not a (usable) kernel image; the text says why, without the file name."""


@dataclass(frozen=True)
class PeInfo:
    machine: int
    sections: tuple[tuple[str, int, int], ...]  # (name, file offset, size)
    certificate: tuple[int, int]  # the certificate table: (file offset, size)

    @property
    def signed(self) -> bool:
        return self.certificate[1] > 0

    def section(self, name: str) -> tuple[int, int] | None:
        for n, offset, size in self.sections:
            if n == name:
                return offset, size
        return None


@dataclass(frozen=True)
class KernelImage:
    format: ImageFormat
    arch: str  # "x86_64" or "aarch64"
    version: str  # the kernel version string ("" when the image has none)
    size: int
    pe: PeInfo | None = None
    protocol: int = 0  # x86 boot protocol, e.g. 0x020F
    cmdline_size: int = 0  # x86: the longest command line, NUL excluded (0: unknown)
    init_size: int = 0  # bytes the kernel needs once loaded (0: unknown)
    kexec64_problem: str = ""  # x86: why the x86_64 kexec_file_load loader would refuse it
    compression: str = ""
    inner: KernelImage | None = None  # the kernel inside a zboot/compressed/UKI image

    @property
    def release(self) -> str:
        return self.version.split(" ", 1)[0] if self.version else ""

    @property
    def signed(self) -> bool:
        return self.pe is not None and self.pe.signed

    @property
    def kernel(self) -> KernelImage:
        """The innermost image: what actually runs."""
        return self.inner.kernel if self.inner is not None else self

    def describe(self) -> str:
        parts = [str(self.format)]
        if self.compression:
            parts.append(f"({self.compression})")
        if self.inner is not None:
            parts.append(f"holding an {self.inner.format}")
        return " ".join(parts)


def _u16(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", data, offset)[0])


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0])


def _u64(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<Q", data, offset)[0])


def protocol_str(protocol: int) -> str:
    return f"{protocol >> 8}.{protocol & 0xFF:02d}"


# ------------------------------------------------------------------- PE ----


def parse_pe(data: bytes) -> PeInfo | None:
    """The PE headers of an EFI executable (None when ``data`` is not one)."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        return None
    pe = _u32(data, 0x3C)
    if pe + 24 > len(data) or data[pe : pe + 4] != b"PE\0\0":
        return None
    machine, nsections = _u16(data, pe + 4), _u16(data, pe + 6)
    opt_size = _u16(data, pe + 20)
    opt = pe + 24
    if opt + opt_size > len(data) or opt_size < 2:
        raise ImageError("truncated: its PE optional header runs past the end of the file")
    magic = _u16(data, opt)
    if magic == 0x20B:
        count_at, dirs_at = opt + 108, opt + 112
    elif magic == 0x10B:
        count_at, dirs_at = opt + 92, opt + 96
    else:
        raise ImageError(f"its PE optional header has an unknown magic 0x{magic:x}")
    certificate = (0, 0)
    if count_at + 4 <= opt + opt_size and _u32(data, count_at) > 4:
        offset, size = struct.unpack_from("<II", data, dirs_at + 4 * 8)
        if size:
            if offset == 0 or offset + size > len(data):
                raise ImageError(
                    "truncated: its signature (PE certificate table at "
                    f"{offset}, {size} bytes) runs past the end of the file ({len(data)} bytes)"
                )
            certificate = (int(offset), int(size))
    sections = []
    table = opt + opt_size
    for i in range(nsections):
        at = table + 40 * i
        if at + 40 > len(data):
            raise ImageError("truncated: its PE section table runs past the end of the file")
        name = data[at : at + 8].rstrip(b"\0").decode("ascii", "replace")
        raw_size, raw_offset = _u32(data, at + 16), _u32(data, at + 20)
        sections.append((name, raw_offset, raw_size))
    return PeInfo(machine, tuple(sections), certificate)


# ---------------------------------------------------------------- x86 ----


def _parse_bzimage(data: bytes) -> KernelImage:
    if len(data) < 0x264:
        raise ImageError(
            f"truncated: {len(data)} bytes is shorter than an x86 setup header (0x264 bytes)"
        )
    if _u16(data, 0x1FE) != 0xAA55:
        raise ImageError("has 'HdrS' at 0x202 but no x86 boot sector flag 0xAA55 at 0x1FE")
    protocol = _u16(data, 0x206)
    if protocol < MIN_PROTOCOL:
        raise ImageError(
            f"uses x86 boot protocol {protocol_str(protocol)}; liveupd needs 2.06 or newer "
            "(a kernel from 2.6.22 on)"
        )
    setup_sects = data[0x1F1] or 4
    setup_size = (setup_sects + 1) * 512
    syssize = _u32(data, 0x1F4)
    expected = setup_size + syssize * 16
    if len(data) < expected:
        raise ImageError(
            f"truncated: its setup header describes {expected} bytes of kernel, "
            f"the file has {len(data)}"
        )
    pointer = _u16(data, 0x20E)
    version = ""
    if pointer:
        start = pointer + 0x200
        if start >= setup_size:
            raise ImageError(
                f"its kernel version pointer (0x{pointer:x}) points outside the setup code"
            )
        end = data.find(b"\0", start, setup_size)
        raw = data[start : end if end >= 0 else setup_size]
        version = raw.decode("ascii", "replace").strip()
    loadflags = data[0x211]
    xloadflags = _u16(data, 0x236) if protocol >= 0x020C else 0
    cmdline_size = _u32(data, 0x238)
    init_size = _u32(data, 0x260) if protocol >= 0x020A else 0
    problem = ""
    if protocol < KEXEC64_PROTOCOL:
        problem = f"boot protocol {protocol_str(protocol)} is older than 2.12"
    elif not loadflags & LOADED_HIGH:
        problem = "it is a zImage, not a bzImage (LOADED_HIGH is not set)"
    elif not xloadflags & XLF_KERNEL_64:
        problem = "it is a 32-bit kernel (XLF_KERNEL_64 is not set)"
    elif not xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G:
        problem = "it cannot be loaded above 4 GiB (XLF_CAN_BE_LOADED_ABOVE_4G is not set)"
    return KernelImage(
        format=ImageFormat.BZIMAGE,
        arch="x86_64",
        version=version,
        size=len(data),
        pe=parse_pe(data),
        protocol=protocol,
        cmdline_size=cmdline_size,
        init_size=init_size,
        kexec64_problem=problem,
    )


# -------------------------------------------------------------- arm64 ----


def banner_version(data: bytes) -> str:
    """The version from an uncompressed kernel's ``Linux version R (...`` banner."""
    m = _BANNER.search(data)
    if not m:
        return ""
    end = len(data)
    for stop in (b"\n", b"\0"):
        i = data.find(stop, m.start(), end)
        if i >= 0:
            end = i
    return data[m.start() + len(b"Linux version ") : end].decode("ascii", "replace").strip()


def _parse_arm64(data: bytes) -> KernelImage:
    image_size = _u64(data, 16)
    return KernelImage(
        format=ImageFormat.ARM64_IMAGE,
        arch="aarch64",
        version=banner_version(data),
        size=len(data),
        pe=parse_pe(data),
        init_size=image_size,
    )


# -------------------------------------------------- compressed payloads ----

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x89LZO", "lzo"),
    (b"\x5d\x00\x00", "lzma"),
)
# zboot names its compressors after the kernel's Kconfig (Makefile.zboot).
_ZBOOT_NAMES = {
    "gzip": "gzip",
    "lzma": "lzma",
    "xzkern": "xz",
    "lz4": "lz4",
    "lzo": "lzo",
    "zstd22": "zstd",
    "zstd": "zstd",
}


def compression_of(data: bytes) -> str:
    for magic, name in _MAGICS:
        if data.startswith(magic):
            return name
    return ""


def decompress(kind: str, data: bytes, limit: int = MAX_DECOMPRESSED) -> bytes:
    """Decompress ``data``; ImageError for a format Python cannot read or a bad stream."""
    out: bytes
    try:
        if kind == "gzip":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = d.decompress(data, limit + 1)
        elif kind in ("xz", "lzma"):
            fmt = lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE
            out = lzma.LZMADecompressor(fmt).decompress(data, limit + 1)
        elif kind == "bzip2":
            out = bz2.BZ2Decompressor().decompress(data, limit + 1)
        elif kind == "zstd":
            out = _zstd(data, limit + 1)
        else:
            raise ImageError(
                f"is {kind}-compressed; liveupd can only look inside gzip, xz, lzma, bzip2 and "
                "zstd images, and it must see the kernel before loading it. Stage an "
                "uncompressed or gzip-compressed image"
            )
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"is {kind}-compressed but does not decompress: {e}") from None
    if len(out) > limit:
        raise ImageError(f"decompresses to more than {limit >> 20} MiB; that is not a kernel")
    return out


def _zstd(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes of a zstd stream (python3-zstandard, imported on first use)."""
    try:
        import zstandard
    except ImportError:
        raise ImageError(
            "is zstd-compressed, and reading zstd needs python3-zstandard, which is not "
            "installed. Install it (apt install python3-zstandard) and stage again"
        ) from None
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << 30)
    try:
        reader = dctx.stream_reader(io.BytesIO(data), read_across_frames=True)
        out = bytearray()
        while len(out) < limit and (chunk := reader.read(min(1 << 20, limit - len(out)))):
            out += chunk
    except zstandard.ZstdError as e:
        raise ValueError(str(e)) from None
    return bytes(out)


def zboot_payload_range(head: bytes) -> tuple[int, int]:
    """(offset, size) of an EFI zboot image's compressed payload, from its first 0x40 bytes."""
    return _u32(head, 8), _u32(head, 12)


def _parse_zboot(data: bytes, depth: int) -> KernelImage:
    if len(data) < 0x40:
        raise ImageError("truncated: shorter than an EFI zboot header")
    offset, size = _u32(data, 8), _u32(data, 12)
    name = data[0x18:0x38].split(b"\0", 1)[0].decode("ascii", "replace")
    if offset + size > len(data) or size == 0:
        raise ImageError(
            f"truncated: its zboot payload ({size} bytes at {offset}) runs past the end "
            f"of the file ({len(data)} bytes)"
        )
    kind = _ZBOOT_NAMES.get(name, name)
    inner = parse_image(decompress(kind, data[offset : offset + size]), depth + 1)
    return KernelImage(
        format=ImageFormat.EFI_ZBOOT,
        arch=inner.arch,
        version=inner.version,
        size=len(data),
        pe=parse_pe(data),
        compression=kind,
        inner=inner,
    )


def zboot_payload(data: bytes) -> bytes:
    """The decompressed kernel inside an EFI zboot image (parse_image it first)."""
    offset, size = _u32(data, 8), _u32(data, 12)
    name = data[0x18:0x38].split(b"\0", 1)[0].decode("ascii", "replace")
    return decompress(_ZBOOT_NAMES.get(name, name), data[offset : offset + size])


def embedded_kernel(data: bytes, image: KernelImage) -> bytes:
    """The bytes of the kernel that runs: ``data`` itself, or what it wraps."""
    if image.format is ImageFormat.EFI_ZBOOT:
        return zboot_payload(data)
    if image.format is ImageFormat.COMPRESSED:
        return decompress(image.compression, data)
    if image.format is ImageFormat.UKI and image.pe is not None:
        offset, size = image.pe.section(".linux") or (0, 0)
        return data[offset : offset + size]
    return data


# ---------------------------------------------------------------- main ----


def _what_else(data: bytes) -> str:
    if data.startswith(b"\x7fELF"):
        return (
            "is an ELF file (an uncompressed vmlinux?), not a boot image: stage the "
            "distribution's vmlinuz instead"
        )
    if data[:6] in (b"070701", b"070702", b"070707"):
        return "is a cpio archive (an initramfs?), not a kernel"
    if data.startswith(b"#!") or (data[:512].isascii() and b"\0" not in data[:512]):
        return "is a text file, not a kernel"
    if len(data) > 0x206 and _u16(data, 0x1FE) == 0xAA55:
        found = data[0x202:0x206]
        return (
            f"has an x86 boot sector but no setup header magic 'HdrS' at 0x202 (found {found!r}): "
            "not a bzImage, or a damaged one"
        )
    return (
        "is not a Linux kernel image: no x86 setup header ('HdrS' at 0x202), no arm64 "
        "Image magic ('ARM\\x64' at 0x38), no EFI zboot or PE header"
    )


def parse_image(data: bytes, depth: int = 0) -> KernelImage:
    """Recognise ``data`` as a kernel image, or raise ImageError saying what it is instead."""
    if depth > 2:
        raise ImageError("nests compressed images too deeply to be a kernel")
    if len(data) >= 0x206 and data[0x202:0x206] == b"HdrS":
        return _parse_bzimage(data)
    if len(data) >= 0x40 and data[0x38:0x3C] == b"ARM\x64":
        return _parse_arm64(data)
    if data[:2] == b"MZ" and data[4:8] == b"zimg":
        return _parse_zboot(data, depth)
    if data[:2] == b"MZ":
        pe = parse_pe(data)
        if pe is not None and pe.section(".linux") is not None:
            offset, size = pe.section(".linux") or (0, 0)
            if offset + size > len(data):
                raise ImageError("truncated: its .linux section runs past the end of the file")
            inner = parse_image(data[offset : offset + size], depth + 1)
            uname = pe.section(".uname")
            version = inner.version
            if uname is not None and not version:
                version = (
                    data[uname[0] : uname[0] + uname[1]].rstrip(b"\0").decode("ascii", "replace")
                )
            return KernelImage(
                format=ImageFormat.UKI,
                arch=inner.arch,
                version=version,
                size=len(data),
                pe=pe,
                inner=inner,
            )
        raise ImageError(
            "is a PE/EFI executable but not a Linux kernel (no 'HdrS' setup header, no arm64 "
            "Image magic, no zboot payload, no .linux section)"
        )
    kind = compression_of(data)
    if kind:
        try:
            inner = parse_image(decompress(kind, data), depth + 1)
        except ImageError as e:
            text = str(e)
            if text.startswith(f"is {kind}-compressed"):
                raise
            raise ImageError(f"is {kind}-compressed, and what it holds {text}") from None
        return KernelImage(
            format=ImageFormat.COMPRESSED,
            arch=inner.arch,
            version=inner.version,
            size=len(data),
            compression=kind,
            inner=inner,
        )
    if len(data) < MIN_SIZE:
        raise ImageError(
            f"truncated: {len(data)} bytes is too short to be a kernel (at least {MIN_SIZE})"
        )
    raise ImageError(_what_else(data))


def cmdline_limit(image: KernelImage, default_size: int) -> int:
    """The longest command line (bytes, trailing NUL excluded) the kernel accepts via kexec.

    ``default_size`` is the architecture's COMMAND_LINE_SIZE (NUL included),
    used when the image does not state a limit.
    """
    kernel = image.kernel
    if kernel.format is ImageFormat.BZIMAGE:
        size = kernel.cmdline_size or 255
        # cmdline_len (with NUL) + X86_ELFCOREHDR_RESERVE must not exceed cmdline_size.
        return max(size - X86_ELFCOREHDR_RESERVE - 1, 0)
    return default_size - 1


def load_footprint(image: KernelImage, file_size: int, initrd_size: int) -> int:
    """Bytes of memory kexec_file_load needs at its peak (file buffers plus segments)."""
    kernel = image.kernel
    segment = max(kernel.init_size, kernel.size)
    return file_size + segment + 2 * initrd_size + (1 << 20)
