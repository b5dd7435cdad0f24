"""Unified kernel images: the PE reader, profiles, each section rule, staging from memfds."""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from liveupd.config import Config
from liveupd.errors import InvalidArgument, InvalidKernel, SignatureRejected
from liveupd.kernel import memfd
from liveupd.kernel.arch import ARCHES, Arch
from liveupd.kernel.discovery import Source, scan
from liveupd.kernel.loader import RealKexec
from liveupd.kernel.pe import PeError, read_pe
from liveupd.kernel.resolve import UNSIGNED_LINUX, Resolved, open_target, resolve
from liveupd.kernel.uki import Name, Rule, UkiError, assess, find_profile, read_uki, rule_of, view
from liveupd.transition.context import StageRequest
from tests.kernel.conftest import FakeKernel, config_for
from tests.kernel.test_resolve import TID, FakeSystem
from tests.kernels import (
    CPIO_INITRD,
    CPIO_UCODE,
    arm64_image,
    bzimage,
    install_kernel,
    make_uki,
    uki_sections,
)

R = "6.12.48+deb13-cloud-amd64"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)
    return path


@pytest.fixture
def fd_of(tmp_path: Path) -> Iterator[object]:
    opened: list[int] = []

    def open_bytes(data: bytes) -> int:
        p = tmp_path / f"f{len(opened)}"
        p.write_bytes(data)
        fd = os.open(p, os.O_RDONLY)
        opened.append(fd)
        return fd

    yield open_bytes
    for fd in opened:
        os.close(fd)


def parsed(fd_of: object, sections: list[tuple[str, bytes]], **kw: int):  # type: ignore[no-untyped-def]
    data = make_uki(sections, **kw)
    fd = fd_of(data)  # type: ignore[operator]
    pe = read_pe(fd, len(data))
    assert pe is not None
    return fd, pe, read_uki(fd, pe)


# ------------------------------------------------------------------ PE ----


def test_pe_sections_use_the_smaller_of_raw_and_virtual_size(fd_of: object) -> None:
    fd, pe, _ = parsed(fd_of, [(".cmdline", b"quiet"), (".linux", bzimage(R))])
    cmdline = pe.find(".cmdline")
    assert cmdline is not None and cmdline.size == 5 and cmdline.raw_size == 512
    assert pe.arch == "x86_64" and not pe.signed
    assert os.pread(fd, cmdline.size, cmdline.offset) == b"quiet"


def test_pe_reader_refuses_a_truncated_section_and_passes_over_non_pe(fd_of: object) -> None:
    data = make_uki([(".linux", bzimage(R))])
    fd = fd_of(data[:-4096])  # type: ignore[operator]
    with pytest.raises(PeError, match=r"truncated: its section '\.linux'"):
        read_pe(fd, len(data) - 4096)
    assert read_pe(fd_of(bzimage(R)), len(bzimage(R))) is None  # type: ignore[operator]
    assert read_pe(fd_of(b"#!/bin/sh\n" * 100), 1000) is None  # type: ignore[operator]


# ------------------------------------------------------------ profiles ----


def two_profiles() -> list[tuple[str, bytes]]:
    return [
        (".osrel", b'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n'),
        (".cmdline", b"root=/dev/vda ro quiet"),
        (".uname", R.encode()),
        (".linux", bzimage(R)),
        (".profile", b"ID=regular\nTITLE=Regular boot\n"),
        (".profile", b'ID=rescue\nTITLE="Rescue shell"\n'),
        (".cmdline", b"root=/dev/vda ro systemd.unit=rescue.target"),
    ]


def test_profiles_override_the_base_and_default_to_0(fd_of: object) -> None:
    _, _, u = parsed(fd_of, two_profiles())
    assert [p.label for p in u.profiles] == ["@0 (regular)", "@1 (rescue)"]
    default = view(u, find_profile(u, ""))
    assert default.profile is not None and default.profile.index == 0
    assert default.cmdline == "root=/dev/vda ro quiet"  # @0 has none: the base's
    rescue = view(u, find_profile(u, "rescue"))
    assert rescue.cmdline == "root=/dev/vda ro systemd.unit=rescue.target"
    assert rescue.get(Name.LINUX) == default.get(Name.LINUX)  # from the base
    assert rescue.title == "Debian GNU/Linux 13 (trixie) (Rescue shell)"
    assert find_profile(u, "@1") == find_profile(u, "1") == 1
    with pytest.raises(UkiError, match=r"has no profile @2 \(its profiles: @0 \(regular\), @1"):
        find_profile(u, "@2")
    with pytest.raises(UkiError, match="has no profile with ID 'factory'"):
        find_profile(u, "factory")


