"""Turn a stage request into a validated Target, and open a Target for loading.

Both go through :func:`checked`: open the kernel (and initrd) once, check them
through those descriptors, and hand out exactly those descriptors.  Staging
checks and closes; loading checks again, compares with what staging saw, and
loads the descriptors it checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from liveupd.backends.base import OpenedKernel, SystemBackend
from liveupd.config import Config
from liveupd.errors import InvalidArgument, InvalidKernel, LiveUpdError
from liveupd.kernel import bls, discovery, imagecheck, quarantine, uki_extract
from liveupd.kernel.arch import ArchInfo, arch_info
from liveupd.kernel.cmdline import Additions, build
from liveupd.kernel.image import ImageError, KernelImage, cmdline_limit, parse_image
from liveupd.kernel.memfd import FdRange
from liveupd.kernel.signature import SignaturePolicy
from liveupd.kernel.uki import UkiError, UkiView
from liveupd.kernel.unpack import UnpackError, unpack_kernel
from liveupd.kernel.validate import (
    FileId,
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
    # A unified kernel image: the profile it boots, what was left out, what the initrd holds.
    uki: UkiView | None = None
    warnings: tuple[str, ...] = ()
    initrd_parts: tuple[str, ...] = ()


# ------------------------------------------------------------- choosing ----


def choose(
    request: StageRequest, config: Config, running_release: str, arch: ArchInfo | None = None
) -> Choice:
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
        held = quarantine.read(config.state_dir)

        def check(k: discovery.InstalledKernel) -> Verdict:
            why = held.reason(k.release, running_release)  # fell back from: never again
            return Verdict(why) if why else verdict(k, kernels, config, arch)

        chosen = newest_stageable(kernels, config, check)
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


@dataclass(frozen=True)
class Verdict:
    """Whether Stage would take an installed kernel, from the same checks Stage runs."""

    problem: str  # why Stage would refuse it ("" when it would stage)
    image: str = ""  # what the file holds (e.g. "unified kernel image holding a bzImage")
    warnings: tuple[str, ...] = ()  # a UKI's sections that would be left out
    signed: bool | None = None  # the kernel that would be loaded carries a signature

    @property
    def ok(self) -> bool:
        return not self.problem


def verdict(
    kernel: discovery.InstalledKernel,
    kernels: Sequence[discovery.InstalledKernel],
    config: Config,
    arch: ArchInfo | None = None,
) -> Verdict:
    """Run Stage's checks on ``kernel`` as ``stage RELEASE`` would (nothing is loaded)."""
    try:
        with checked(
            config, kernel.kernel_path, kernel.initrd_path, kernel.release, arch=arch
        ) as c:
            described = c.image.describe()
            if c.uki is not None:
                described = f"unified kernel image holding {c.image.describe()}"
            result = Verdict("", described, c.warnings, c.image.signed)
    except LiveUpdError as e:
        return Verdict(e.message)
    if len(kernel.initrds) > 1:
        return dataclasses.replace(
            result,
            problem=(
                f"{kernel.entry}: names {len(kernel.initrds)} initrds; kexec_file_load takes one "
                "(stage it with one combined initrd)"
            ),
        )
    if kernel.source is not discovery.Source.UKI and kernel.initrd_path is None:
        others = [k for k in kernels if k.initrd_path and k.kernel_path != kernel.kernel_path]
        if others:
            return dataclasses.replace(
                result,
                problem=(
                    f"{kernel.kernel_path}: no initrd found for it, while the other installed "
                    f"kernels have one ({others[0].initrd_path})"
                ),
            )
    return result


