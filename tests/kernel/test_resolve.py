"""From a stage request to a checked Target, and back to open descriptors for loading."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import pytest

from liveupd.backends.base import Dmi
from liveupd.config import Config
from liveupd.errors import InvalidArgument, InvalidKernel, LiveUpdError, SignatureRejected
from liveupd.kernel.arch import ARCHES, Arch
from liveupd.kernel.resolve import checked, open_target, resolve, resolve_target
from liveupd.transition.context import StageRequest
from tests.kernel.conftest import config_for
from tests.kernels import arm64_image, bzimage, install_kernel, uki

A, B = "6.1.0-55-cloud-amd64", "6.1.0-56-cloud-amd64"
TID = "20250101T000000_abcdef"


class FakeSystem:
    def __init__(self, release: str = A, cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/vda ro"):
        self._release, self._cmdline = release, cmdline

    def release(self) -> str:
        return self._release

    def boot_id(self) -> str:
        return "00000000-0000-4000-8000-000000000001"

    def cmdline(self) -> str:
        return self._cmdline

    def uptime(self) -> float:
        return 1.0

    def dmi(self) -> Dmi:
        return Dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)")


def target(config: Config, **request: str) -> object:
    return resolve_target(StageRequest(**request), config, FakeSystem(), TID)


def error(config: Config, **request: str) -> LiveUpdError:
    with pytest.raises(LiveUpdError) as e:
        resolve_target(StageRequest(**request), config, FakeSystem(), TID)
    return e.value


def test_latest_by_default(kconfig: Config, boot_dir: Path) -> None:
    t = resolve_target(StageRequest(), kconfig, FakeSystem(), TID)
    assert t.release == B
    assert t.kernel_path == str(boot_dir / f"vmlinuz-{B}")
    assert t.initrd_path == str(boot_dir / f"initrd.img-{B}")
    assert t.cmdline == f"root=/dev/vda ro liveupd.transition={TID}"
    assert len(t.sha256) == 64


def test_by_release_and_by_path(kconfig: Config, boot_dir: Path) -> None:
    by_release = resolve_target(StageRequest(kernel=A), kconfig, FakeSystem(), TID)
    by_path = resolve_target(
        StageRequest(kernel=str(boot_dir / f"vmlinuz-{A}")), kconfig, FakeSystem(), TID
    )
    assert by_release == by_path
    assert by_release.release == A


def test_unknown_release_lists_what_is_installed(kconfig: Config) -> None:
    e = error(kconfig, kernel="6.9.9")
    assert isinstance(e, InvalidKernel)
    assert "no installed kernel '6.9.9'" in e.message and f"installed: {A}, {B}" in e.message


def test_no_kernel_at_all(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no kernel found in" in error(config_for(tmp_path, [empty])).message


def test_version_mismatch(kconfig: Config, boot_dir: Path) -> None:
    (boot_dir / "vmlinuz-6.1.0-57-cloud-amd64").write_bytes(bzimage(B))
    (boot_dir / "initrd.img-6.1.0-57-cloud-amd64").write_bytes(b"070701")
    e = error(kconfig, kernel="6.1.0-57-cloud-amd64")
    assert isinstance(e, InvalidKernel)
    assert f"vmlinuz-6.1.0-57-cloud-amd64: is kernel {B}, not 6.1.0-57-cloud-amd64" in e.message


def test_non_kernel_and_wrong_magic_name_the_file(kconfig: Config, boot_dir: Path) -> None:
    path = boot_dir / "vmlinuz-6.2.0"
    path.write_bytes(bzimage("6.2.0", magic=b"HdrZ"))
    (boot_dir / "initrd.img-6.2.0").write_bytes(b"070701")
    e = error(kconfig, kernel="6.2.0")
    assert e.message.startswith(f"{path}: has an x86 boot sector but no setup header magic")


def test_non_kernel_without_initrd_is_named_as_not_a_kernel(
    kconfig: Config, boot_dir: Path
) -> None:
    # The image check comes before the missing-initrd complaint.
    path = boot_dir / "vmlinuz-9.9.9-notakernel"
    path.write_bytes(b"\x7fELF" + b"\0" * 4096)
    e = error(kconfig, kernel=str(path))
    assert isinstance(e, InvalidKernel)
    assert e.message.startswith(f"{path}: ")
    assert "no initrd found" not in e.message and "not a boot image" in e.message


def test_missing_initrd_when_the_others_have_one(kconfig: Config, boot_dir: Path) -> None:
    install_kernel(boot_dir, "6.1.0-60-cloud-amd64", initrd=False)
    e = error(kconfig, kernel="6.1.0-60-cloud-amd64")
    assert "no initrd found for it" in e.message
    assert "update-initramfs -c -k 6.1.0-60-cloud-amd64" in e.message
    t = resolve_target(
        StageRequest(kernel="6.1.0-60-cloud-amd64", initrd="none"), kconfig, FakeSystem(), TID
    )
    assert t.initrd_path is None


def test_explicit_initrd_is_checked(kconfig: Config, boot_dir: Path, tmp_path: Path) -> None:
    (boot_dir / "initrd-custom").write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 100)
    t = resolve_target(
        StageRequest(kernel=B, initrd=str(boot_dir / "initrd-custom")), kconfig, FakeSystem(), TID
    )
    assert t.initrd_path == str(boot_dir / "initrd-custom")
    (boot_dir / "initrd-bad").write_bytes(b"hello world")
    assert (
        "does not look like an initramfs"
        in error(kconfig, kernel=B, initrd=str(boot_dir / "initrd-bad")).message
    )
    outside = tmp_path / "initrd"
    outside.write_bytes(b"070701")
    assert (
        "not inside an allowed directory" in error(kconfig, kernel=B, initrd=str(outside)).message
    )


def test_sha256_pin(kconfig: Config) -> None:
    t = resolve_target(StageRequest(kernel=B), kconfig, FakeSystem(), TID)
    assert (
        resolve_target(StageRequest(kernel=B, sha256=t.sha256.upper()), kconfig, FakeSystem(), TID)
        == t
    )
    e = error(kconfig, kernel=B, sha256="0" * 64)
    assert f"its SHA-256 is {t.sha256}, not {'0' * 64} as pinned" in e.message


def test_command_line_sources(kconfig: Config) -> None:
    given = target(kconfig, kernel=B, cmdline="root=/dev/sda1 initrd=/x", append="quiet")
    assert given.cmdline == f"root=/dev/sda1 quiet liveupd.transition={TID}"  # type: ignore[attr-defined]


def test_command_line_too_long_for_the_new_kernel(kconfig: Config, boot_dir: Path) -> None:
    (boot_dir / "vmlinuz-6.3.0").write_bytes(bzimage("6.3.0", cmdline_size=256))
    (boot_dir / "initrd.img-6.3.0").write_bytes(b"070701")
    e = error(kconfig, kernel="6.3.0", append="x" * 200)
    assert isinstance(e, InvalidArgument)
    assert "the new kernel accepts at most 225" in e.message


def test_bls_entry_options_become_the_command_line(tmp_path: Path) -> None:
    efi = tmp_path / "efi"
    install_kernel(efi / "k", B)
    entries = efi / "loader" / "entries"
    entries.mkdir(parents=True)
    (entries / "deb.conf").write_text(
        f"version {B}\nlinux /k/vmlinuz-{B}\ninitrd /k/initrd.img-{B}\n"
        "options root=/dev/vdb rw BOOT_IMAGE=x\noptions console=ttyS0\n"
    )
    config = config_for(tmp_path, [efi])
    for spec in (B, "deb", str(entries / "deb.conf"), ""):
        t = resolve_target(StageRequest(kernel=spec), config, FakeSystem(), TID)
        assert t.cmdline == f"root=/dev/vdb rw console=ttyS0 liveupd.transition={TID}", spec
        assert t.initrd_path == str(efi / "k" / f"initrd.img-{B}")
    (entries / "two.conf").write_text(
        f"version 6.9.0\nlinux /k/vmlinuz-{B}\ninitrd /k/initrd.img-{B}\ninitrd /k/initrd.img-{B}\n"
    )
    assert "names 2 initrds" in error(config, kernel="two").message


def test_signature_policy_require(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / f"vmlinuz-{A}").write_bytes(bzimage(A))
    (boot / f"vmlinuz-{B}").write_bytes(bzimage(B, signed=True))
    config = config_for(tmp_path, [boot], signature="require")
    e = error(config, kernel=A, initrd="none")
    assert isinstance(e, SignatureRejected)
    assert e.message.startswith(f"{boot / f'vmlinuz-{A}'}: kernel.signature is 'require'")
    assert "no embedded signature" in e.message
    assert resolve_target(StageRequest(kernel=B, initrd="none"), config, FakeSystem(), TID)
    auto = config_for(tmp_path, [boot], signature="auto")
    assert resolve_target(StageRequest(kernel=A, initrd="none"), auto, FakeSystem(), TID)


def test_unified_kernel_image_is_taken_apart_and_foreign_arch_refused(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz-6.5.0").write_bytes(uki(bzimage("6.5.0")))
    (boot / "vmlinuz-6.6.0").write_bytes(arm64_image("6.6.0"))
    config = config_for(tmp_path, [boot])
    # Even under a plain kernel's name, a UKI is a UKI: its .linux is what is staged.
    t = resolve(StageRequest(kernel="6.5.0", initrd="none"), config, FakeSystem(), TID)
    assert t.uki is not None and t.target.release == "6.5.0"
    e = error(config, kernel="6.6.0", initrd="none")
    assert "is an aarch64 kernel (arm64 Image); this machine is x86_64" in e.message


def test_aarch64_compressed_kernel_is_loaded_from_a_sealed_copy(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    inner = arm64_image("6.1.0-56-arm64")
    (boot / "vmlinuz-6.1.0-56-arm64").write_bytes(gzip.compress(inner))
    (boot / "vmlinuz-6.1.0-55-arm64").write_bytes(arm64_image("6.1.0-55-arm64"))
    arm = ARCHES[Arch.AARCH64]
    config = config_for(tmp_path, [boot])
    with checked(config, str(boot / "vmlinuz-6.1.0-56-arm64"), None, None, arch=arm) as c:
        assert c.extracted and c.load_fd != c.kernel.fd
        assert os.pread(c.load_fd, len(inner) + 1, 0) == inner
        assert stat.S_ISREG(os.fstat(c.load_fd).st_mode)
        with pytest.raises(PermissionError):
            os.pwrite(c.load_fd, b"x", 0)  # sealed: nobody can change what gets loaded
    with checked(
        config, str(boot / "vmlinuz-6.1.0-55-arm64"), None, "6.1.0-55-arm64", arch=arm
    ) as c:
        assert not c.extracted and c.load_fd == c.kernel.fd
    with pytest.raises(InvalidKernel, match="is an x86_64 kernel"):
        install_kernel(boot, "6.2.0")
        with checked(config, str(boot / "vmlinuz-6.2.0"), None, None, arch=arm):
            pass
    require = config_for(tmp_path, [boot], signature="require")
    with (
        pytest.raises(SignatureRejected, match="must be decompressed"),
        checked(require, str(boot / "vmlinuz-6.1.0-56-arm64"), None, None, arch=arm),
    ):
        pass


def test_open_target_refuses_a_kernel_changed_since_staging(
    kconfig: Config, boot_dir: Path
) -> None:
    resolved = resolve(StageRequest(kernel=B), kconfig, FakeSystem(), TID)
    t = resolved.target
    with open_target(t, kconfig, initrd_sha256=resolved.initrd_sha256) as opened:
        assert os.fstat(opened.kernel_fd).st_ino == Path(t.kernel_path).stat().st_ino
    # Another kernel renamed over the staged path: loading it is refused, not done.
    other = boot_dir / "other"
    other.write_bytes(bzimage(B, version=f"{B} (someone else) #2"))
    other.rename(t.kernel_path)
    with (
        pytest.raises(InvalidKernel, match="changed since: stage again"),
        open_target(t, kconfig),
    ):
        pass
    # Same for the initrd.
    t2 = resolve(StageRequest(kernel=A), kconfig, FakeSystem(), TID)
    Path(str(t2.target.initrd_path)).write_bytes(b"070701" + b"1" * 10)
    with (
        pytest.raises(InvalidKernel, match=r"initrd\.img-6\.1\.0-55-cloud-amd64: changed since"),
        open_target(t2.target, kconfig, initrd_sha256=t2.initrd_sha256),
    ):
        pass


def test_an_entry_file_must_be_an_entry_of_an_allowed_directory(
    kconfig: Config, boot_dir: Path, tmp_path: Path
) -> None:
    """Issue 13, case 1: a Stage path ending in .conf cannot reach a file elsewhere."""
    secret = tmp_path / "elsewhere" / "secret.conf"
    secret.parent.mkdir()
    secret.write_text("SECRET-FIRST-LINE\n")
    secret.chmod(0o600)
    entries = boot_dir / "loader" / "entries"
    entries.mkdir(parents=True)
    (entries / "link.conf").symlink_to(secret)
    os.mkfifo(entries / "fifo.conf")
    (entries / "zero.conf").symlink_to("/dev/zero")
    cases = {
        f"{boot_dir}/../elsewhere/secret.conf": "without '..'",
        str(secret): "not a boot loader entry",
        str(boot_dir / "x.conf"): "not a boot loader entry",
        str(entries / "link.conf"): "a symlink leads out of",
        str(entries / "fifo.conf"): "is a FIFO",
        str(entries / "zero.conf"): "a symlink leads out of",
    }
    for kernel, message in cases.items():
        e = error(kconfig, kernel=kernel)
        assert isinstance(e, InvalidKernel | InvalidArgument), (kernel, e)
        assert message in e.message, (kernel, e.message)
        assert "SECRET" not in e.message
