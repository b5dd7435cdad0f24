"""What a failed kexec syscall's errno means, as a liveupd error (pure)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

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
from liveupd.kernel.signature import Lockdown

# Errors of the signature verification (kexec_image_verify_sig and the PKCS#7
# / keyring code under it) that the kernel passes through when it enforces
# signatures (CONFIG_KEXEC_SIG_FORCE, or the IMA architecture policy).
SIGNATURE_ERRNOS = frozenset(
    {
        errno.EKEYREJECTED,
        errno.EBADMSG,
        errno.ENOKEY,
        errno.ENODATA,
        errno.EKEYREVOKED,
        errno.EKEYEXPIRED,
        errno.ENOPKG,
    }
)


@dataclass(frozen=True)
class LoadAttempt:
    """What was being loaded, for the message."""

    kernel_path: str
    initrd_path: str | None
    cmdline_bytes: int  # NUL excluded
    lockdown: Lockdown | None
    need_bytes: int = 0
    available_bytes: int | None = None
    signed: bool | None = None  # the image has an embedded signature (None: unknown)
    efi: bool = True  # the machine booted through EFI


def errno_name(err: int) -> str:
    return errno.errorcode.get(err, f"errno {err}")


def load_error(err: int, a: LoadAttempt) -> LiveUpdError:
    name = errno_name(err)
    what = a.kernel_path + (f" with {a.initrd_path}" if a.initrd_path else "")
    locked = a.lockdown in (Lockdown.INTEGRITY, Lockdown.CONFIDENTIALITY)
    if err in SIGNATURE_ERRNOS or (err == errno.EPERM and locked):
        return SignatureRejected(_signature_message(name, a))
    if err == errno.EACCES:
        return SignatureRejected(
            f"the kernel's security policy refused {a.kernel_path} (EACCES: IMA appraisal or an "
            "LSM said no). Check the IMA policy (/sys/kernel/security/ima/policy) and the "
            "file's security.ima signature"
        )
    if err == errno.EPERM:
        return Unsupported(
            f"the kernel refused to load {a.kernel_path} (EPERM): liveupd lacks CAP_SYS_BOOT, "
            "or kexec was disabled (/proc/sys/kernel/kexec_load_disabled). Run liveupd as root "
            "with CAP_SYS_BOOT, and check kexec_load_disabled"
        )
    if err == errno.ENOEXEC:
        return NotLoadable(
            f"the running kernel does not recognise {a.kernel_path} as a kernel it can load "
            "(ENOEXEC): it is not a kernel image for this architecture in a format its "
            "kexec_file_load accepts (x86_64: a 64-bit relocatable bzImage; arm64: an Image). "
            "Stage the distribution's vmlinuz"
        )
    if err == errno.ENOMEM:
        sizes = f"about {a.need_bytes >> 20} MiB" if a.need_bytes else "the kernel and initrd"
        avail = (
            f"; {a.available_bytes >> 20} MiB was available"
            if a.available_bytes is not None
            else ""
        )
        return OutOfMemory(
            f"the kernel ran out of memory loading {what} (ENOMEM: it needs {sizes}{avail}). "
            "Free memory, use a smaller initrd, or make sure no crashkernel= reservation "
            "overlaps what the new kernel needs"
        )
    if err == errno.EBUSY:
        return KexecBusy(
            f"could not load {a.kernel_path}: another kexec load or unload is in progress "
            "(EBUSY; the kernel allows one at a time). Wait for it (kexec-tools, another "
            "liveupd?) to finish and stage again"
        )
    if err == errno.ENOSYS:
        return Unsupported(
            "the running kernel has no kexec_file_load (ENOSYS: built without "
            "CONFIG_KEXEC_FILE). Boot a kernel with CONFIG_KEXEC_FILE=y to use liveupd"
        )
    if err == errno.EINVAL:
        return KexecRejected(
            f"the kernel refused the arguments for {what} (EINVAL): usually a command line "
            f"that is too long for the new kernel ({a.cmdline_bytes} bytes) or an image the "
            "loader cannot place. Check dmesg for the kexec_file message, shorten the command "
            "line, and stage again"
        )
    if err == errno.ETXTBSY:
        return InvalidKernel(
            f"{a.kernel_path} (or its initrd) is open for writing by another process "
            "(ETXTBSY). Wait for whatever writes it (a package upgrade?) to finish and stage "
            "again"
        )
    if err == errno.EFBIG:
        return InvalidKernel(
            f"{what} is too big for the kernel to read (EFBIG). Check that the right files "
            "were given"
        )
    return Failed(f"kexec_file_load of {what} failed: {name} ({_strerror(err)})")


def _signature_message(name: str, a: LoadAttempt) -> str:
    mode = f"lockdown is {a.lockdown}" if a.lockdown else "lockdown is not available"
    if a.signed is False:
        what = f"{a.kernel_path} has no embedded signature, and a valid one is required here"
    elif a.signed:
        what = (
            f"{a.kernel_path} is signed, but its signature does not verify against the keys "
            "this kernel trusts"
        )
    else:
        what = f"the signature of {a.kernel_path} is missing or does not verify"
    fix = (
        "Use the distribution's signed kernel, or sign this one with a key the kernel trusts "
        "(enrolled in the firmware db or MOK)"
    )
    if a.signed and not a.efi:
        fix = (
            "This machine booted without EFI: the certificates distributions sign kernels "
            "with reach the kernel through the firmware db and shim's MOK list, which exist "
            "only under EFI, so no distribution kernel can be verified here. Boot through EFI "
            "with Secure Boot and shim, use a kernel signed with a key built into the running "
            "kernel, or boot without lockdown"
        )
    return f"the kernel refused to load it: {what} ({name}; {mode}). {fix}"


def unload_error(err: int) -> LiveUpdError:
    if err == errno.EBUSY:
        return KexecBusy(
            "could not unload the staged kernel: another kexec operation is in progress "
            "(EBUSY). Wait for it to finish and cancel again"
        )
    if err == errno.ENOSYS:
        return Unsupported("the running kernel has no kexec_file_load, so nothing to unload")
    return Failed(
        f"unloading the staged kernel failed: {errno_name(err)} ({_strerror(err)}); check "
        "/sys/kernel/kexec_loaded and try again"
    )


def jump_error(err: int) -> LiveUpdError:
    if err == errno.EINVAL:
        return Failed(
            "reboot(LINUX_REBOOT_CMD_KEXEC) failed with EINVAL: no kernel is loaded, or liveupd "
            "runs in a user namespace. Stage again from the initial namespace"
        )
    if err == errno.EPERM:
        return Failed(
            "reboot(LINUX_REBOOT_CMD_KEXEC) failed with EPERM: liveupd lacks CAP_SYS_BOOT. Run "
            "it as root with CAP_SYS_BOOT"
        )
    return Failed(f"reboot(LINUX_REBOOT_CMD_KEXEC) failed: {errno_name(err)} ({_strerror(err)})")


def _strerror(err: int) -> str:
    return os.strerror(err)
