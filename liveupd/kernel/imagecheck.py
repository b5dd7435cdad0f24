"""The checks on a parsed kernel image that decide whether it can be staged (pure).

Used by staging (``resolve.checked``) and by the cheaper header check behind
"the latest kernel" (``stageable``), so both refuse exactly the same images
with the same words.
"""

from __future__ import annotations

from liveupd.errors import InvalidKernel, SignatureRejected
from liveupd.kernel.arch import Arch, ArchInfo
from liveupd.kernel.image import ImageFormat, KernelImage
from liveupd.kernel.signature import SignaturePolicy, image_problem


def loadable(image: KernelImage, path: str, arch: ArchInfo) -> bool:
    """Whether the kernel must be unpacked first; InvalidKernel when it cannot be loaded."""
    kernel = image.kernel
    if image.format is ImageFormat.UKI:
        raise InvalidKernel(
            f"{path}: is a unified kernel image inside another (a PE with an embedded "
            f"{kernel.format} where a kernel was expected); stage the outer UKI itself or the "
            "kernel it was built from"
        )
    if kernel.arch != arch.arch:
        raise InvalidKernel(
            f"{path}: is an {kernel.arch} kernel ({image.describe()}); this machine is "
            f"{arch.arch}. Install the {arch.arch} kernel package"
        )
    if arch.arch is Arch.X86_64 and kernel.kexec64_problem:
        raise InvalidKernel(
            f"{path}: kexec_file_load on x86_64 cannot load this bzImage: "
            f"{kernel.kexec64_problem}. Use a 64-bit kernel from Linux 3.x or newer"
        )
    # x86_64 takes only a bzImage and arm64 only an Image: anything wrapped
    # (zboot, gzip, xz, zstd, ...) is unpacked into a sealed memfd first.
    return image is not kernel


def check_release(image: KernelImage, path: str, release: str | None, uname: str = "") -> str:
    """The kernel's release; InvalidKernel when it has none or is not the one asked for.

    ``uname`` is what a UKI's .uname section claims (checked against the kernel too).
    """
    actual = image.kernel.release
    if not actual:
        raise InvalidKernel(
            f"{path}: the image has no kernel version string, so it cannot be checked to be "
            f"{release or uname or 'the kernel asked for'}. Use the distribution's kernel image"
        )
    if uname and uname != actual:
        raise InvalidKernel(
            f"{path}: its .uname section says {uname[:100]!r}, but the kernel in its .linux "
            f"section is {actual}. The UKI was built from mismatched parts: rebuild it"
        )
    if release is not None and actual != release:
        raise InvalidKernel(
            f"{path}: is kernel {actual}, not {release} as asked (its version string: "
            f"{image.kernel.version!r}). The file name and the kernel inside disagree: "
            "reinstall the kernel package"
        )
    return actual


def check_signature(policy: SignaturePolicy, path: str, image: KernelImage, extract: bool) -> None:
    problem = image_problem(policy, path, image.signed, extract)
    if problem:
        raise SignatureRejected(problem)


def check(
    image: KernelImage,
    path: str,
    release: str | None,
    arch: ArchInfo,
    policy: SignaturePolicy,
    *,
    uname: str = "",
) -> tuple[str, bool]:
    """Every check on the image: (its release, whether it must be unpacked first)."""
    extract = loadable(image, path, arch)
    actual = check_release(image, path, release, uname)
    check_signature(policy, path, image, extract)
    return actual, extract