def newest_stageable(
    kernels: Sequence[discovery.InstalledKernel],
    config: Config,
    check: Callable[[discovery.InstalledKernel], Verdict] | None = None,
) -> discovery.InstalledKernel:
    """The newest kernel Stage would take; InvalidKernel naming why each was refused."""
    refused: list[str] = []
    for k in reversed(kernels):
        v = check(k) if check is not None else verdict(k, kernels, config)
        if v.ok:
            return k
        refused.append(f"{k.release}: {v.problem}")
    raise InvalidKernel(
        "no installed kernel would stage: " + "; ".join(refused)[:2000] + ". Fix or remove "
        "them, or name a kernel file"
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


@contextlib.contextmanager
def checked(
    config: Config,
    kernel_path: str,
    initrd_path: str | None,
    release: str | None,
    *,
    pin: str = "",
    arch: ArchInfo | None = None,
    profile: str = "",
    uki_initrd: bool = True,
) -> Iterator[Checked]:
    """Open and check the files; yield them open; close them afterwards.

    A unified kernel image is taken apart first (``uki_extract``): its .linux
    then goes through the same checks as any kernel, its .ucode + .initrd (and
    ``initrd_path`` after them, if given) become the initrd.  ``profile`` and
    ``uki_initrd`` apply to UKIs only.
    """
    arch = arch or arch_info()
    dirs = config.kernel.allowed_dirs
    with contextlib.ExitStack() as stack:
        kernel = open_checked(kernel_path, dirs, "kernel")
        stack.callback(os.close, kernel.fd)
        # --- unified kernel images (issue 17): .linux and the initrd into sealed memfds ---
        uki = None
        what = kernel_path
        initrd = None
        if uki_extract.looks_like_uki(kernel.fd):
            if initrd_path is not None:
                initrd = _open_initrd(stack, initrd_path, dirs)
            uki = _open_uki(kernel, initrd, profile, uki_initrd, arch)
            stack.callback(uki.close)
            what = f"{kernel_path} (its .linux section)"
        elif profile:
            raise InvalidArgument(
                f"{kernel_path}: the profile option is for unified kernel images; this is not one"
            )
        # --- the kernel: read through the descriptor, hashed, parsed, checked ---
        # One buffer of at most 256 MiB (the cap open_checked enforced): the
        # header parsers need the image; the initrd is only ever streamed.
        try:
            data = read_all(uki.linux_fd if uki else kernel.fd)
        except OSError:
            raise InvalidKernel(
                f"{clip(kernel_path)}: changed while it was read; stage again"
            ) from None
        digest = sha256_fd(kernel.fd) if uki else hashlib.sha256(data).hexdigest()
        check_pin(pin, digest, kernel_path)
        try:
            image = parse_image(data)
        except ImageError as e:
            raise InvalidKernel(f"{what}: {e}") from None
        actual, extract = imagecheck.check(
            image,
            what,
            release,
            arch,
            SignaturePolicy(config.kernel.signature),
            uname=uki.view.uname if uki else "",
        )
        load_fd = uki.linux_fd if uki else kernel.fd
        if extract:
            try:
                load_fd = unpack_kernel(load_fd, len(data), image, f"liveupd-kernel-{actual}")
            except UnpackError as e:
                raise InvalidKernel(f"{what}: {e}") from None
            stack.callback(os.close, load_fd)
        del data
        initrd_digest = ""
        if uki is not None:
            initrd_digest = sha256_fd(initrd.fd) if initrd else ""
            initrd = _memfd_file(uki, kernel) if uki.initrd_fd is not None else None
        elif initrd_path is not None:
            initrd = _open_initrd(stack, initrd_path, dirs)
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
            uki=uki.view if uki else None,
            warnings=_uki_warnings(uki, image),
            initrd_parts=uki.initrd_parts if uki else (),
        )


UNSIGNED_LINUX = (
    "its .linux section carries no signature of its own: a kernel that enforces signatures "
    "(lockdown, CONFIG_KEXEC_SIG_FORCE) will refuse it, even when the UKI as a whole is signed"
)


def _uki_warnings(uki: uki_extract.OpenedUki | None, image: KernelImage) -> tuple[str, ...]:
    if uki is None:
        return ()
    return uki.warnings + (() if image.signed else (UNSIGNED_LINUX,))


def _open_initrd(stack: contextlib.ExitStack, path: str, dirs: Sequence[str]) -> OpenedFile:
    initrd = open_checked(path, dirs, "initrd")
    stack.callback(os.close, initrd.fd)
    check_initrd(initrd)
    return initrd


def _open_uki(
    kernel: OpenedFile, extra: OpenedFile | None, profile: str, with_initrd: bool, arch: ArchInfo
) -> uki_extract.OpenedUki:
    try:
        return uki_extract.open_uki(
            kernel.fd,
            kernel.id.size,
            profile=profile,
            arch=arch.arch,
            with_initrd=with_initrd,
            extra_initrd=FdRange(extra.fd, 0, extra.id.size) if extra else None,
            extras=uki_extract.extras_of(Path(kernel.real)),
            name=Path(kernel.path).stem,
        )
    except UkiError as e:
        raise InvalidKernel(f"{kernel.path}: {e}") from None


