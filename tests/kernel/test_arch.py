"""The per-architecture table and its refusals."""

from __future__ import annotations

import pytest

from liveupd.errors import Unsupported
from liveupd.kernel.arch import Arch, arch_info


def test_table() -> None:
    x86 = arch_info("x86_64", 64)
    assert (x86.arch, x86.nr_kexec_file_load, x86.nr_reboot) == (Arch.X86_64, 320, 169)
    arm = arch_info("aarch64", 64)
    assert (arm.arch, arm.nr_kexec_file_load, arm.nr_reboot) == (Arch.AARCH64, 294, 142)
    assert arch_info("arm64", 64) is arm


@pytest.mark.parametrize("machine", ["riscv64", "ppc64le", "s390x", "i686", "armv7l"])
def test_other_architectures_are_refused_clearly(machine: str) -> None:
    with pytest.raises(Unsupported) as e:
        arch_info(machine, 64)
    assert f"this machine is {machine!r}" in e.value.message
    assert "x86_64, aarch64" in e.value.message


def test_a_32_bit_python_on_a_64_bit_kernel_is_refused() -> None:
    with pytest.raises(Unsupported, match="32-bit Python"):
        arch_info("x86_64", 32)
