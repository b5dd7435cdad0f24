"""Real images: UKIs built on systemd's stub from Debian kernels, Debian's arm64 kernel.

The amd64 kernels are Debian's (tests/kernels.py fetches them with apt into the
user's cache); the stub is Debian's systemd-boot-efi (linuxx64.efi.stub), and the
sections are objcopy'd onto it as systemd documents (bookworm has no ukify).
The arm64 kernel is Debian's newest cloud-arm64 package, fetched with a private
arm64 package list; Debian ships it as a plain (signed) Image, so the
compressed forms other distributions ship (gzip, xz, zstd, EFI zboot) are made
from it here with the real compressors.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
from pathlib import Path

import pytest

from liveupd.config import Config
from liveupd.errors import SignatureRejected
from liveupd.kernel.arch import ARCHES, Arch, ArchInfo
from liveupd.kernel.discovery import Source, scan
from liveupd.kernel.image import ImageFormat, parse_image
from liveupd.kernel.loader import RealKexec
from liveupd.kernel.pe import read_pe
from liveupd.kernel.resolve import checked, open_target, resolve
from liveupd.kernel.stageable import StageableKernels
from liveupd.transition.context import StageRequest
from tests.kernel.conftest import FakeKernel, config_for
from tests.kernel.test_resolve import TID, FakeSystem
from tests.kernels import (
    DEBIAN_KERNELS,
    DEBIAN_UNSIGNED,
    Unavailable,
    debian_arm64_kernel,
    debian_kernel,
    newc_cpio,
    objcopy_uki,
    zboot,
    zstd_compress,
)

B = DEBIAN_KERNELS[0].removeprefix("linux-image-")
A = DEBIAN_KERNELS[1].removeprefix("linux-image-")
UCODE = newc_cpio({"kernel/x86/microcode/GenuineIntel.bin": b"\x01\x00\x00\x00" * 512})
INITRD = gzip.compress(newc_cpio({"init": b"#!/bin/sh\nexec /sbin/init\n"}))
BASE_CMDLINE = "root=/dev/vda ro console=ttyS0 liveupd.test=uki"
RESCUE_CMDLINE = "root=/dev/vda ro console=ttyS0 systemd.unit=rescue.target"


def fetch(package: str) -> Path:
    try:
        return debian_kernel(package)
    except Unavailable as e:
        pytest.skip(f"cannot fetch {package} with apt: {e}")


def sections(kernel: bytes, release: str, *, uname: bool = True) -> list[tuple[str, bytes]]:
    """A two-profile UKI's sections in ukify's order (.linux after the small ones)."""
    out = [
        (".osrel", b'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'),
        (".cmdline", BASE_CMDLINE.encode()),
    ]
    if uname:
        out.append((".uname", release.encode()))
    out += [
        (".ucode", UCODE),
        (".initrd", INITRD),
        (".linux", kernel),
        (".profile", b"ID=regular\nTITLE=Regular boot\n"),
        (".profile", b"ID=rescue\nTITLE=Rescue\n"),
        (".cmdline", RESCUE_CMDLINE.encode()),
    ]
    return out


def real_uki(path: Path, package: str = DEBIAN_KERNELS[0], *, uname: bool = True) -> Path:
    kernel = fetch(package).read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return objcopy_uki(path, sections(kernel, B, uname=uname))
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture
def boot(tmp_path: Path) -> Path:
    """/boot with Debian's kernel A (and its initrd); kernel B only as a UKI in EFI/Linux."""
    b = tmp_path / "boot"
    b.mkdir()
    src = fetch(DEBIAN_KERNELS[1])
    shutil.copyfile(src, b / src.name)
    (b / f"initrd.img-{A}").write_bytes(b"070701" + bytes(512))
    return b


def config(tmp_path: Path, boot: Path, signature: str = "auto") -> Config:
    return config_for(tmp_path, [boot], signature)


def test_real_uki_is_read_like_systemd_stub_reads_it(tmp_path: Path, boot: Path) -> None:
    path = real_uki(boot / "EFI/Linux/debian-real.efi")
    data = path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        pe = read_pe(fd, len(data))
    finally:
        os.close(fd)
    assert pe is not None and pe.arch == "x86_64"
    names = [s.name for s in pe.sections]
    assert names[:2] == [".text", ".reloc"] and ".sdmagic" in names  # the stub's own
    assert names.count(".profile") == 2 and names.count(".cmdline") == 2
    linux = pe.find(".linux")
    assert linux is not None
    assert data[linux.offset : linux.offset + linux.size] == fetch(DEBIAN_KERNELS[0]).read_bytes()