def _memfd_file(uki: uki_extract.OpenedUki, kernel: OpenedFile) -> OpenedFile:
    """The UKI's initrd memfd, described as a file for the loader."""
    assert uki.initrd_fd is not None
    name = f"{kernel.path} ({' + '.join(uki.initrd_parts)})"
    st = os.fstat(uki.initrd_fd)
    return OpenedFile(name, name, uki.initrd_fd, FileId.of(st), st)


@dataclass(frozen=True)
class Resolved:
    target: Target
    image: KernelImage
    initrd_sha256: str
    extracted: bool  # the kernel is loaded from a decompressed copy (arm64 vmlinuz, zboot)
    uki: UkiView | None = None  # a unified kernel image: the profile it boots
    warnings: tuple[str, ...] = ()  # what a UKI brings that is left out
    initrd_parts: tuple[str, ...] = ()  # what a UKI's initrd is made of


def resolve(
    request: StageRequest,
    config: Config,
    system: SystemBackend,
    transition_id: str,
    *,
    arch: ArchInfo | None = None,
    additions: Additions | Callable[[str], Additions] | None = None,
    carried: Sequence[str] = (),
) -> Resolved:
    """Choose and check the request's kernel, and build its command line
    (with liveupd's own ``additions``, or what they are for the chosen release).
    ``carried``: the words liveupd added to the running command line (dropped when
    it is the base)."""
    arch = arch or arch_info()
    choice = choose(request, config, system.release(), arch)
    uki_initrd = request.initrd.strip() != NO_INITRD
    with checked(
        config,
        choice.kernel_path,
        choice.initrd_path,
        choice.release,
        pin=request.sha256,
        arch=arch,
        profile=request.profile,
        uki_initrd=uki_initrd,
    ) as c:
        release, image, digest = c.release, c.image, c.sha256
        initrd_digest, extracted = c.initrd_sha256, c.extracted
        uki, warnings, parts = c.uki, c.warnings, c.initrd_parts
    # The release the image itself carries (a path may name none): a kernel a
    # transition fell back from is never staged again until it is cleared.
    quarantine.refuse(config.state_dir, release, system.release())
    if choice.missing_initrd and uki is None:
        raise InvalidKernel(choice.missing_initrd)
    drop: Sequence[str] = ()
    if request.cmdline.strip():
        base, origin = request.cmdline, "the given command line"
    elif uki is not None and uki.cmdline is not None:
        # A UKI's own command line, as its stub would boot it (not the running one).
        which = f" of profile {uki.profile.label}" if uki.profile else ""
        base, origin = uki.cmdline, f"the .cmdline{which} of {choice.kernel_path}"
    elif choice.cmdline is not None:
        base, origin = choice.cmdline, choice.origin
    else:
        base, origin = system.cmdline(), "the running command line (/proc/cmdline)"
        drop = carried
    built = build(
        base,
        request.append,
        transition_id,
        cmdline_limit(image, arch.command_line_size),
        source=origin,
        additions=additions(release) if callable(additions) else (additions or Additions()),
        carried=drop,
    )
    profile = f"@{uki.profile.index}" if uki is not None and uki.profile is not None else ""
    target = Target(
        release=release,
        kernel_path=choice.kernel_path,
        initrd_path=choice.initrd_path,
        cmdline=built.line,
        sha256=digest,
        profile=profile,
        uki_initrd=uki_initrd,
        added=built.added,
    )
    return Resolved(target, image, initrd_digest, extracted, uki, warnings, parts)


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
                    profile=target.profile,
                    uki_initrd=target.uki_initrd,
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
        uki = c.uki is not None
        yield OpenedKernel(
            release=target.release,
            kernel_path=f"the .linux section of {target.kernel_path}"
            if uki
            else target.kernel_path,
            initrd_path=c.initrd.path if uki and c.initrd else target.initrd_path,
            kernel_fd=c.load_fd,
            initrd_fd=c.initrd.fd if c.initrd else None,
            sha256=target.sha256,
        )
