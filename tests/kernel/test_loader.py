"""RealKexec against a fake machine root, with the syscall replaced at the cffi boundary."""

from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from liveupd.config import Config
from liveupd.errors import (
    Failed,
    InvalidKernel,
    KexecBusy,
    KexecRejected,
    LiveUpdError,
    NotLoadable,
    OutOfMemory,
    SignatureRejected,
    Unsupported,
)
from liveupd.kernel import syscalls
from liveupd.kernel.arch import ARCHES, Arch
from liveupd.kernel.loader import RealKexec
from liveupd.kernel.resolve import open_target, resolve
from liveupd.transition.context import StageRequest
from liveupd.transition.phases import ExecMode
from tests.kernel.conftest import FakeKernel, Machine
from tests.kernel.test_resolve import TID, FakeSystem
from tests.kernels import bzimage

B = "6.1.0-56-cloud-amd64"
X86 = ARCHES[Arch.X86_64]


@pytest.fixture
def kexec(kconfig: Config, machine: Machine) -> RealKexec:
    return RealKexec(kconfig, root=machine.root, arch=X86)


def stage(config: Config, **request: str):  # type: ignore[no-untyped-def]
    return resolve(StageRequest(**{"kernel": B, **request}), config, FakeSystem(), TID)


def test_load_hands_the_checked_descriptors_to_kexec_file_load(
    kexec: RealKexec, kconfig: Config, fake_kernel: FakeKernel, machine: Machine
) -> None:
    t = stage(kconfig).target
    with open_target(t, kconfig) as opened:
        kexec.load(opened, t.cmdline)
    [seen] = fake_kernel.loads
    [call] = fake_kernel.calls
    assert call.number == X86.nr_kexec_file_load == 320
    assert seen.cmdline == t.cmdline.encode()
    assert seen.cmdline_len == len(t.cmdline.encode()) + 1  # the trailing NUL counts
    assert seen.flags == 0
    assert seen.kernel_stat is not None and seen.initrd_stat is not None
    assert seen.kernel_stat.st_ino == Path(t.kernel_path).stat().st_ino
    assert seen.initrd_stat.st_ino == Path(str(t.initrd_path)).stat().st_ino
    assert kexec.is_loaded() and machine.read("sys/kernel/kexec_loaded") == "1\n"


def test_without_initrd_the_flag_is_set(
    kexec: RealKexec, kconfig: Config, fake_kernel: FakeKernel
) -> None:
    t = stage(kconfig, initrd="none").target
    with open_target(t, kconfig) as opened:
        kexec.load(opened, t.cmdline)
    [seen] = fake_kernel.loads
    assert seen.initrd_fd == -1
    assert seen.flags == syscalls.KexecFileFlag.NO_INITRAMFS


def test_a_file_swapped_after_the_check_is_not_what_is_loaded(
    kexec: RealKexec, kconfig: Config, fake_kernel: FakeKernel, boot_dir: Path
) -> None:
    t = stage(kconfig).target
    original = Path(t.kernel_path).stat().st_ino
    with open_target(t, kconfig) as opened:
        # Between the check and the syscall, another kernel is renamed over the path.
        evil = boot_dir / "evil"
        evil.write_bytes(bzimage("6.6.6-evil"))
        evil.rename(t.kernel_path)
        assert Path(t.kernel_path).stat().st_ino != original
        kexec.load(opened, t.cmdline)
    [seen] = fake_kernel.loads
    assert seen.kernel_stat is not None
    assert seen.kernel_stat.st_ino == original
    # The kernel read the checked image: its version string is the staged release.
    pointer = int.from_bytes(seen.kernel_head[0x20E:0x210], "little") + 0x200
    assert seen.kernel_head[pointer:].startswith(B.encode() + b" ")


