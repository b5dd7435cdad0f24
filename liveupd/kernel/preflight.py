"""Can kexec work here?  Facts are read from a root directory (``/`` for real,
a tmp tree in tests); the decisions about them are pure.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from liveupd import safeopen
from liveupd.backends.base import Refusal
from liveupd.kernel.signature import Enforcement, Lockdown, SignaturePolicy, enforcement
from liveupd.safeopen import Kind, UnsafeFile

CAP_SYS_BOOT = 22
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
MEMORY_MARGIN = 64 << 20  # keep this much available after the load
CONFIG_KEYS = (
    "CONFIG_KEXEC",
    "CONFIG_KEXEC_FILE",
    "CONFIG_KEXEC_SIG",
    "CONFIG_KEXEC_SIG_FORCE",
    "CONFIG_KEXEC_BZIMAGE_VERIFY_SIG",
    "CONFIG_KEXEC_IMAGE_VERIFY_SIG",
    "CONFIG_SECURITY_LOCKDOWN_LSM",
    "CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT",
)


class Severity(StrEnum):
    BLOCKER = "blocker"  # kexec cannot work (or may not, by policy) until this is fixed
    NOTE = "note"  # worth knowing; nothing is refused because of it


class Check(StrEnum):
    KEXEC = "kexec"
    KEXEC_FILE = "kexec-file"
    DISABLED = "kexec-load-disabled"
    LOAD_LIMIT = "kexec-load-limit"
    CAPABILITY = "cap-sys-boot"
    CONTAINER = "container"
    USER_NAMESPACE = "user-namespace"
    LOCKDOWN = "lockdown"
    SECURE_BOOT = "secure-boot"
    SIGNATURE_POLICY = "signature-policy"
    MEMORY = "memory"
    ARCHITECTURE = "architecture"


@dataclass(frozen=True)
class Finding:
    check: Check
    severity: Severity
    message: str  # what is wrong and how to fix it


@dataclass(frozen=True)
class HostFacts:
    release: str
    kexec_loaded: bool | None  # None: /sys/kernel/kexec_loaded does not exist
    kexec_load_disabled: bool
    load_limit_reboot: int | None  # /proc/sys/kernel/kexec_load_limit_reboot (6.6+); -1: no limit
    cap_sys_boot: bool | None  # None: unknown
    container: str  # what says this is a container ("" when nothing does)
    user_namespace: str  # the uid map when not the initial namespace ("" when it is)
    lockdown: Lockdown | None  # None: no lockdown LSM
    efi: bool
    secure_boot: bool | None  # None: not EFI, or the variable is unreadable
    kernel_config: Mapping[str, str] | None  # the CONFIG_KEXEC* lines; None: no config found
    kernel_config_source: str
    mem_available: int | None  # bytes

    @property
    def enforcement(self) -> Enforcement:
        return enforcement(self.lockdown, self.kernel_config)


# ----------------------------------------------------------- reading ----


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def parse_lockdown(text: str | None) -> Lockdown | None:
    """``none [integrity] confidentiality`` -> integrity."""
    if text is None:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            with contextlib.suppress(ValueError):
                return Lockdown(word[1:-1])
    return None


def parse_capabilities(status: str | None) -> int | None:
    for line in (status or "").splitlines():
        if line.startswith("CapEff:"):
            try:
                return int(line.split()[1], 16)
            except (IndexError, ValueError):
                return None
    return None


def parse_kernel_config(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_"):
            key, _, value = line.partition("=")
            if key in CONFIG_KEYS:
                out[key] = value.strip()
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            key = line[2:].split(" ", 1)[0]
            if key in CONFIG_KEYS:
                out[key] = "n"
    return out


def parse_meminfo(text: str | None) -> int | None:
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            with contextlib.suppress(IndexError, ValueError):
                return int(parts[1]) * 1024
    return None


def _kernel_config(root: Path, release: str) -> tuple[dict[str, str] | None, str]:
    """The running kernel's build options: /boot/config-R through the safe open
    (root's, capped); a file that is missing or not trusted leaves the kernel's
    own /proc/config.gz, or nothing known."""
    try:
        with safeopen.open_file(str(root / "boot" / f"config-{release}"), Kind.KERNEL_CONFIG) as f:
            return parse_kernel_config(safeopen.read_text(f)), f"/boot/config-{release}"
    except (UnsafeFile, OSError):
        pass
    try:
        with gzip.open(root / "proc" / "config.gz", "rt", errors="replace") as f:
            return parse_kernel_config(f.read()), "/proc/config.gz"
    except (OSError, EOFError):
        return None, ""


def _container(root: Path) -> str:
    kind = _read(root / "run/systemd/container")
    if kind is not None:
        return f"/run/systemd/container says {kind.strip() or 'yes'}"
    for marker in (".dockerenv", "run/.containerenv"):
        if (root / marker).exists():
            return f"/{marker} exists"
    try:
        environ = (root / "proc/1/environ").read_bytes()
    except OSError:
        environ = b""
    for var in environ.split(b"\0"):
        if var.startswith(b"container="):
            return f"init's environment has {var.decode(errors='replace')}"
    return ""


def _user_namespace(root: Path) -> str:
    text = _read(root / "proc/self/uid_map")
    if text is None:
        return ""
    fields = text.split()
    if fields[:3] == ["0", "0", "4294967295"] and len(fields) == 3:
        return ""
    return " ".join(fields)


def _secure_boot(root: Path) -> tuple[bool, bool | None]:
    efi = (root / "sys/firmware/efi").is_dir()
    if not efi:
        return False, None
    try:
        data = (root / f"sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL}").read_bytes()
    except OSError:
        return True, None
    # 4 bytes of attributes, then the value.
    return True, (data[4] == 1) if len(data) >= 5 else None


def read_facts(root: Path = Path("/")) -> HostFacts:
    release = (_read(root / "proc/sys/kernel/osrelease") or "").strip()
    loaded = _read(root / "sys/kernel/kexec_loaded")
    disabled = _read(root / "proc/sys/kernel/kexec_load_disabled")
    limit = _read(root / "proc/sys/kernel/kexec_load_limit_reboot")
    caps = parse_capabilities(_read(root / "proc/self/status"))
    config, config_source = _kernel_config(root, release)
    efi, secure_boot = _secure_boot(root)
    try:
        limit_value = int(limit) if limit is not None else None
    except ValueError:
        limit_value = None
    return HostFacts(
        release=release,
        kexec_loaded=None if loaded is None else loaded.strip() == "1",
        kexec_load_disabled=(disabled or "0").strip() == "1",
        load_limit_reboot=limit_value,
        cap_sys_boot=None if caps is None else bool(caps >> CAP_SYS_BOOT & 1),
        container=_container(root),
        user_namespace=_user_namespace(root),
        lockdown=parse_lockdown(_read(root / "sys/kernel/security/lockdown")),
        efi=efi,
        secure_boot=secure_boot,
        kernel_config=config,
        kernel_config_source=config_source,
        mem_available=parse_meminfo(_read(root / "proc/meminfo")),
    )


# ---------------------------------------------------------- deciding ----


def findings(facts: HostFacts, policy: SignaturePolicy) -> list[Finding]:
    """Everything preflight has to say, blockers first."""
    out: list[Finding] = []

    def block(check: Check, message: str) -> None:
        out.append(Finding(check, Severity.BLOCKER, message))

    def note(check: Check, message: str) -> None:
        out.append(Finding(check, Severity.NOTE, message))

    kernel = f"the running kernel ({facts.release})" if facts.release else "the running kernel"
    if facts.container:
        block(
            Check.CONTAINER,
            f"liveupd is running in a container ({facts.container}); a container has no "
            "kernel of its own to replace. Run liveupd on the host",
        )
    if facts.user_namespace:
        block(
            Check.USER_NAMESPACE,
            f"liveupd is running in a user namespace (/proc/self/uid_map is "
            f"'{facts.user_namespace}'); the kernel refuses kexec there. Run it in the "
            "initial namespace, as a system service",
        )
    if facts.kexec_loaded is None:
        block(
            Check.KEXEC,
            f"{kernel} has no kexec support (/sys/kernel/kexec_loaded does not exist). Boot a "
            "kernel built with CONFIG_KEXEC_FILE=y, such as the distribution's standard kernel",
        )
    elif facts.kernel_config is not None and facts.kernel_config.get("CONFIG_KEXEC_FILE") == "n":
        block(
            Check.KEXEC_FILE,
            f"{kernel} was built without kexec_file_load (CONFIG_KEXEC_FILE is not set in "
            f"{facts.kernel_config_source}); liveupd loads kernels only with kexec_file_load. "
            "Boot a kernel built with CONFIG_KEXEC_FILE=y",
        )
    if facts.kexec_load_disabled:
        block(
            Check.DISABLED,
            "kexec is disabled until the next reboot (/proc/sys/kernel/kexec_load_disabled is "
            "1, and it cannot be set back to 0). Reboot normally, and remove whatever sets "
            "kernel.kexec_load_disabled (look in /etc/sysctl.d and /usr/lib/sysctl.d)",
        )
    if facts.load_limit_reboot == 0:
        block(
            Check.LOAD_LIMIT,
            "no kexec loads are left (/proc/sys/kernel/kexec_load_limit_reboot is 0, and it "
            "can only be lowered). Reboot normally, and raise or remove that sysctl setting",
        )
    if facts.cap_sys_boot is False:
        block(
            Check.CAPABILITY,
            "liveupd lacks CAP_SYS_BOOT, which kexec_file_load and reboot need. Run it as "
            "root, with CAP_SYS_BOOT in its unit's CapabilityBoundingSet=",
        )
    if policy is SignaturePolicy.OFF:
        return out
    enforced = facts.enforcement
    if policy is SignaturePolicy.REQUIRE and not enforced.enforced:
        block(
            Check.SIGNATURE_POLICY,
            f"kernel.signature is 'require', but {kernel} would load an image whose signature "
            f"does not verify ({enforced.why}). Boot with lockdown=integrity (Secure Boot turns "
            "lockdown on in most distribution kernels), or set kernel.signature = auto",
        )
    secure = {True: "on", False: "off", None: "unknown"}[facts.secure_boot]
    if not facts.efi:
        secure = "not available (booted without EFI)"
    if enforced.enforced:
        note(
            Check.LOCKDOWN,
            f"{enforced.why} (Secure Boot {secure}): the kernel loads only images with a valid "
            "embedded signature from its trusted keys; unsigned kernels (-unsigned packages, "
            "self-built kernels) are refused until they are signed with an enrolled key",
        )
    elif facts.secure_boot:
        note(
            Check.SECURE_BOOT,
            f"Secure Boot is on but {enforced.why}: the kernel does not insist on signed "
            "kernels, so an unsigned kernel would load",
        )
    return out


def blockers(facts: HostFacts, policy: SignaturePolicy) -> list[str]:
    return [f.message for f in findings(facts, policy) if f.severity is Severity.BLOCKER]


def refusals(facts: HostFacts, policy: SignaturePolicy) -> list[Refusal]:
    """The blockers as named reasons (``kexec-load-disabled``, ...)."""
    return [
        Refusal(str(f.check), f.message)
        for f in findings(facts, policy)
        if f.severity is Severity.BLOCKER
    ]


def memory_problem(need: int, available: int | None) -> str:
    """Why loading ``need`` bytes is unsafe now ("" when it is fine or unknown)."""
    if available is None or need + MEMORY_MARGIN <= available:
        return ""
    return (
        f"loading needs about {need >> 20} MiB (the kernel and initrd, read and then copied "
        f"into place), but only {available >> 20} MiB is available (MemAvailable) and "
        f"{MEMORY_MARGIN >> 20} MiB must stay free. Free memory (stop services, "
        "echo 3 > /proc/sys/vm/drop_caches) or use a smaller initrd"
    )