def test_a_uki_without_profiles_boots_its_base(fd_of: object) -> None:
    _, _, u = parsed(fd_of, uki_sections(R))
    assert u.profiles == ()
    assert find_profile(u, "") is None and find_profile(u, "@0") is None
    with pytest.raises(UkiError, match="has no profile @1"):
        find_profile(u, "@1")
    v = view(u, None)
    assert v.cmdline == "root=/dev/vda ro quiet" and v.uname == R  # the trailing NUL is gone


# --------------------------------------------------------- section rules ----

HONOURED = [".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".uname", ".profile"]


@pytest.mark.parametrize("name", HONOURED)
def test_honoured_sections(name: str) -> None:
    for arch in ("x86_64", "aarch64"):
        assert rule_of(name, arch)[0] is Rule.HONOURED


@pytest.mark.parametrize("name", [".splash", ".sbat", ".hwids"])
def test_firmware_only_sections_are_ignored_without_a_warning(fd_of: object, name: str) -> None:
    _, pe, u = parsed(fd_of, [(name, b"x" * 64), *uki_sections(R)])
    a = assess(view(u, None), pe, "x86_64")
    assert a.refusal == "" and a.warnings == ()
    assert rule_of(name, "x86_64")[0] is Rule.IGNORED


@pytest.mark.parametrize("name", [".pcrsig", ".pcrpkey", ".efifw"])
def test_dropped_sections_are_named_in_a_warning(fd_of: object, name: str) -> None:
    _, pe, u = parsed(fd_of, [(name, b"{}"), *uki_sections(R)])
    a = assess(view(u, None), pe, "x86_64")
    assert a.refusal == ""
    [warning] = a.warnings
    assert warning.startswith(f"{name} left out: ")


def test_pcrsig_warning_says_secrets_sealed_to_pcr11_will_not_unlock(fd_of: object) -> None:
    _, pe, u = parsed(fd_of, [(".pcrsig", b"{}"), *uki_sections(R)])
    [warning] = assess(view(u, None), pe, "x86_64").warnings
    assert "measures nothing into PCR 11" in warning and "will not unlock" in warning


@pytest.mark.parametrize("name", [".dtb", ".dtbauto"])
def test_device_trees_are_dropped_on_x86_and_refused_on_arm64(fd_of: object, name: str) -> None:
    _, pe, u = parsed(fd_of, [(name, b"\xd0\x0d\xfe\xed"), *uki_sections(R)])
    x86 = assess(view(u, None), pe, "x86_64")
    assert x86.refusal == "" and x86.warnings[0].startswith(f"{name} left out: a device tree")
    _, pe, u = parsed(
        fd_of,
        [(name, b"\xd0\x0d\xfe\xed"), *uki_sections(R, kernel=arm64_image(R))],
        machine=0xAA64,
    )
    arm = assess(view(u, None), pe, "aarch64")
    assert f"it has a {name} section" in arm.refusal
    assert "running kernel's device tree" in arm.refusal


def test_missing_empty_and_foreign_kernels_are_refused(fd_of: object) -> None:
    _, pe, u = parsed(fd_of, [(".cmdline", b"quiet")])  # an add-on: no .linux
    assert "no .linux section" in assess(view(u, None), pe, "x86_64").refusal
    _, pe, u = parsed(fd_of, [(".linux", b"")])
    assert "its .linux section is empty" in assess(view(u, None), pe, "x86_64").refusal
    _, pe, u = parsed(fd_of, uki_sections(R), machine=0xAA64)
    assert (
        "a UKI for aarch64; this machine is x86_64" in assess(view(u, None), pe, "x86_64").refusal
    )


def test_every_uki_section_has_a_rule() -> None:
    for name in Name:
        for arch in ("x86_64", "aarch64"):
            rule, why = rule_of(name, arch)
            assert rule in Rule and why


# ------------------------------------------------------------ staging ----


def esp(tmp_path: Path) -> Path:
    return tmp_path / "boot"


def stage(config: Config, **request: str) -> Resolved:
    return resolve(StageRequest(**request), config, FakeSystem(), TID)


def test_stage_a_uki_from_its_own_sections(tmp_path: Path, fake_kernel: FakeKernel) -> None:
    boot = esp(tmp_path)
    install_kernel(boot, "6.1.0-55-cloud-amd64")
    path = write(boot / f"EFI/Linux/debian-{R}.efi", make_uki(uki_sections(R)))
    config = config_for(tmp_path, [boot])
    r = stage(config)  # the newest: the UKI
    t = r.target
    assert (t.release, t.kernel_path, t.initrd_path) == (R, str(path), None)
    # Its own command line, not the running one (FakeSystem's), plus the transition id.
    assert t.cmdline == f"root=/dev/vda ro quiet liveupd.transition={TID}"
    assert r.uki is not None and r.initrd_parts == (".ucode", ".initrd")
    assert r.image.format == "bzImage"
    assert r.warnings == (UNSIGNED_LINUX,)  # the constructed kernel is not signed
    kexec = RealKexec(config, root=fake_kernel.machine.root)
    with open_target(t, config, initrd_sha256=r.initrd_sha256) as opened:
        assert opened.kernel_path == f"the .linux section of {path}"
        for fd in (opened.kernel_fd, opened.initrd_fd):
            assert fd is not None and memfd.is_sealed(fd)
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
        kexec.load(opened, t.cmdline)
        assert opened.initrd_fd is not None
        # .ucode first (padded to 4 bytes), then .initrd: as systemd-stub hands them over.
        assert os.pread(opened.initrd_fd, 4096, 0) == CPIO_UCODE + CPIO_INITRD
    [seen] = fake_kernel.loads
    assert seen.kernel_head[0x202:0x206] == b"HdrS"
    assert seen.kernel_stat is not None and seen.kernel_stat.st_size == len(bzimage(R))
    assert seen.cmdline == t.cmdline.encode()
    assert seen.initrd_stat is not None
    assert seen.initrd_stat.st_size == len(CPIO_UCODE) + len(CPIO_INITRD)


def test_explicit_cmdline_append_initrd_none_and_extra_initrd(tmp_path: Path) -> None:
    boot = esp(tmp_path)
    write(boot / "EFI/Linux/a.efi", make_uki(uki_sections(R)))
    extra = write(boot / "extra.img", b"070701" + b"E" * 58)
    config = config_for(tmp_path, [boot])
    assert stage(config, append="debug").target.cmdline == (
        f"root=/dev/vda ro quiet debug liveupd.transition={TID}"
    )
    assert stage(config, cmdline="root=/dev/sda1").target.cmdline == (
        f"root=/dev/sda1 liveupd.transition={TID}"
    )
    none = stage(config, initrd="none")
    assert none.target.uki_initrd is False and none.initrd_parts == ()
    more = stage(config, initrd=str(extra))
    assert more.initrd_parts == (".ucode", ".initrd", "the given initrd")
    with open_target(more.target, config, initrd_sha256=more.initrd_sha256) as opened:
        assert opened.initrd_fd is not None
        assert os.pread(opened.initrd_fd, 4096, 0) == CPIO_UCODE + CPIO_INITRD + extra.read_bytes()


def test_profile_option_chooses_the_command_line(tmp_path: Path) -> None:
    boot = esp(tmp_path)
    write(boot / "EFI/Linux/a.efi", make_uki(two_profiles()))
    config = config_for(tmp_path, [boot])
    r = stage(config, profile="rescue")
    assert r.target.profile == "@1"
    assert r.target.cmdline.startswith("root=/dev/vda ro systemd.unit=rescue.target ")
    with open_target(r.target, config) as opened:  # the same profile again at load
        assert opened.release == R
    assert stage(config).target.profile == "@0"
    with pytest.raises(InvalidKernel, match="has no profile @7"):
        stage(config, profile="@7")
    install_kernel(boot, "6.1.0-55-cloud-amd64")
    with pytest.raises(InvalidArgument, match="profile option is for unified kernel images"):
        stage(config, kernel="6.1.0-55-cloud-amd64", profile="@1")


def test_no_cmdline_section_falls_back_to_the_running_command_line(tmp_path: Path) -> None:
    boot = esp(tmp_path)
    write(boot / "EFI/Linux/a.efi", make_uki(uki_sections(R, cmdline=None)))
    t = stage(config_for(tmp_path, [boot])).target
    assert t.cmdline == f"root=/dev/vda ro liveupd.transition={TID}"


def test_uname_must_be_the_kernels_own_release(tmp_path: Path) -> None:
    boot = esp(tmp_path)
    sections = uki_sections(R, kernel=bzimage("6.12.41+deb13-cloud-amd64"))
    write(boot / "EFI/Linux/a.efi", make_uki(sections))
    with pytest.raises(InvalidKernel, match=r"its \.uname section says .* but the kernel in its"):
        stage(config_for(tmp_path, [boot]), kernel=str(boot / "EFI/Linux/a.efi"))


def test_refused_sections_refuse_the_stage(tmp_path: Path) -> None:
    boot = esp(tmp_path)
    path = write(boot / "EFI/Linux/a.efi", make_uki([(".cmdline", b"quiet")]))
    with pytest.raises(InvalidKernel, match=f"{path}: it has no .linux section"):
        stage(config_for(tmp_path, [boot]), kernel=str(path))


def test_dropped_sections_and_files_beside_it_are_warned_about(tmp_path: Path) -> None:
    boot = esp(tmp_path)
    path = write(boot / "EFI/Linux/a.efi", make_uki([(".pcrsig", b"{}"), *uki_sections(R)]))
    write(boot / "EFI/Linux/a.efi.extra.d/debug.addon.efi", b"MZ")
    write(boot / "loader/credentials/secret.cred", b"x")
    r = stage(config_for(tmp_path, [boot]), kernel=str(path))
    assert r.warnings[0].startswith(".pcrsig left out")
    assert f"add-on {path}.extra.d/debug.addon.efi left out" in r.warnings[1]
    assert f"credential {boot}/loader/credentials/secret.cred left out" in r.warnings[2]


def test_signature_require_looks_at_the_kernel_in_linux(tmp_path: Path) -> None:
    boot = esp(tmp_path)
    path = write(boot / "EFI/Linux/a.efi", make_uki(uki_sections(R)))
    config = config_for(tmp_path, [boot], "require")
    with pytest.raises(
        SignatureRejected, match=r"\(its \.linux section\): .* no embedded signature"
    ):
        stage(config, kernel=str(path))
    write(path, make_uki(uki_sections(R, kernel=bzimage(R, signed=True))))
    assert stage(config, kernel=str(path)).image.signed


def test_an_arm64_uki_with_a_compressed_kernel(tmp_path: Path) -> None:
    import gzip

    boot = esp(tmp_path)
    inner = arm64_image("6.12.48+deb13-arm64")
    sections = uki_sections("6.12.48+deb13-arm64", kernel=gzip.compress(inner))
    write(boot / "EFI/Linux/a.efi", make_uki(sections, machine=0xAA64))
    config = config_for(tmp_path, [boot])
    r = resolve(StageRequest(), config, FakeSystem(), TID, arch=ARCHES[Arch.AARCH64])
    assert r.extracted and r.uki is not None
    with open_target(r.target, config, arch=ARCHES[Arch.AARCH64]) as opened:
        assert os.pread(opened.kernel_fd, len(inner) + 1, 0) == inner
        assert memfd.is_sealed(opened.kernel_fd)


# ----------------------------------------------------------- discovery ----


def test_discovery_lists_ukis_from_type2_directories(tmp_path: Path) -> None:
    boot, efi = tmp_path / "boot", tmp_path / "efi"
    install_kernel(boot, R)
    write(boot / "EFI/Linux/with-uname.EFI", make_uki(uki_sections(R)))
    older = "6.12.41+deb13-cloud-amd64"
    write(efi / "EFI/Linux/no-uname.efi", make_uki(uki_sections(older, uname=False)))
    write(efi / "EFI/Linux/.hidden.efi", make_uki(uki_sections("9.9.9")))
    write(efi / "EFI/Linux/broken.efi", b"MZ" + b"\0" * 100)
    found = scan(config_for(tmp_path, [boot, efi]), R)
    by_release = {k.release: k for k in found.kernels}
    assert set(by_release) == {R, older}
    # The UKI wins over /boot/vmlinuz-R of the same release: it is what the boot loader boots.
    assert by_release[R].source is Source.UKI
    assert by_release[R].kernel_path.endswith("with-uname.EFI")
    assert by_release[R].title == "Debian GNU/Linux 13 (trixie)"
    assert by_release[older].kernel_path.endswith("no-uname.efi")  # from the kernel header
    assert found.unreadable == (str(efi / "EFI/Linux/broken.efi"),)
    assert any("broken.efi: is not a PE file" in p for p in found.problems)


def test_discovery_reads_a_uki_once_while_it_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from liveupd.kernel import uki_extract

    boot = esp(tmp_path)
    path = write(boot / "EFI/Linux/a.efi", make_uki(uki_sections(R)))
    config = config_for(tmp_path, [boot])
    calls: list[int] = []
    real = uki_extract.probe

    def counting(fd: int, size: int, arch: str) -> uki_extract.UkiFacts:
        calls.append(1)
        return real(fd, size, arch)

    monkeypatch.setattr(uki_extract, "probe", counting)
    scan(config, R)
    scan(config, R)
    assert len(calls) == 1
    write(path, make_uki(uki_sections(R, cmdline="changed")))
    os.utime(path, ns=(1, 1))
    scan(config, R)
    assert len(calls) == 2


def test_pe_header_with_too_many_sections_is_refused(fd_of: object) -> None:
    data = bytearray(make_uki(uki_sections(R)))
    struct.pack_into("<H", data, 0x40 + 6, 60000)
    with pytest.raises(PeError, match="claims 60000 sections"):
        read_pe(fd_of(bytes(data)), len(data))  # type: ignore[operator]


def test_a_cmdline_section_that_is_not_one_line_of_text_is_refused(tmp_path: Path) -> None:
    boot = esp(tmp_path)
    path = write(
        boot / "EFI/Linux/a.efi", make_uki(uki_sections(R, cmdline="root=/dev/vda\nquiet\n"))
    )
    with pytest.raises(InvalidArgument, match=rf"the \.cmdline of {path} has a newline"):
        stage(config_for(tmp_path, [boot]), kernel=str(path))
    sections = [(".cmdline", b"\xff\xfe"), *uki_sections(R, cmdline=None)]
    write(path, make_uki(sections))
    with pytest.raises(InvalidKernel, match=r"its \.cmdline section is not UTF-8 text"):
        stage(config_for(tmp_path, [boot]), kernel=str(path))


@pytest.mark.parametrize("kind", ["gzip", "xz", "zstd"])
def test_unpacking_is_bounded_and_says_why(fd_of: object, kind: str) -> None:
    import gzip
    import lzma

    from liveupd.kernel.memfd import FdRange
    from liveupd.kernel.unpack import UnpackError, unpack
    from tests.kernels import zstd_compress

    zeros = bytes(1 << 20)
    compress: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "xz": lzma.compress,
        "zstd": zstd_compress,
    }
    packed = compress[kind](zeros)
    fd = fd_of(packed)  # type: ignore[operator]
    with pytest.raises(UnpackError, match="decompresses to more than"):
        unpack(kind, FdRange(fd, 0, len(packed)), 1 << 19, "bomb")
    out = unpack(kind, FdRange(fd, 0, len(packed)), 2 << 20, "fine")
    try:
        assert os.fstat(out).st_size == len(zeros) and memfd.is_sealed(out)
    finally:
        os.close(out)
    bad = fd_of(packed[:10] + b"garbage" * 10)  # type: ignore[operator]
    with pytest.raises(UnpackError, match=f"is {kind}-compressed but does not decompress"):
        unpack(kind, FdRange(bad, 0, 80), 2 << 20, "bad")
    with pytest.raises(UnpackError, match="lz4-compressed; liveupd can unpack"):
        unpack("lz4", FdRange(fd, 0, len(packed)), 2 << 20, "lz4")
