"""RealKexec: the KexecBackend that makes the real syscalls.

Facts are read below ``root`` (``/`` in the daemon; a tmp tree in tests, where
the syscall is also replaced at the cffi boundary).  The jump is guarded:
it is refused unless a kernel is loaded (/sys/kernel/kexec_loaded reads 1),
unless ``root`` is the real ``/``, and whenever ``LIVEUPD_HOST_TEST`` is set.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from pathlib import Path

from liveupd import logs
from liveupd.backends.base import OpenedKernel, Refusal
from liveupd.config import Config
from liveupd.errors import Failed, LiveUpdError, OutOfMemory
from liveupd.kernel import errnos, syscalls
from liveupd.kernel.arch import ArchInfo, arch_info
from liveupd.kernel.preflight import (
    Check,
    Finding,
    HostFacts,
    findings,
    memory_problem,
    read_facts,
)
from liveupd.kernel.preflight import refusals as preflight_refusals
from liveupd.kernel.signature import SignaturePolicy
from liveupd.transition.phases import ExecMode

LOG = logs.get("kexec")
KEXEC_LOADED = "sys/kernel/kexec_loaded"
SYSTEMCTL_KEXEC = (
    "systemctl",
    "start",
    "--no-block",
    "--job-mode=replace-irreversibly",
    "kexec.target",
)


class RealKexec:
    def __init__(
        self,
        config: Config,
        *,
        root: Path = Path("/"),
        arch: ArchInfo | None = None,
    ) -> None:
        self.config = config
        self.root = root
        self._arch = arch

    @property
    def arch(self) -> ArchInfo:
        if self._arch is None:
            self._arch = arch_info()
        return self._arch

    @property
    def policy(self) -> SignaturePolicy:
        return SignaturePolicy(self.config.kernel.signature)

    def facts(self) -> HostFacts:
        return read_facts(self.root)

    # --------------------------------------------------------- protocol --

    def refusals(self) -> list[Refusal]:
        problems = []
        try:
            self.arch  # noqa: B018 (refuses an unsupported architecture)
        except LiveUpdError as e:
            problems.append(Refusal(str(Check.ARCHITECTURE), e.message))
        return problems + preflight_refusals(self.facts(), self.policy)

    def preflight(self) -> list[str]:
        """The refusals' messages."""
        return [r.message for r in self.refusals()]

    def findings(self) -> list[Finding]:
        """Blockers and notes (lockdown, Secure Boot) for a status report."""
        return findings(self.facts(), self.policy)

    def is_loaded(self) -> bool:
        try:
            return (self.root / KEXEC_LOADED).read_text().strip() == "1"
        except OSError:
            return False

    def load(self, kernel: OpenedKernel, cmdline: str) -> None:
        facts = self.facts()
        need, signed = self._footprint(kernel)
        problem = memory_problem(need, facts.mem_available)
        if problem:
            raise OutOfMemory(f"not loading {kernel.kernel_path}: {problem}")
        attempt = errnos.LoadAttempt(
            kernel_path=kernel.kernel_path,
            initrd_path=kernel.initrd_path,
            cmdline_bytes=len(cmdline.encode()),
            lockdown=facts.lockdown,
            need_bytes=need,
            available_bytes=facts.mem_available,
            signed=signed,
            efi=facts.efi,
        )
        flags = syscalls.KexecFileFlag.NONE
        try:
            syscalls.kexec_file_load(self.arch, kernel.kernel_fd, kernel.initrd_fd, cmdline, flags)
        except OSError as e:
            raise errnos.load_error(e.errno or 0, attempt) from None
        if not self.is_loaded():
            raise Failed(
                f"kexec_file_load of {kernel.kernel_path} returned success, but "
                f"/{KEXEC_LOADED} does not read 1; nothing is staged. Check dmesg"
            )
        LOG.info("loaded %s (%s)", kernel.kernel_path, kernel.release)

    def unload(self) -> None:
        try:
            syscalls.kexec_file_unload(self.arch)
        except OSError as e:
            if e.errno == errno.ENOSYS and not (self.root / KEXEC_LOADED).exists():
                return  # no kexec at all: nothing can be loaded
            raise errnos.unload_error(e.errno or 0) from None
        if self.is_loaded():
            raise Failed(
                f"the staged kernel was unloaded, but /{KEXEC_LOADED} still reads 1; "
                "something else loaded one (kexec-tools?). Unload it with kexec -u"
            )
        LOG.info("unloaded the staged kernel")

    def jump(self, mode: ExecMode) -> None:
        self._guard(mode)
        if mode is ExecMode.SYSTEMD:
            self._start_kexec_target()
            return
        LOG.warning("reboot(LINUX_REBOOT_CMD_KEXEC)")
        for handler in logging.getLogger().handlers:
            handler.flush()
        try:
            syscalls.reboot_kexec(self.arch)
        except OSError as e:
            raise errnos.jump_error(e.errno or 0) from None
        raise Failed("reboot(LINUX_REBOOT_CMD_KEXEC) returned without an error; nothing happened")

    # ---------------------------------------------------------- helpers --

    def _guard(self, mode: ExecMode) -> None:
        if os.environ.get(syscalls.HOST_TEST_ENV):
            raise Failed(
                f"refusing the {mode} jump: {syscalls.HOST_TEST_ENV} is set, so this is a host "
                "test, and a jump would replace the running kernel"
            )
        if self.root != Path("/"):
            raise Failed(
                f"refusing the {mode} jump: facts come from {self.root}, not /; a jump acts on "
                "the real machine"
            )
        if not self.is_loaded():
            raise Failed(
                f"refusing the {mode} jump: no kernel is loaded (/{KEXEC_LOADED} does not "
                "read 1). Stage again"
            )

    def _start_kexec_target(self) -> None:
        # A subprocess rather than a D-Bus call from this worker thread: the
        # daemon's bus connection belongs to its event loop, and systemctl's
        # exit status says whether the job was queued.
        try:
            result = subprocess.run(
                SYSTEMCTL_KEXEC, capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Failed(f"could not start kexec.target ({' '.join(SYSTEMCTL_KEXEC)}): {e}") from e
        if result.returncode != 0:
            raise Failed(
                f"systemd refused to start kexec.target (systemctl exited {result.returncode}: "
                f"{result.stderr.strip() or result.stdout.strip()}); the loaded kernel stays "
                "loaded. Check the system manager's state (systemctl is-system-running)"
            )

    def _footprint(self, kernel: OpenedKernel) -> tuple[int, bool | None]:
        """Memory the load needs, and whether what is loaded carries a signature."""
        # Here, not at the top: `liveupd --verify` makes this backend and never loads.
        from liveupd.kernel.image import ImageError, load_footprint, parse_image
        from liveupd.kernel.validate import read_all

        size = os.fstat(kernel.kernel_fd).st_size
        initrd = os.fstat(kernel.initrd_fd).st_size if kernel.initrd_fd is not None else 0
        try:
            # The descriptor was size-capped when it was opened (or is our own memfd).
            image = parse_image(read_all(kernel.kernel_fd, limit=None))
        except (ImageError, OSError):
            return size * 2 + 2 * initrd, None
        return load_footprint(image, size, initrd), image.signed