def test_real_uki_is_listed_and_staged_with_its_own_command_line(
    tmp_path: Path, boot: Path, fake_kernel: FakeKernel
) -> None:
    path = real_uki(boot / "EFI/Linux/debian-real.efi")
    c = config(tmp_path, boot)
    found = {k.release: k for k in scan(c, A).kernels}
    assert found[B].source is Source.UKI and found[B].kernel_path == str(path)
    assert found[B].profiles == ("@0 (regular)", "@1 (rescue)")
    r = resolve(StageRequest(), c, FakeSystem(), TID)  # the latest: B, as a UKI
    assert r.target.release == B and r.target.profile == "@0"
    assert r.target.cmdline == f"{BASE_CMDLINE} liveupd.transition={TID}"
    assert r.image.format is ImageFormat.BZIMAGE and r.image.signed  # Debian's signed kernel
    kexec = RealKexec(c, root=fake_kernel.machine.root)
    with open_target(r.target, c, initrd_sha256=r.initrd_sha256) as opened:
        kexec.load(opened, r.target.cmdline)
        loaded = os.pread(opened.kernel_fd, 64 << 20, 0)
        assert opened.initrd_fd is not None
        initrd = os.pread(opened.initrd_fd, 64 << 20, 0)
    want = fetch(DEBIAN_KERNELS[0]).read_bytes()
    assert hashlib.sha256(loaded).digest() == hashlib.sha256(want).digest()
    assert initrd == UCODE + INITRD + bytes(-len(INITRD) % 4)
    [seen] = fake_kernel.loads
    assert seen.cmdline == r.target.cmdline.encode()
    rescue = resolve(StageRequest(profile="rescue"), c, FakeSystem(), TID)
    assert rescue.target.cmdline == f"{RESCUE_CMDLINE} liveupd.transition={TID}"


def test_real_uki_without_uname_takes_the_kernel_headers_release(
    tmp_path: Path, boot: Path
) -> None:
    real_uki(boot / "EFI/Linux/no-uname.efi", uname=False)
    found = {k.release: k for k in scan(config(tmp_path, boot), A).kernels}
    assert found[B].source is Source.UKI


def test_signature_require_with_signed_and_unsigned_linux(tmp_path: Path, boot: Path) -> None:
    path = real_uki(boot / "EFI/Linux/debian-real.efi")
    strict = config(tmp_path, boot, "require")
    assert resolve(StageRequest(kernel=str(path)), strict, FakeSystem(), TID).image.signed
    real_uki(path, DEBIAN_UNSIGNED)
    with pytest.raises(SignatureRejected, match=r"\(its \.linux section\): .*no embedded"):
        resolve(StageRequest(kernel=str(path)), strict, FakeSystem(), TID)
    r = resolve(StageRequest(kernel=str(path)), config(tmp_path, boot), FakeSystem(), TID)
    assert any("no signature of its own" in w for w in r.warnings)


def test_latest_never_names_a_kernel_stage_would_refuse(tmp_path: Path, boot: Path) -> None:
    """The issue's case: a text file and a real kernel under a release it is not."""
    shutil.copyfile(fetch(DEBIAN_KERNELS[0]), boot / f"vmlinuz-{B}")
    (boot / f"initrd.img-{B}").write_bytes(b"070701" + bytes(512))
    renamed = "6.1.0-99-cloud-amd64"  # holds kernel A
    shutil.copyfile(fetch(DEBIAN_KERNELS[1]), boot / f"vmlinuz-{renamed}")
    (boot / f"initrd.img-{renamed}").write_bytes(b"070701" + bytes(512))
    (boot / "vmlinuz-9.9.9-text").write_text("not a kernel\n" * 100)
    (boot / "initrd.img-9.9.9-text").write_bytes(b"070701" + bytes(512))
    c = config(tmp_path, boot)
    kernels = scan(c, A).kernels
    assert [k.release for k in kernels][-2:] == [renamed, "9.9.9-text"]
    cache = StageableKernels()
    latest = cache.latest(kernels, c)
    assert latest is not None and latest.release == B
    runs = cache.checks_run
    assert runs == 3  # the text file, the renamed kernel, then B
    verdicts = {k.release: cache.verdict(k, kernels, c) for k in kernels}
    assert "is a text file" in verdicts["9.9.9-text"].problem
    assert f"is kernel {A}, not {renamed} as asked" in verdicts[renamed].problem
    assert cache.checks_run == runs + 1  # only A was new: the rest came from the cache
    assert cache.latest(kernels, c) == latest and cache.checks_run == runs + 1
    assert resolve(StageRequest(), c, FakeSystem(), TID).target.release == B
    (boot / "vmlinuz-9.9.9-text").unlink()
    shutil.copyfile(fetch(DEBIAN_KERNELS[0]), boot / "vmlinuz-9.9.9-text")  # a new file: checked
    cache.latest(scan(c, A).kernels, c)
    assert cache.checks_run == runs + 2


