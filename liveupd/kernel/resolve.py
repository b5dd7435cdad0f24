"""Turn a stage request into a validated Target, and open a Target for loading.

Both go through :func:`checked`: open the kernel (and initrd) once, check them
through those descriptors, and hand out exactly those descriptors.  Staging
checks and closes; loading checks again, compares with what staging saw, and
loads the descriptors it checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from liveupd.backends.base import OpenedKernel, SystemBackend
from liveupd.config import Config
from liveupd.errors import InvalidArgument, InvalidKernel, SignatureRejected
from liveupd.kernel import bls, discovery
from liveupd.kernel.arch import Arch, ArchInfo, arch_info
from liveupd.kernel.cmdline import build_cmdline
from liveupd.kernel.image import (
    ImageError,
    ImageFormat,
    KernelImage,
    cmdline_limit,
    embedded_kernel,
    parse_image,
)
from liveupd.kernel.signature import SignaturePolicy, image_problem
from liveupd.kernel.validate import (
    OpenedFile,
    check_initrd,
    check_pin,
    open_checked,
    read_all,
    sha256_fd,
)
from liveupd.quoting import clip, quote
from liveupd.transition.context import StageRequest, Target

NO_INITRD = "none"  # StageRequest.initrd value: boot without an initrd


@dataclass(frozen=True)
class Choice:
    """Which files a request means, before they are checked."""

    release: str | None  # None: whatever the image says (a path with no release in its name)
    kernel_path: str
    initrd_path: str | None
    cmdline: str | None  # a BLS entry's options
    origin: str  # for messages: where the base command line comes from
    # Why the kernel has no initrd when it needs one: raised only after the image
    # itself passed its checks, so a file that is not a kernel is named as such.
    missing_initrd: str | None = None


@dataclass(frozen=True)
class Checked:
    """Files that passed every check, still open."""

    release: str
    kernel: OpenedFile
    initrd: OpenedFile | None
    image: KernelImage
    sha256: str
    initrd_sha256: str
    load_fd: int  # the kernel descriptor, or a sealed memfd with the kernel it wraps
    extracted: bool


# ------------------------------------------------------------- choosing ----


def choose(request: StageRequest, config: Config, running_release: str) -> Choice:
    """Which kernel and initrd a request names (InvalidKernel when none fits)."""
    dirs = ", ".join(config.kernel.allowed_dirs)
    found = discovery.scan(config, running_release)
    kernels = found.kernels
    spec = request.kernel.strip()
    chosen: discovery.InstalledKernel | None = None
    if not spec:
        if not kernels:
            raise InvalidKernel(
                f"no kernel found in {dirs} (kernel.allowed-dirs); install one, or name its file"
            )
        chosen = kernels[-1]
    elif spec.endswith(".conf") and "/" in spec:
        chosen = _from_entry_file(spec, config, running_release)
    elif "/" in spec:
        norm = os.path.normpath(spec)
        chosen = next((k for k in kernels if os.path.normpath(k.kernel_path) == norm), None)
        if chosen is None:
            path = Path(norm)
            release = discovery.release_from_path(path)
            initrd = None
            if release is not None:
                beside = path.parent if path.name == "vmlinuz" else None
                found_initrd = discovery.find_initrd(
                    [path.parent, *map(Path, config.kernel.allowed_dirs)], release, beside
                )
                initrd = str(found_initrd) if found_initrd else None
            return _with_initrd(
                request, Choice(release, norm, initrd, None, "the running command line"), kernels
            )
    else:
        chosen = next((k for k in kernels if k.release == spec), None)
        if chosen is None:
            chosen = next((k for k in kernels if k.entry and Path(k.entry).stem == spec), None)
        if chosen is None:
            have = ", ".join(k.release for k in kernels) or "none"
            raise InvalidKernel(
                f"no installed kernel {quote(spec)} in {dirs} (installed: {have}). Install it, or "
                "give the kernel file's path"
            )
    if len(chosen.initrds) > 1 and not request.initrd:
        raise InvalidKernel(
            f"{chosen.entry}: names {len(chosen.initrds)} initrds ({', '.join(chosen.initrds)}); "
            "kexec_file_load takes one. Combine them into one file (cat them, in order) and "
            "give it as the initrd"
        )
    origin = (
        f"the options of {chosen.entry}"
        if chosen.cmdline is not None
        else "the running command line"
    )
    return _with_initrd(
        request,
        Choice(chosen.release, chosen.kernel_path, chosen.initrd_path, chosen.cmdline, origin),
        kernels,
    )


def _from_entry_file(path: str, config: Config, running: str) -> discovery.InstalledKernel:
    """A kernel named by its boot loader entry: ``<allowed dir>/loader/entries/NAME.conf``."""
    dirs = config.kernel.allowed_dirs
    shown = clip(path)
    if ".." in path.split("/") or not path.startswith("/"):
        raise InvalidArgument(
            f"{shown}: a boot loader entry must be given as an absolute path without '..'"
        )
    base = next(
        (d for d in dirs if Path(path).parent == Path(d) / bls.ENTRIES_DIR),
        None,
    )
    if base is None:
        raise InvalidKernel(
            f"{shown}: not a boot loader entry: entries are read only from "
            f"<dir>/{bls.ENTRIES_DIR}/*.conf in an allowed directory "
            f"(kernel.allowed-dirs: {', '.join(dirs)})"
        )
    try:
        entry = bls.read_entry(path, base)
    except bls.BlsError as e:
        raise InvalidKernel(str(e)) from None
    kernel, problem = discovery.from_bls(entry, running)
    if kernel is None:
        raise InvalidKernel(problem)
    return kernel


def _with_initrd(
    request: StageRequest, choice: Choice, kernels: list[discovery.InstalledKernel]
) -> Choice:
    asked = request.initrd.strip()
    if asked == NO_INITRD:
        return Choice(choice.release, choice.kernel_path, None, choice.cmdline, choice.origin)
    if asked:
        return Choice(choice.release, choice.kernel_path, asked, choice.cmdline, choice.origin)
    if choice.initrd_path is None:
        others = [k for k in kernels if k.initrd_path and k.kernel_path != choice.kernel_path]
        if others:
            release = choice.release or "RELEASE"
            return dataclasses.replace(
                choice,
                missing_initrd=(
                    f"{choice.kernel_path}: no initrd found for it (looked for "
                    f"initrd.img-{release}, initramfs-{release}.img and initrd-{release} beside "
                    f"it), while the other installed kernels have one "
                    f"({others[0].initrd_path}). Build it (update-initramfs -c -k {release}, or "
                    f'dracut --kver {release}), or stage with initrd "{NO_INITRD}" if this '
                    "kernel boots without one"
                ),
            )
    return choice


# ------------------------------------------------------------- checking ----


def _loadable(image: KernelImage, path: str, arch: ArchInfo) -> bool:
    """Whether the kernel must be extracted first; InvalidKernel when it cannot be loaded."""
    kernel = image.kernel
    if image.format is ImageFormat.UKI:
        raise InvalidKernel(
            f"{path}: is a unified kernel image (a PE with an embedded {kernel.format}); "
            "kexec_file_load takes the kernel itself. Stage the vmlinuz and initrd it was "
            "built from"
        )
    if kernel.arch != arch.arch:
        raise InvalidKernel(
            f"{path}: is an {kernel.arch} kernel ({image.describe()}); this machine is "
            f"{arch.arch}. Install the {arch.arch} kernel package"
        )
    if arch.arch is Arch.X86_64:
        if image is not kernel:
            raise InvalidKernel(
                f"{path}: is {image.describe()}; on x86_64 kexec_file_load takes the bzImage "
                "itself. Give the uncompressed vmlinuz"
            )
        if kernel.kexec64_problem:
            raise InvalidKernel(
                f"{path}: kexec_file_load on x86_64 cannot load this bzImage: "
                f"{kernel.kexec64_problem}. Use a 64-bit kernel from Linux 3.x or newer"
            )
        return False
    return image is not kernel


def _sealed_memfd(data: bytes, name: str) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL,
        )
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def checked(
    config: Config,
    kernel_path: str,
    initrd_path: str | None,
    release: str | None,
    *,
    pin: str = "",
    arch: ArchInfo | None = None,
) -> Iterator[Checked]:
    """Open and check the files; yield them open; close them afterwards."""
    arch = arch or arch_info()
    dirs = config.kernel.allowed_dirs
    with contextlib.ExitStack() as stack:
        kernel = open_checked(kernel_path, dirs, "kernel")
        stack.callback(os.close, kernel.fd)
        # One buffer of at most 256 MiB (the cap open_checked enforced): the
        # header parsers need the image; the initrd is only ever streamed.
        try:
            data = read_all(kernel.fd)
        except OSError:
            raise InvalidKernel(
                f"{clip(kernel_path)}: changed while it was read; stage again"
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        check_pin(pin, digest, kernel_path)
        try:
            image = parse_image(data)
        except ImageError as e:
            raise InvalidKernel(f"{kernel_path}: {e}") from None
        extract = _loadable(image, kernel_path, arch)
        actual = image.kernel.release
        if not actual:
            raise InvalidKernel(
                f"{kernel_path}: the image has no kernel version string, so it cannot be "
                f"checked to be {release or 'the kernel asked for'}. Use the distribution's "
                "kernel image"
            )
        if release is not None and actual != release:
            raise InvalidKernel(
                f"{kernel_path}: is kernel {actual}, not {release} as asked (its version string: "
                f"{image.kernel.version!r}). The file name and the kernel inside disagree: "
                "reinstall the kernel package"
            )
        problem = image_problem(
            SignaturePolicy(config.kernel.signature), kernel_path, image.signed, extract
        )
        if problem:
            raise SignatureRejected(problem)
        load_fd = kernel.fd
        if extract:
            load_fd = _sealed_memfd(embedded_kernel(data, image), f"liveupd-kernel-{actual}")
            stack.callback(os.close, load_fd)
        del data
        initrd = None
        initrd_digest = ""
        if initrd_path is not None:
            initrd = open_checked(initrd_path, dirs, "initrd")
            stack.callback(os.close, initrd.fd)
            check_initrd(initrd)
            initrd_digest = sha256_fd(initrd.fd)
        yield Checked(
            release=actual,
            kernel=kernel,
            initrd=initrd,
            image=image,
            sha256=digest,
            initrd_sha256=initrd_digest,
            load_fd=load_fd,
            extracted=extract,
        )


@dataclass(frozen=True)
class Resolved:
    target: Target
    image: KernelImage
    initrd_sha256: str
    extracted: bool  # the kernel is loaded from a decompressed copy (arm64 vmlinuz, zboot)


def resolve(
    request: StageRequest,
    config: Config,
    system: SystemBackend,
    transition_id: str,
    *,
    arch: ArchInfo | None = None,
) -> Resolved:
    """Choose and check the request's kernel, and build its command line."""
    arch = arch or arch_info()
    choice = choose(request, config, system.release())
    with checked(
        config,
        choice.kernel_path,
        choice.initrd_path,
        choice.release,
        pin=request.sha256,
        arch=arch,
    ) as c:
        release, image, digest = c.release, c.image, c.sha256
        initrd_digest, extracted = c.initrd_sha256, c.extracted
    if choice.missing_initrd:
        raise InvalidKernel(choice.missing_initrd)
    if request.cmdline.strip():
        base, origin = request.cmdline, "the given command line"
    elif choice.cmdline is not None:
        base, origin = choice.cmdline, choice.origin
    else:
        base, origin = system.cmdline(), "the running command line (/proc/cmdline)"
    line = build_cmdline(
        base,
        request.append,
        transition_id,
        cmdline_limit(image, arch.command_line_size),
        source=origin,
    )
    target = Target(release, choice.kernel_path, choice.initrd_path, line, digest)
    return Resolved(target, image, initrd_digest, extracted)


