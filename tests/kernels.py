"""Kernel images for tests: constructed ones (just enough of a real header to pass
or fail each check) and real Debian ones fetched with apt into a cache outside
the repository."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

SETUP_SECTS = 4
LOADED_HIGH = 0x01
XLF_64 = 0x03  # XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
PE_OFFSET = 0x40
FAKE_SIGNATURE = b"\x30\x82" + b"\x5a" * 254  # looks like a PKCS#7 blob; nobody verifies it


def _pe_header(
    machine: int, sections: list[tuple[bytes, int, int]], cert: tuple[int, int]
) -> bytes:
    """A minimal PE32+ header (signature, COFF, optional header, section table)."""
    coff = struct.pack("<HHIIIHH", machine, len(sections), 0, 0, 0, 240, 0x0206)
    opt = bytearray(240)
    struct.pack_into("<H", opt, 0, 0x20B)
    struct.pack_into("<I", opt, 108, 16)  # NumberOfRvaAndSizes
    struct.pack_into("<II", opt, 112 + 4 * 8, *cert)  # the certificate table
    table = b"".join(
        struct.pack("<8sIIIIIIHHI", name, size, offset, size, offset, 0, 0, 0, 0, 0)
        for name, offset, size in sections
    )
    return b"PE\0\0" + coff + bytes(opt) + table


def _with_pe(img: bytearray, machine: int, signed: bool) -> bytes:
    """Make ``img`` an EFI PE as well (MZ at 0, PE header at 0x40), optionally signed."""
    img[0:2] = b"MZ"
    struct.pack_into("<I", img, 0x3C, PE_OFFSET)
    cert = (len(img), len(FAKE_SIGNATURE) + 8) if signed else (0, 0)
    pe = _pe_header(machine, [], cert)
    img[PE_OFFSET : PE_OFFSET + len(pe)] = pe
    if signed:
        img += struct.pack("<IHH", len(FAKE_SIGNATURE) + 8, 0x0200, 0x0002) + FAKE_SIGNATURE
    return bytes(img)


def bzimage(
    release: str,
    *,
    protocol: int = 0x020F,
    magic: bytes = b"HdrS",
    signed: bool = False,
    pe: bool | None = None,
    loadflags: int = LOADED_HIGH,
    xloadflags: int = XLF_64,
    cmdline_size: int = 2047,
    version: str | None = None,
    payload: int = 4096,
) -> bytes:
    """A minimal x86 bzImage: boot sector flag, setup header, kernel version string."""
    setup = (SETUP_SECTS + 1) * 512
    img = bytearray(setup + payload)
    img[0x1F1] = SETUP_SECTS
    struct.pack_into("<I", img, 0x1F4, payload // 16)  # syssize
    img[0x1FE:0x200] = b"\x55\xaa"
    img[0x202:0x206] = magic
    struct.pack_into("<H", img, 0x206, protocol)
    if version is None:
        version = f"{release} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC"
    text = version.encode() + b"\0"
    offset = 0x400  # inside the setup sectors
    img[offset : offset + len(text)] = text
    struct.pack_into("<H", img, 0x20E, offset - 0x200)
    img[0x211] = loadflags
    struct.pack_into("<H", img, 0x236, xloadflags)
    struct.pack_into("<I", img, 0x238, cmdline_size)
    struct.pack_into("<I", img, 0x260, 64 << 20)  # init_size
    if pe or (pe is None and signed):
        return _with_pe(img, 0x8664, signed)
    return bytes(img)


def arm64_image(release: str, *, signed: bool = False, size: int = 8192) -> bytes:
    """A minimal arm64 Image: the 64-byte header (magic ARM\\x64 at 0x38) and a banner."""
    img = bytearray(size)
    struct.pack_into("<QQ", img, 8, 0, size)  # text_offset, image_size
    img[0x38:0x3C] = b"ARM\x64"
    banner = f"Linux version {release} (debian-kernel@lists.debian.org) (gcc-12) #1 SMP\n\0"
    img[0x1000 : 0x1000 + len(banner)] = banner.encode()
    if signed:
        return _with_pe(img, 0xAA64, True)
    return bytes(img)


def zstd_compress(data: bytes) -> bytes:
    import zstandard

    return bytes(zstandard.ZstdCompressor(level=3).compress(data))


def zboot(inner: bytes, *, compression: str = "gzip", signed: bool = False) -> bytes:
    """An EFI zboot image holding ``inner`` compressed (as drivers/firmware/efi/libstub makes)."""
    payload = inner
    if compression == "gzip":
        payload = gzip.compress(inner, 1)
    elif compression.startswith("zstd"):
        payload = zstd_compress(inner)
    head = bytearray(0x400)
    head[0:4] = b"MZ\0\0"
    head[4:8] = b"zimg"
    struct.pack_into("<II", head, 8, len(head), len(payload))
    name = compression.encode()
    head[0x18 : 0x18 + len(name)] = name
    img = bytearray(head) + payload
    return _with_pe(img, 0xAA64, signed)


def uki(inner: bytes) -> bytes:
    """A unified kernel image: a PE whose .linux section holds ``inner``."""
    head = bytearray(0x400)
    head[0:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, PE_OFFSET)
    pe = _pe_header(0x8664, [(b".linux", len(head), len(inner))], (0, 0))
    head[PE_OFFSET : PE_OFFSET + len(pe)] = pe
    return bytes(head) + inner


FILE_ALIGN = 512


def make_uki(
    sections: list[tuple[str, bytes]], *, machine: int = 0x8664, stub_sections: int = 1
) -> bytes:
    """A UKI laid out as ukify/objcopy would: a PE whose sections follow the headers.

    Each section's raw data is padded to FILE_ALIGN (SizeOfRawData) while its
    VirtualSize is the exact length, so readers must use min(raw, virtual).
    ``stub_sections`` dummy ``.text`` sections come first, as in a real stub.
    """
    named = [(".text", b"\xc3" * 100)] * stub_sections + sections
    header_size = 0x400 + 40 * len(named)
    header_size += -header_size % FILE_ALIGN
    offset = header_size
    table: list[tuple[bytes, int, int, int]] = []  # name, offset, virtual size, raw size
    body = bytearray()
    for name, data in named:
        raw = len(data) + (-len(data) % FILE_ALIGN)
        table.append((name.encode(), offset, len(data), raw))
        body += data + bytes(raw - len(data))
        offset += raw
    head = bytearray(header_size)
    head[0:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, PE_OFFSET)
    coff = struct.pack("<HHIIIHH", machine, len(named), 0, 0, 0, 240, 0x0206)
    opt = bytearray(240)
    struct.pack_into("<H", opt, 0, 0x20B)
    struct.pack_into("<I", opt, 108, 16)
    rows = b"".join(
        struct.pack("<8sIIIIIIHHI", name, vsize, 0x1000 * (i + 1), raw, off, 0, 0, 0, 0, 0)
        for i, (name, off, vsize, raw) in enumerate(table)
    )
    pe = b"PE\0\0" + coff + bytes(opt) + rows
    head[PE_OFFSET : PE_OFFSET + len(pe)] = pe
    return bytes(head) + bytes(body)


CPIO_UCODE = b"070701" + b"U" * 122  # stands for an early-microcode cpio archive
CPIO_INITRD = b"070701" + b"I" * 506


def uki_sections(
    release: str,
    *,
    cmdline: str | None = "root=/dev/vda ro quiet",
    uname: bool = True,
    ucode: bool = True,
    kernel: bytes | None = None,
) -> list[tuple[str, bytes]]:
    """The usual sections of a distribution UKI (ukify's order: .linux last)."""
    out: list[tuple[str, bytes]] = [
        (".osrel", b'NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n')
    ]
    if cmdline is not None:
        out.append((".cmdline", cmdline.encode() + b"\0"))
    if uname:
        out.append((".uname", release.encode()))
    if ucode:
        out.append((".ucode", CPIO_UCODE))
    out.append((".initrd", CPIO_INITRD))
    out.append((".linux", kernel if kernel is not None else bzimage(release)))
    return out


def strip_signature(data: bytes) -> bytes:
    """What sbattach --remove does: empty the certificate table and drop the signature."""
    img = bytearray(data)
    pe = struct.unpack_from("<I", img, 0x3C)[0]
    opt = pe + 24
    magic = struct.unpack_from("<H", img, opt)[0]
    dirs = opt + (112 if magic == 0x20B else 96)
    offset, size = struct.unpack_from("<II", img, dirs + 4 * 8)
    struct.pack_into("<II", img, dirs + 4 * 8, 0, 0)
    if size:
        del img[offset : offset + size]
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


# ------------------------------------------------------ real Debian images ----

DEBIAN_KERNELS = ("linux-image-6.1.0-56-cloud-amd64", "linux-image-6.1.0-55-cloud-amd64")
DEBIAN_UNSIGNED = "linux-image-6.1.0-56-cloud-amd64-unsigned"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "liveupd-test" / "kernels"


class Unavailable(Exception):
    """The package could not be fetched (apt unreachable or the package gone)."""


def debian_kernel(package: str) -> Path:
    """/boot/vmlinuz-RELEASE from Debian's ``package``, fetched once into the cache."""
    cache = cache_dir()
    extracted = cache / "extracted" / package
    found = sorted(extracted.glob("boot/vmlinuz-*"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        if shutil.which("apt-get") is None:
            raise Unavailable("apt-get is not installed")
        result = subprocess.run(
            ["apt-get", "download", "-q", package],
            cwd=cache,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        debs = sorted(cache.glob(f"{package}_*.deb"))
        if not debs:
            raise Unavailable(
                f"apt-get download {package} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-300:]}"
            )
    tmp = extracted.with_name(extracted.name + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], check=True, timeout=600)
    shutil.rmtree(extracted, ignore_errors=True)
    tmp.rename(extracted)
    return sorted(extracted.glob("boot/vmlinuz-*"))[0]


# ------------------------------------------------------ real arm64 kernels ----

ARM64_PACKAGE = re.compile(r"^linux-image-(\d+\.\d+\.\d+-\d+)-cloud-arm64$")


def _arm64_apt(cache: Path) -> list[str]:
    """apt options for a private arm64 package list (the host's sources, its own state).

    Nothing of the host's apt configuration or dpkg database is changed: no
    architecture is added to the host.
    """
    state = cache / "apt-arm64"
    for d in ("state/lists/partial", "cache/archives/partial"):
        (state / d).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    return [
        "-o",
        f"Dir::State={state / 'state'}",
        "-o",
        f"Dir::State::status={state / 'status'}",
        "-o",
        f"Dir::Cache={state / 'cache'}",
        "-o",
        "APT::Architecture=arm64",
        "-o",
        "APT::Architectures::=arm64",
        "-o",
        "Debug::NoLocking=1",
    ]


def debian_arm64_kernel() -> Path:
    """The newest Debian cloud-arm64 kernel's /boot/vmlinuz (fetched once into the cache)."""
    cache = cache_dir()
    found = sorted((cache / "extracted").glob("linux-image-*-cloud-arm64/boot/vmlinuz-*"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise Unavailable("apt-get is not installed")
    opts = _arm64_apt(cache)
    update = subprocess.run(
        ["apt-get", *opts, "update", "-q"], capture_output=True, text=True, timeout=600, check=False
    )
    listing = subprocess.run(
        ["apt-cache", *opts, "pkgnames", "linux-image-"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = [n for n in listing.stdout.split() if ARM64_PACKAGE.match(n)]
    if not names:
        raise Unavailable(
            f"no linux-image-*-cloud-arm64 in the package lists (apt-get update: "
            f"{update.returncode} {update.stderr.strip()[-200:]})"
        )
    from liveupd.kernel.versions import version_key

    package = max(names, key=lambda n: version_key(n.removeprefix("linux-image-")))
    result = subprocess.run(
        ["apt-get", *opts, "download", "-q", package],
        check=False,
        cwd=cache,
        capture_output=True,
        text=True,
        timeout=600,
    )
    debs = sorted(cache.glob(f"{package}_*_arm64.deb"))
    if not debs:
        raise Unavailable(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
    out = cache / "extracted" / package
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], check=True, timeout=600)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return sorted(out.glob("boot/vmlinuz-*"))[0]


# ------------------------------------------- UKIs on systemd's real stub ----

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")  # Debian: systemd-boot-efi


def objcopy_uki(out: Path, sections: list[tuple[str, bytes]], stub: Path = STUB) -> Path:
    """A UKI as systemd documents building one by hand: objcopy the sections onto the stub.

    Sections are added in order under unique names, then renamed, so a name may
    repeat (a multi-profile UKI has several .profile and .cmdline sections).
    Each gets its own page-aligned virtual address after the stub's.
    """
    if shutil.which("objcopy") is None:
        raise Unavailable("objcopy is not installed (Debian: binutils)")
    if not stub.exists():
        raise Unavailable(f"{stub} is missing (Debian: systemd-boot-efi)")
    work = out.with_name(out.name + ".parts")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    add: list[str] = []
    rename: list[str] = []
    vma = 0x1000000
    for i, (name, data) in enumerate(sections):
        temp = f".s{i}"
        (work / temp).write_bytes(data)
        add += [
            "--add-section",
            f"{temp}={work / temp}",
            "--change-section-vma",
            f"{temp}={vma:#x}",
        ]
        add += ["--set-section-flags", f"{temp}=contents,alloc,load,readonly,data"]
        rename += ["--rename-section", f"{temp}={name}"]
        vma += len(data) + (-len(data) % 0x1000) + 0x1000
    first = work / "with-sections.efi"
    subprocess.run(["objcopy", *add, str(stub), str(first)], check=True, timeout=300)
    subprocess.run(["objcopy", *rename, str(first), str(out)], check=True, timeout=300)
    shutil.rmtree(work)
    out.chmod(0o644)
    return out


def newc_cpio(files: dict[str, bytes]) -> bytes:
    """A cpio archive in the kernel's newc format (an early-microcode initrd, say)."""
    out = bytearray()
    entries = [*files.items(), ("TRAILER!!!", b"")]
    for ino, (name, data) in enumerate(entries, start=1):
        mode = 0o100644 if data or name != "TRAILER!!!" else 0
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        header = b"070701" + b"".join(f"{f:08X}".encode() for f in fields)
        out += header + name.encode() + b"\0"
        out += bytes(-len(out) % 4)
        out += data + bytes(-len(data) % 4)
    out += bytes(-len(out) % 512)
    return bytes(out)