# ----------------------------------------------------------------- arm64 ----

ARM = ARCHES[Arch.AARCH64]


@pytest.fixture(scope="module")
def arm64_image() -> tuple[bytes, str]:
    try:
        path = debian_arm64_kernel()
    except Unavailable as e:
        pytest.skip(f"cannot fetch Debian's arm64 kernel: {e}")
    return path.read_bytes(), path.name.removeprefix("vmlinuz-")


def test_real_arm64_image_header(arm64_image: tuple[bytes, str]) -> None:
    data, release = arm64_image
    image = parse_image(data)
    assert image.format is ImageFormat.ARM64_IMAGE and image.arch == "aarch64"
    assert image.release == release and image.signed  # Debian signs its arm64 Image


def compressed(data: bytes, form: str) -> bytes:
    """``data`` as other distributions ship arm64 kernels (fast compression levels)."""
    if form == "gzip":
        return gzip.compress(data, 1, mtime=0)
    if form == "xz":
        return lzma.compress(data, lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=0)
    if form == "zstd":
        return zstd_compress(data)
    return zboot(data, compression=form.removeprefix("zboot-"))


def staged_unpacked(
    tmp_path: Path,
    packed: bytes,
    data: bytes,
    release: str,
    fmt: ImageFormat,
    arch: ArchInfo | None = None,
) -> tuple[Path, Config]:
    """``packed`` as /boot/vmlinuz-R: checked, unpacked into a sealed memfd that holds
    exactly ``data`` (an image of format ``fmt``); the path and the config used."""
    boot = tmp_path / "boot"
    boot.mkdir()
    path = boot / f"vmlinuz-{release}"
    path.write_bytes(packed)
    c = config_for(tmp_path, [boot])
    with checked(c, str(path), None, release, arch=arch) as ck:
        assert ck.extracted and ck.release == release
        assert ck.image.kernel.format is fmt
        unpacked = os.pread(ck.load_fd, len(data) + 1, 0)
        assert hashlib.sha256(unpacked).digest() == hashlib.sha256(data).digest()
        with pytest.raises(PermissionError):
            os.pwrite(ck.load_fd, b"x", 0)
    return path, c


@pytest.mark.parametrize("form", ["gzip", "xz", "zstd"])
def test_real_x86_kernel_compressed_whole_is_unpacked_into_a_sealed_memfd(
    tmp_path: Path, form: str
) -> None:
    # A bzImage compressed as a whole file (as some distributions and hand-built
    # kernels come): unpacked, its inner header checked, and loaded from a memfd.
    data = fetch(DEBIAN_KERNELS[0]).read_bytes()
    staged_unpacked(tmp_path, compressed(data, form), data, B, ImageFormat.BZIMAGE)


@pytest.mark.parametrize("form", ["gzip", "xz", "zstd", "zboot-gzip", "zboot-zstd22"])
def test_real_arm64_kernel_unpacked_into_a_sealed_memfd(
    tmp_path: Path, arm64_image: tuple[bytes, str], form: str
) -> None:
    data, release = arm64_image
    path, c = staged_unpacked(
        tmp_path, compressed(data, form), data, release, ImageFormat.ARM64_IMAGE, arch=ARM
    )
    # On x86_64 the same file is an aarch64 kernel, refused before anything is unpacked.
    with pytest.raises(Exception, match="is an aarch64 kernel"):
        resolve(StageRequest(kernel=str(path), initrd="none"), c, FakeSystem(), TID)
