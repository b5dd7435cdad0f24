"""Staging real Debian kernels (fetched with apt into the user's cache)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from liveupd.config import Config
from liveupd.errors import InvalidKernel, SignatureRejected
from liveupd.kernel.resolve import open_target, resolve
from liveupd.transition.context import StageRequest
from tests.kernel.conftest import FakeKernel, config_for
from tests.kernel.test_resolve import TID, FakeSystem
from tests.kernels import (
    DEBIAN_KERNELS,
    DEBIAN_UNSIGNED,
    Unavailable,
    debian_kernel,
    strip_signature,
)


def _fetch(package: str) -> Path:
    try:
        return debian_kernel(package)
    except Unavailable as e:
        pytest.skip(f"cannot fetch {package} with apt: {e}")


@pytest.fixture
def debian_boot(tmp_path: Path) -> Path:
    boot = tmp_path / "boot"
    boot.mkdir()
    for package in DEBIAN_KERNELS:
        src = _fetch(package)
        shutil.copyfile(src, boot / src.name)
        (boot / src.name.replace("vmlinuz-", "initrd.img-")).write_bytes(b"070701" + bytes(512))
    return boot


def config(tmp_path: Path, boot: Path, signature: str = "auto") -> Config:
    return config_for(tmp_path, [boot], signature)


def test_latest_real_kernel_is_staged_and_loads_through_its_descriptor(
    tmp_path: Path, debian_boot: Path, fake_kernel: FakeKernel
) -> None:
    from liveupd.kernel.loader import RealKexec

    c = config(tmp_path, debian_boot, "require")
    resolved = resolve(StageRequest(), c, FakeSystem(), TID)
    t = resolved.target
    assert t.release == "6.1.0-56-cloud-amd64"
    assert resolved.image.signed
    kexec = RealKexec(c, root=fake_kernel.machine.root)
    with open_target(t, c, initrd_sha256=resolved.initrd_sha256) as opened:
        kexec.load(opened, t.cmdline)
    [seen] = fake_kernel.loads
    assert seen.kernel_stat is not None
    assert seen.kernel_stat.st_size == Path(t.kernel_path).stat().st_size
    assert seen.kernel_head[0x202:0x206] == b"HdrS"


def test_real_kernel_under_the_wrong_name_is_refused(tmp_path: Path, debian_boot: Path) -> None:
    a, b = (p.removeprefix("linux-image-") for p in reversed(DEBIAN_KERNELS))
    (debian_boot / f"vmlinuz-{b}").unlink()
    (debian_boot / f"vmlinuz-{a}").rename(debian_boot / f"vmlinuz-{b}")
    with pytest.raises(InvalidKernel, match=f"is kernel {a}, not {b} as asked"):
        resolve(StageRequest(kernel=b), config(tmp_path, debian_boot), FakeSystem(), TID)


def test_stripped_and_unsigned_real_kernels_under_require(
    tmp_path: Path, debian_boot: Path
) -> None:
    b = DEBIAN_KERNELS[0].removeprefix("linux-image-")
    path = debian_boot / f"vmlinuz-{b}"
    path.write_bytes(strip_signature(path.read_bytes()))
    with pytest.raises(SignatureRejected, match="has no embedded signature"):
        resolve(StageRequest(kernel=b), config(tmp_path, debian_boot, "require"), FakeSystem(), TID)
    shutil.copyfile(_fetch(DEBIAN_UNSIGNED), path)
    with pytest.raises(SignatureRejected, match="has no embedded signature"):
        resolve(StageRequest(kernel=b), config(tmp_path, debian_boot, "require"), FakeSystem(), TID)
    # auto lets the kernel decide: staging goes ahead.
    assert resolve(StageRequest(kernel=b), config(tmp_path, debian_boot), FakeSystem(), TID)


def test_truncated_real_kernel(tmp_path: Path, debian_boot: Path) -> None:
    b = DEBIAN_KERNELS[0].removeprefix("linux-image-")
    path = debian_boot / f"vmlinuz-{b}"
    path.write_bytes(path.read_bytes()[:5_000_000])
    with pytest.raises(InvalidKernel, match="truncated"):
        resolve(StageRequest(kernel=b), config(tmp_path, debian_boot), FakeSystem(), TID)
