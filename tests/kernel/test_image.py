"""Kernel image headers: constructed images for each case, and real Debian kernels."""

from __future__ import annotations

import gzip
import lzma
import struct
from typing import TypedDict

import pytest

from liveupd.kernel.image import (
    ImageError,
    ImageFormat,
    cmdline_limit,
    embedded_kernel,
    parse_image,
)
from tests.kernels import (
    DEBIAN_KERNELS,
    DEBIAN_UNSIGNED,
    Unavailable,
    arm64_image,
    bzimage,
    debian_kernel,
    strip_signature,
    uki,
    zboot,
)

R = "6.1.0-56-cloud-amd64"


class HeaderFields(TypedDict, total=False):
    """The setup-header fields of ``bzimage`` a case overrides."""

    protocol: int
    loadflags: int
    xloadflags: int


def test_valid_bzimage() -> None:
    image = parse_image(bzimage(R))
    assert image.format is ImageFormat.BZIMAGE
    assert image.arch == "x86_64"
    assert image.release == R
    assert image.protocol == 0x020F
    assert image.kexec64_problem == ""
    assert not image.signed
    # cmdline_size 2047, minus the 30 bytes x86 kexec keeps for elfcorehdr=, minus the NUL.
    assert cmdline_limit(image, 2048) == 2016


def test_signed_bzimage_has_a_certificate_table() -> None:
    image = parse_image(bzimage(R, signed=True))
    assert image.pe is not None and image.signed
    assert not parse_image(strip_signature(bzimage(R, signed=True))).signed
    assert not parse_image(bzimage(R, pe=True)).signed


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (bzimage(R)[:0x300], "truncated"),
        (bzimage(R)[:0x100], "truncated"),
        (bzimage(R)[:3000], "truncated: its setup header describes"),
        (bzimage(R)[:10], "truncated"),
        (bzimage(R, magic=b"HdrX"), "no setup header magic 'HdrS' at 0x202 (found b'HdrX')"),
        (bzimage(R, protocol=0x0205), "boot protocol 2.05; liveupd needs 2.06 or newer"),
        (b"\x7fELF" + b"\0" * 5000, "an ELF file (an uncompressed vmlinux?)"),
        (b"070701" + b"\0" * 5000, "a cpio archive (an initramfs?), not a kernel"),
        (b"#!/bin/sh\necho hello\n" * 100, "a text file, not a kernel"),
        (bytes(range(256)) * 20, "is not a Linux kernel image"),
        (b"MZ" + b"\0" * 5000, "not a Linux kernel"),
        (zboot(arm64_image(R), compression="lz4"), "lz4-compressed; liveupd can only"),
        (gzip.compress(b"not a kernel at all" * 100), "is a text file"),
        (b"\x1f\x8b" + b"garbage" * 200, "gzip-compressed but does not decompress"),
    ],
    ids=[
        "truncated-setup",
        "truncated-header",
        "truncated-payload",
        "tiny",
        "wrong-magic",
        "protocol-2.05",
        "elf",
        "cpio",
        "text",
        "random",
        "pe-without-kernel",
        "zboot-lz4",
        "gzip-of-text",
        "bad-gzip",
    ],
)
def test_refused_images_say_why(data: bytes, expected: str) -> None:
    with pytest.raises(ImageError) as e:
        parse_image(data)
    assert expected in str(e.value)


def test_a_truncated_signature_is_reported() -> None:
    data = bzimage(R, signed=True)
    with pytest.raises(ImageError, match=r"signature .* runs past the end"):
        parse_image(data[:-10])


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"protocol": 0x020B}, "boot protocol 2.11 is older than 2.12"),
        ({"loadflags": 0}, "zImage"),
        ({"xloadflags": 0}, "32-bit kernel"),
        ({"xloadflags": 1}, "cannot be loaded above 4 GiB"),
    ],
)
def test_x86_64_kexec_needs_a_64_bit_relocatable_bzimage(
    kwargs: HeaderFields, problem: str
) -> None:
    assert problem in parse_image(bzimage(R, **kwargs)).kexec64_problem