def resolve_target(
    request: StageRequest, config: Config, system: SystemBackend, transition_id: str
) -> Target:
    return resolve(request, config, system, transition_id).target


@contextlib.contextmanager
def open_target(
    target: Target, config: Config, *, initrd_sha256: str = "", arch: ArchInfo | None = None
) -> Iterator[OpenedKernel]:
    """Open and check the target again; yield the very descriptors that were checked."""
    with contextlib.ExitStack() as stack:
        try:
            c = stack.enter_context(
                checked(
                    config,
                    target.kernel_path,
                    target.initrd_path,
                    target.release,
                    pin=target.sha256,
                    arch=arch,
                )
            )
        except InvalidKernel as e:
            raise type(e)(
                f"{e.message} (it passed the checks when it was staged, so it changed since: "
                "stage again)"
            ) from None
        if initrd_sha256 and c.initrd_sha256 != initrd_sha256:
            raise InvalidKernel(
                f"{target.initrd_path}: changed since it was staged (SHA-256 {c.initrd_sha256}, "
                f"was {initrd_sha256}); stage again"
            )
        yield OpenedKernel(
            release=target.release,
            kernel_path=target.kernel_path,
            initrd_path=target.initrd_path,
            kernel_fd=c.load_fd,
            initrd_fd=c.initrd.fd if c.initrd else None,
            sha256=target.sha256,
        )