@pytest.mark.parametrize(
    ("err", "lockdown", "kind", "words"),
    [
        (errno.EKEYREJECTED, "none", SignatureRejected, ["EKEYREJECTED", "lockdown is none"]),
        (errno.EBADMSG, "integrity", SignatureRejected, ["EBADMSG", "lockdown is integrity"]),
        (errno.ENODATA, "none", SignatureRejected, ["ENODATA"]),
        (errno.ENOKEY, "none", SignatureRejected, ["ENOKEY"]),
        (errno.EPERM, "integrity", SignatureRejected, ["EPERM", "lockdown is integrity"]),
        (
            errno.EPERM,
            "confidentiality",
            SignatureRejected,
            ["EPERM", "lockdown is confidentiality"],
        ),
        (errno.EPERM, "none", Unsupported, ["CAP_SYS_BOOT", "kexec_load_disabled"]),
        (errno.EACCES, "none", SignatureRejected, ["IMA"]),
        (errno.ENOEXEC, "none", NotLoadable, ["ENOEXEC", "bzImage"]),
        (errno.ENOMEM, "none", OutOfMemory, ["ENOMEM", "MiB"]),
        (errno.EBUSY, "none", KexecBusy, ["EBUSY", "one at a time"]),
        (errno.ENOSYS, "none", Unsupported, ["ENOSYS", "CONFIG_KEXEC_FILE"]),
        (errno.EINVAL, "none", KexecRejected, ["EINVAL", "bytes"]),
        (errno.ETXTBSY, "none", InvalidKernel, ["ETXTBSY", "open for writing"]),
        (errno.EIO, "none", Failed, ["EIO"]),
    ],
)
def test_errno_mapping(
    kexec: RealKexec,
    kconfig: Config,
    fake_kernel: FakeKernel,
    machine: Machine,
    err: int,
    lockdown: str,
    kind: type[LiveUpdError],
    words: list[str],
) -> None:
    machine.write(
        "sys/kernel/security/lockdown",
        " ".join(
            f"[{m}]" if m == lockdown else m for m in ("none", "integrity", "confidentiality")
        ),
    )
    fake_kernel.fail["load"] = err
    t = stage(kconfig).target
    with pytest.raises(LiveUpdError) as e, open_target(t, kconfig) as opened:
        kexec.load(opened, t.cmdline)
    assert type(e.value) is kind, e.value.message
    for word in words:
        assert word in e.value.message
    if kind is SignatureRejected and err != errno.EACCES:
        assert t.kernel_path in e.value.message
    assert not kexec.is_loaded()


def test_success_without_kexec_loaded_is_a_failure(
    kexec: RealKexec, kconfig: Config, machine: Machine
) -> None:
    def lying_kernel(*args: object) -> int:
        return 0

    t = stage(kconfig).target
    with (
        syscalls.inject(lying_kernel),
        pytest.raises(Failed, match="does not read 1"),
        open_target(t, kconfig) as opened,
    ):
        kexec.load(opened, t.cmdline)


def test_not_enough_memory_is_refused_before_the_syscall(
    kexec: RealKexec, kconfig: Config, fake_kernel: FakeKernel, machine: Machine
) -> None:
    machine.write("proc/meminfo", "MemAvailable: 10240 kB\n")
    t = stage(kconfig).target
    with (
        pytest.raises(OutOfMemory, match="only 10 MiB is available"),
        open_target(t, kconfig) as opened,
    ):
        kexec.load(opened, t.cmdline)
    assert fake_kernel.calls == []


def test_unload_is_confirmed_by_kexec_loaded(
    kexec: RealKexec, fake_kernel: FakeKernel, machine: Machine
) -> None:
    machine.write("sys/kernel/kexec_loaded", "1\n")
    kexec.unload()
    [call] = fake_kernel.calls
    assert call.number == 320
    assert [int(a) for a in call.args[:3]] == [-1, -1, 0]
    assert int(call.args[4]) == syscalls.KexecFileFlag.UNLOAD
    assert not kexec.is_loaded()


def test_unload_that_leaves_a_kernel_loaded_fails(kexec: RealKexec, machine: Machine) -> None:
    machine.write("sys/kernel/kexec_loaded", "1\n")
    with syscalls.inject(lambda *a: 0), pytest.raises(Failed, match="still reads 1"):
        kexec.unload()