def test_version_string_is_what_the_header_points_at() -> None:
    data = bytearray(bzimage(R))
    struct.pack_into("<H", data, 0x20E, 0)
    assert parse_image(bytes(data)).version == ""
    struct.pack_into("<H", data, 0x20E, 0x2000)
    with pytest.raises(ImageError, match="points outside the setup code"):
        parse_image(bytes(data))
    assert parse_image(bzimage(R, version="6.9.0-1-amd64 (x)")).release == "6.9.0-1-amd64"


def test_old_protocol_without_cmdline_size_gets_255() -> None:
    image = parse_image(bzimage(R, protocol=0x0206, cmdline_size=0))
    assert cmdline_limit(image, 2048) == 255 - 31


def test_arm64_image() -> None:
    image = parse_image(arm64_image("6.1.0-56-arm64"))
    assert image.format is ImageFormat.ARM64_IMAGE
    assert image.arch == "aarch64"
    assert image.release == "6.1.0-56-arm64"
    assert cmdline_limit(image, 2048) == 2047
    assert not image.signed
    assert parse_image(arm64_image("6.1.0-56-arm64", signed=True)).signed


def test_arm64_image_without_banner_has_no_version() -> None:
    data = bytearray(arm64_image("6.1.0-56-arm64"))
    data[0x1000:0x1100] = bytes(0x100)
    assert parse_image(bytes(data)).version == ""


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress])
def test_compressed_arm64_image(compress: object) -> None:
    inner = arm64_image("6.1.0-56-arm64")
    data = compress(inner)  # type: ignore[operator]
    image = parse_image(data)
    assert image.format is ImageFormat.COMPRESSED
    assert image.kernel.format is ImageFormat.ARM64_IMAGE
    assert image.release == "6.1.0-56-arm64"
    assert embedded_kernel(data, image) == inner


def test_efi_zboot_with_an_embedded_arm64_image() -> None:
    inner = arm64_image("6.12.0-1-arm64")
    data = zboot(inner, signed=True)
    image = parse_image(data)
    assert image.format is ImageFormat.EFI_ZBOOT
    assert image.compression == "gzip"
    assert image.kernel.format is ImageFormat.ARM64_IMAGE
    assert image.release == "6.12.0-1-arm64"
    assert image.signed  # the zboot PE's own signature
    assert embedded_kernel(data, image) == inner


def test_zboot_payload_past_the_end_is_truncated() -> None:
    data = zboot(arm64_image("6.12.0-1-arm64"))
    with pytest.raises(ImageError, match=r"zboot payload .* runs past the end"):
        parse_image(data[:-20])


def test_unified_kernel_image_is_recognised() -> None:
    image = parse_image(uki(bzimage(R)))
    assert image.format is ImageFormat.UKI
    assert image.kernel.format is ImageFormat.BZIMAGE
    assert image.release == R


# ------------------------------------------------------------ real kernels ----


def _debian(package: str) -> bytes:
    try:
        return debian_kernel(package).read_bytes()
    except Unavailable as e:
        pytest.skip(f"cannot fetch {package} with apt: {e}")


@pytest.mark.parametrize("package", DEBIAN_KERNELS)
def test_real_debian_kernels(package: str) -> None:
    data = _debian(package)
    image = parse_image(data)
    release = package.removeprefix("linux-image-")
    assert image.format is ImageFormat.BZIMAGE
    assert image.release == release
    assert image.version.startswith(f"{release} (debian-kernel@lists.debian.org)")
    assert image.protocol >= 0x020C
    assert image.kexec64_problem == ""
    assert image.signed, "Debian's linux-image packages carry a signed kernel"
    assert cmdline_limit(image, 2048) == 2047 - 31


def test_real_unsigned_and_stripped_kernels_have_no_signature() -> None:
    assert not parse_image(_debian(DEBIAN_UNSIGNED)).signed
    stripped = strip_signature(_debian(DEBIAN_KERNELS[0]))
    image = parse_image(stripped)
    assert not image.signed
    assert image.release == DEBIAN_KERNELS[0].removeprefix("linux-image-")


def test_real_kernel_truncated() -> None:
    data = _debian(DEBIAN_KERNELS[0])
    with pytest.raises(ImageError, match="truncated"):
        parse_image(data[: len(data) // 2])
