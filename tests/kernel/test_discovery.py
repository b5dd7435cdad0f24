"""Kernel discovery in the allowed directories: /boot, /usr/lib/modules, BLS entries."""

from __future__ import annotations

from pathlib import Path

from liveupd.kernel.discovery import Source, list_kernels, release_from_path, scan
from tests.kernel.conftest import config_for
from tests.kernels import bzimage, install_kernel


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_debian_layout_newest_last_running_marked(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    for r in ("6.1.0-9-cloud-amd64", "6.1.0-50-cloud-amd64", "6.1.0-10-cloud-amd64"):
        install_kernel(boot, r)
    (boot / "vmlinuz-6.1.0-50-cloud-amd64.old").write_bytes(b"x")  # ignored
    (boot / "vmlinuz-linux").write_bytes(b"x")  # not a release
    kernels = list_kernels(config_for(tmp_path, [boot]), "6.1.0-10-cloud-amd64")
    assert [k.release for k in kernels] == [
        "6.1.0-9-cloud-amd64",
        "6.1.0-10-cloud-amd64",
        "6.1.0-50-cloud-amd64",
    ]
    assert [k.running for k in kernels] == [False, True, False]
    assert kernels[-1].kernel_path == str(boot / "vmlinuz-6.1.0-50-cloud-amd64")
    assert kernels[-1].initrd_path == str(boot / "initrd.img-6.1.0-50-cloud-amd64")
    assert all(k.source is Source.BOOT and k.cmdline is None for k in kernels)


def test_fedora_and_suse_initrd_names(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    _write(boot / "vmlinuz-6.9.1-100.fc40.x86_64", bzimage("6.9.1-100.fc40.x86_64"))
    _write(boot / "initramfs-6.9.1-100.fc40.x86_64.img", b"070701")
    _write(boot / "vmlinuz-6.4.0-150600.23-default", bzimage("6.4.0-150600.23-default"))
    _write(boot / "initrd-6.4.0-150600.23-default", b"070701")
    _write(boot / "vmlinuz-6.12.0", bzimage("6.12.0"))
    kernels = {k.release: k for k in list_kernels(config_for(tmp_path, [boot]), "")}
    assert kernels["6.9.1-100.fc40.x86_64"].initrd_path == str(
        boot / "initramfs-6.9.1-100.fc40.x86_64.img"
    )
    assert kernels["6.4.0-150600.23-default"].initrd_path == str(
        boot / "initrd-6.4.0-150600.23-default"
    )
    assert kernels["6.12.0"].initrd_path is None


def test_modules_layout_pairs_an_initrd_from_boot(tmp_path: Path) -> None:
    boot, modules = tmp_path / "boot", tmp_path / "usr-lib-modules"
    _write(modules / "6.9.1-arch1-1" / "vmlinuz", bzimage("6.9.1-arch1-1"))
    _write(boot / "initramfs-6.9.1-arch1-1.img", b"070701")
    _write(modules / "6.10.0-1" / "vmlinuz", bzimage("6.10.0-1"))
    _write(modules / "6.10.0-1" / "initrd", b"070701")
    (modules / "extramodules").mkdir()
    kernels = list_kernels(config_for(tmp_path, [boot, modules]), "6.9.1-arch1-1")
    assert [(k.release, k.source) for k in kernels] == [
        ("6.9.1-arch1-1", Source.MODULES),
        ("6.10.0-1", Source.MODULES),
    ]
    assert kernels[0].initrd_path == str(boot / "initramfs-6.9.1-arch1-1.img")
    assert kernels[1].initrd_path == str(modules / "6.10.0-1" / "initrd")
    assert kernels[0].running


def test_one_kernel_per_release_bls_first_then_boot(tmp_path: Path) -> None:
    boot, modules, efi = tmp_path / "boot", tmp_path / "modules", tmp_path / "efi"
    release = "6.1.0-56-cloud-amd64"
    install_kernel(boot, release)
    _write(modules / release / "vmlinuz", bzimage(release))
    _write(efi / "debian" / release / "linux", bzimage(release))
    _write(efi / "debian" / release / "initrd.img", b"070701")
    _write(
        efi / "loader" / "entries" / "debian.conf",
        (
            f"title Debian\nversion {release}\nlinux /debian/{release}/linux\n"
            f"initrd /debian/{release}/initrd.img\noptions root=/dev/vda ro\n"
        ).encode(),
    )
    found = scan(config_for(tmp_path, [boot, modules, efi]), release, machine="x86_64")
    assert found.problems == []
    [k] = found.kernels
    assert k.source is Source.BLS
    assert k.kernel_path == str(efi / "debian" / release / "linux")
    assert k.initrd_path == str(efi / "debian" / release / "initrd.img")
    assert k.cmdline == "root=/dev/vda ro"
    assert k.entry == str(efi / "loader" / "entries" / "debian.conf")
    assert k.running
    without_bls = list_kernels(config_for(tmp_path, [modules, boot]), "")
    assert [k.source for k in without_bls] == [Source.BOOT]


def test_bls_entries_relative_to_the_directory_above_boot(tmp_path: Path) -> None:
    # /boot on the root file system: entries name /boot/vmlinuz-..., relative to /.
    root = tmp_path / "sysroot"
    boot = root / "boot"
    install_kernel(boot, "6.9.0-1")
    _write(
        boot / "loader" / "entries" / "f.conf",
        b"version 6.9.0-1\nlinux /boot/vmlinuz-6.9.0-1\ninitrd /boot/initrd.img-6.9.0-1\n",
    )
    [k] = list_kernels(config_for(tmp_path, [boot]), "")
    assert k.source is Source.BLS and k.kernel_path == str(boot / "vmlinuz-6.9.0-1")


def test_bls_problems_are_reported_not_fatal(tmp_path: Path) -> None:
    efi = tmp_path / "efi"
    entries = efi / "loader" / "entries"
    _write(entries / "missing-kernel.conf", b"version 1.0.0\nlinux /nope\n")
    _write(entries / "no-release.conf", b"linux /kernel.efi\n")
    _write(efi / "kernel.efi", bzimage("6.1.0"))
    _write(entries / "arm.conf", b"architecture aa64\nversion 6.1.0\nlinux /kernel.efi\n")
    found = scan(config_for(tmp_path, [efi]), "", machine="x86_64")
    assert found.kernels == []
    assert any("missing-kernel.conf: its kernel /nope does not exist" in p for p in found.problems)
    assert any("no-release.conf: no release" in p for p in found.problems)
    assert len(found.problems) == 2  # the arm64 entry is simply not for this machine


def test_release_from_path() -> None:
    assert release_from_path(Path("/boot/vmlinuz-6.1.0-1-amd64")) == "6.1.0-1-amd64"
    assert release_from_path(Path("/usr/lib/modules/6.1.0-1-amd64/vmlinuz")) == "6.1.0-1-amd64"
    assert release_from_path(Path("/boot/vmlinuz-linux")) is None
    assert release_from_path(Path("/boot/kernel")) is None