def test_unload_busy(kexec: RealKexec, fake_kernel: FakeKernel) -> None:
    fake_kernel.fail["unload"] = errno.EBUSY
    with pytest.raises(KexecBusy):
        kexec.unload()


# ------------------------------------------------------------------ jump ----


def test_jump_is_refused_in_host_tests(
    kexec: RealKexec, fake_kernel: FakeKernel, machine: Machine
) -> None:
    assert os.environ.get("LIVEUPD_HOST_TEST")
    machine.write("sys/kernel/kexec_loaded", "1\n")
    for mode in ExecMode:
        with pytest.raises(Failed, match="LIVEUPD_HOST_TEST is set"):
            kexec.jump(mode)
    assert fake_kernel.calls == [] and not fake_kernel.rebooted


def test_jump_guards_without_the_host_test_variable(
    kexec: RealKexec,
    kconfig: Config,
    fake_kernel: FakeKernel,
    machine: Machine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LIVEUPD_HOST_TEST")
    machine.write("sys/kernel/kexec_loaded", "1\n")
    # A fake root is never the real machine: no jump.
    with pytest.raises(Failed, match="not /"):
        kexec.jump(ExecMode.DIRECT)
    # On the real root nothing is loaded here (no kexec on this host, or nothing staged).
    real = RealKexec(kconfig, arch=X86)
    if not real.is_loaded():
        with pytest.raises(Failed, match="no kernel is loaded"):
            real.jump(ExecMode.DIRECT)
    assert fake_kernel.calls == [] and not fake_kernel.rebooted


def test_the_real_syscall_is_never_looked_up_in_a_host_test() -> None:
    with pytest.raises(syscalls.HostTestRefusal, match="LIVEUPD_HOST_TEST is set"):
        syscalls.kexec_file_unload(X86)


def test_host_test_variable_reaches_child_processes() -> None:
    out = subprocess.run(
        ["sh", "-c", "echo $LIVEUPD_HOST_TEST"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip()


def test_reboot_syscall_arguments(fake_kernel: FakeKernel) -> None:
    """What reboot_kexec passes (called directly: the jump itself is guarded)."""
    syscalls.reboot_kexec(X86)
    [call] = fake_kernel.calls
    assert call.number == 169
    assert [int(a) for a in call.args[:3]] == [0xFEE1DEAD, 672274793, 0x45584543]
    fake_kernel.fail["reboot"] = errno.EPERM
    with pytest.raises(OSError) as e:
        syscalls.reboot_kexec(X86)
    assert e.value.errno == errno.EPERM


def test_preflight_and_findings(kexec: RealKexec, machine: Machine) -> None:
    assert kexec.preflight() == []
    machine.remove("sys/kernel/kexec_loaded")
    [problem] = kexec.preflight()
    assert "no kexec support" in problem


def test_signature_messages_say_what_is_wrong() -> None:
    from liveupd.kernel.errnos import LoadAttempt, load_error
    from liveupd.kernel.signature import Lockdown

    base = LoadAttempt(
        kernel_path="/boot/vmlinuz-6.1",
        initrd_path=None,
        cmdline_bytes=10,
        lockdown=Lockdown.INTEGRITY,
    )
    unsigned = load_error(errno.EPERM, replace(base, signed=False))
    assert isinstance(unsigned, SignatureRejected)
    assert "/boot/vmlinuz-6.1 has no embedded signature" in unsigned.message
    assert "(EPERM; lockdown is integrity)" in unsigned.message
    no_efi = load_error(errno.EPERM, replace(base, signed=True, efi=False))
    assert "/boot/vmlinuz-6.1 is signed, but its signature does not verify" in no_efi.message
    assert "booted without EFI" in no_efi.message
    forced = load_error(errno.EKEYREJECTED, replace(base, lockdown=Lockdown.NONE))
    assert "(EKEYREJECTED; lockdown is none)" in forced.message
