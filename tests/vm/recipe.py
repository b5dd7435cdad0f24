"""What goes into the guest image, and the cache key that pins it.

Everything that changes the image is here or in tests/vm/guest/ (plus the builder in
tests/vm/image.py): the key is a hash of all of it, the kernel packages the mirror
offers today and liveupd's runtime dependencies as debian/control names them.

The guest is Debian 13 (trixie). The host may run another release (the project's
machines run Debian 12), so the trixie package lists live in a private apt
directory in the cache (`apt_env()`), never in the host's own apt configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.vm import cache

HERE = Path(__file__).resolve().parent
GUEST_DIR = HERE / "guest"
PROJECT_ROOT = HERE.parent.parent
CONTROL = PROJECT_ROOT / "debian" / "control"

SUITE = "trixie"
BACKPORTS = f"{SUITE}-backports"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_SOURCES: tuple[tuple[str, str], ...] = (
    (MIRROR, SUITE),
    (MIRROR, f"{SUITE}-updates"),
    (SECURITY_MIRROR, f"{SUITE}-security"),
    (MIRROR, BACKPORTS),
)
# Packages on top of debootstrap's minbase variant. liveupd's own dependencies (read
# from debian/control) are installed afterwards with apt in the chroot: debootstrap's
# resolver cannot follow virtual packages (python3-pycparser needs python3-ply-lex-*).
BASE_PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "libpam-systemd",  # logind: polkitd depends on it
    "dbus",
    "udev",
    "python3",
    "kexec-tools",  # tests load kernels with it too (liveupd itself does not need it)
    "e2fsprogs",
    "iproute2",
    "procps",
    "kmod",
    "util-linux",
    "linux-base",  # the kernel packages depend on it
    # initrds: a busybox initrd per kernel (tests/vm/guest/initrd-package), built at
    # image build time and by a kernel postinst hook when a kernel package is
    # installed in the guest. initramfs-tools worked too but cost 8.6 s more per boot
    # and 135 s per in-guest kernel install under TCG (docs/vm-harness.md).
    "busybox-static",
    "cpio",
    "less",
    # What a user of the package reads and types: `man liveupctl`, completions.
    "man-db",
    "bash-completion",
    "zsh",
    # Scenarios of the safety, preservation and fleet features: a LUKS2 volume with a
    # systemd-tpm2 token (cryptsetup), services checkpointed and restored (criu), and
    # updates started over SSH by Ansible and kured-style callers (openssh-server).
    "cryptsetup-bin",
    "criu",
    "openssh-server",
)
KERNEL_FLAVOUR = "cloud-amd64"
# Kernel A: trixie's own 6.12 (one package, files in /boot). Kernel B: the newest
# 7.x from trixie-backports (Debian's new packaging: linux-image-R depends on
# linux-binary-R, linux-modules-R and linux-base-R; vmlinuz in /usr/lib/modules/R).
KERNEL_RE = re.compile(
    r"^linux-image-((\d+)\.(\d+)\.(\d+)\+deb13(?:\.(\d+))?-" + re.escape(KERNEL_FLAVOUR) + r")$"
)
KERNEL_A_SERIES = (6, 12)
KERNEL_B_MIN_MAJOR = 7
# The packages a kernel package may depend on that the image must bring along
# (everything else it needs is in the base system).
KERNEL_COMPANION_RE = re.compile(r"^linux-(?:base|binary|modules)(?:-.+)?$")
GUEST_DEB_DIR = "/var/cache/liveupd-test/debs"  # a local apt repository in the guest
ROOT_LABEL = "liveupd-root"
DATA_LABEL = "liveupd-data"
ROOT_DISK_SIZE = "4G"  # sparse
DATA_DISK_SIZE = "512M"  # sparse


@dataclass(frozen=True)
class Deb:
    package: str
    version: str

    def spec(self) -> str:
        return f"{self.package}={self.version}"


@dataclass(frozen=True)
class KernelPackage:
    """A Debian kernel package `linux-image-<release>` and what it needs from the archive."""

    release: str  # e.g. 7.3.4+deb13-cloud-amd64 (uname -r)
    version: str  # e.g. 7.3.4-1~bpo13+1 (the .deb's version)
    suite: str  # where it comes from
    companions: tuple[Deb, ...] = ()  # linux-binary-*, linux-modules-*, linux-base(-*)

    @property
    def package(self) -> str:
        return f"linux-image-{self.release}"

    @property
    def debs(self) -> tuple[Deb, ...]:
        return (Deb(self.package, self.version), *self.companions)


class RecipeError(RuntimeError):
    pass


# ------------------------------------------------------------- private apt --


def apt_dir() -> Path:
    return cache.downloads_dir("apt")


def apt_env() -> dict[str, str]:
    """The environment for apt-get/apt-cache on trixie's lists (not the host's)."""
    root = apt_dir()
    conf = root / "apt.conf"
    sources = "".join(
        f"deb [signed-by={KEYRING}] {mirror} {suite} main\n" for mirror, suite in APT_SOURCES
    )
    text = "".join(
        f'{key} "{value}";\n'
        for key, value in (
            ("Dir::Etc", root / "etc"),
            ("Dir::Etc::SourceList", root / "etc/sources.list"),
            ("Dir::Etc::SourceParts", root / "etc/sources.list.d"),
            ("Dir::Etc::Preferences", root / "etc/preferences"),
            ("Dir::Etc::PreferencesParts", root / "etc/preferences.d"),
            ("Dir::Etc::Parts", root / "etc/apt.conf.d"),
            ("Dir::State", root / "state"),
            ("Dir::State::status", root / "state/status"),
            ("Dir::Cache", root / "cache"),
            ("APT::Architecture", "amd64"),
            ("APT::Sandbox::User", "root"),
        )
    )
    for sub in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d", "state/lists/partial"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "cache/archives/partial").mkdir(parents=True, exist_ok=True)
    for path, content in ((root / "etc/sources.list", sources), (conf, text)):
        if not path.is_file() or path.read_text() != content:
            path.write_text(content)
    (root / "state/status").touch()
    return {**os.environ, "APT_CONFIG": str(conf), "LC_ALL": "C"}


def apt_lock() -> contextlib.AbstractContextManager[None]:
    """One apt command on the private lists at a time: two xdist workers starting on a
    cold cache both ran `apt-get update`, and the second failed on apt's own lock."""
    return cache.file_lock(apt_dir() / "liveupd.lock")


def apt(tool: str, *args: str, cwd: Path | None = None) -> str:
    with apt_lock():
        result = subprocess.run(
            [tool, *args],
            env=apt_env(),
            cwd=cwd,
            check=False,
            capture_output=True,
            text=True,
            timeout=900,
        )
    if result.returncode != 0:
        raise RecipeError(
            f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-2000:]}"
        )
    return result.stdout


def apt_update() -> None:
    apt("apt-get", "update", "-q")


def _lists_present() -> bool:
    return any((apt_dir() / "state/lists").glob("*_Packages*"))


# ---------------------------------------------------------------- kernels --


def _release_key(m: re.Match[str]) -> tuple[int, ...]:
    return (int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5) or 0))


def _kernel_matches() -> list[re.Match[str]]:
    out = apt("apt-cache", "search", "--names-only", r"^linux-image-[0-9].*-" + KERNEL_FLAVOUR)
    found = []
    for line in out.splitlines():
        m = KERNEL_RE.match(line.split(" ", 1)[0])
        if m:
            found.append(m)
    return sorted(found, key=_release_key)


def _fields(package: str, version: str) -> dict[str, str]:
    """The control fields of `package` at `version` in the lists."""
    out = apt("apt-cache", "show", f"{package}={version}")
    stanza = out.split("\n\n", 1)[0]
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.splitlines():
        if line.startswith((" ", "\t")) and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _versions(package: str) -> list[tuple[str, str]]:
    """(version, suite) of every version of `package` in the lists, best first."""
    out = apt("apt-cache", "policy", package)
    versions: list[tuple[str, str]] = []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s+(?:\*\*\* )?(\S+) (-?\d+)$", line)
        if not m:
            continue
        suite = ""
        for origin in lines[i + 1 : i + 4]:
            om = re.match(r"^\s+-?\d+ \S+ (\S+)/main ", origin)
            if om:
                suite = om.group(1)
                break
        versions.append((m.group(1), suite))
    if not versions:
        raise RecipeError(f"apt knows no version of {package}:\n{out}")
    return versions


def _companions(package: str, version: str) -> tuple[Deb, ...]:
    """The linux-* packages `package` depends on, at the versions to bring."""
    fields = _fields(package, version)
    deps: list[Deb] = []
    for field in ("Pre-Depends", "Depends"):
        for clause in fields.get(field, "").split(","):
            alternative = clause.split("|")[0].strip()
            m = re.match(r"^([a-z0-9][a-z0-9+.-]*)(?:\s*\((=|>=|>>)\s*([^)]+)\))?$", alternative)
            if not m or not KERNEL_COMPANION_RE.match(m.group(1)):
                continue
            name, op, wanted = m.groups()
            if op == "=":
                deps.append(Deb(name, wanted))
                continue
            # linux-base (>= 4.17~): nothing to bring if trixie's own version (in the
            # base system) will do, else the newest the archive has (backports).
            versions = _versions(name)
            base = next((v for v, suite in versions if suite == SUITE), None)
            if op is None or (base is not None and _satisfies(base, op, wanted)):
                continue
            deps.append(Deb(name, versions[0][0]))
    return tuple(deps)


def _satisfies(version: str, op: str, wanted: str) -> bool:
    dpkg_op = {">=": "ge", ">>": "gt", "=": "eq"}[op]
    return (
        subprocess.run(
            ["dpkg", "--compare-versions", version, dpkg_op, wanted], check=False
        ).returncode
        == 0
    )


def newest_kernels() -> tuple[KernelPackage, KernelPackage]:
    """Kernel A (trixie's newest 6.12 cloud kernel) and B (backports' newest 7.x).

    Runs `apt-get update` on the private lists first if there are none.
    """
    with apt_lock():  # whoever comes second finds the lists the first fetched
        if not _lists_present():
            apt_update()
    matches = _kernel_matches()
    a = [m for m in matches if (int(m.group(2)), int(m.group(3))) == KERNEL_A_SERIES]
    b = [m for m in matches if int(m.group(2)) >= KERNEL_B_MIN_MAJOR]
    if not a or not b:
        raise RecipeError(
            f"the {SUITE} lists offer no {KERNEL_A_SERIES} kernel or no 7.x kernel "
            f"(-{KERNEL_FLAVOUR}): {[m.group(1) for m in matches]}"
        )
    chosen = []
    for m in (a[-1], b[-1]):
        package = m.group(0)
        version, suite = _versions(package)[0]
        chosen.append(
            KernelPackage(
                release=m.group(1),
                version=version,
                suite=suite,
                companions=_companions(package, version),
            )
        )
    return chosen[0], chosen[1]


# ------------------------------------------------------- liveupd's needs ----


# Virtual packages in liveupd's Depends: the base system's dbus provides them.
VIRTUAL = frozenset({"default-dbus-system-bus", "dbus-system-bus"})


def control_dependencies(control: Path = CONTROL) -> tuple[str, ...]:
    """The Debian packages liveupd's binary package depends on and recommends.

    Read from debian/control (substitution variables like ${misc:Depends} left out):
    the image has them installed, from Debian's archive, so that `apt install
    ./liveupd_*.deb` needs no network in the guest.
    """
    text = control.read_text()
    stanza = next(
        (s for s in text.split("\n\n") if re.search(r"^Package:\s*liveupd\s*$", s, re.M)), ""
    )
    names: list[str] = []
    for field in ("Pre-Depends", "Depends", "Recommends"):
        m = re.search(rf"^{field}:(.*(?:\n[ \t].*)*)", stanza, re.M)
        if not m:
            continue
        for clause in m.group(1).split(","):
            name = clause.split("|")[0].strip().split(" ")[0].split("(")[0].strip()
            if name and not name.startswith("${") and name not in VIRTUAL:
                names.append(name)
    if not names:
        raise RecipeError(f"{control}: no Depends for package liveupd")
    return tuple(sorted(set(names)))


def packages() -> tuple[str, ...]:
    """Everything installed on top of minbase: debootstrap's part, then apt's."""
    return tuple(sorted({*BASE_PACKAGES, *control_dependencies()}))


# -------------------------------------------------------------------- key ----


def recipe_sources() -> list[Path]:
    """The files whose content defines the image (hashed into its key)."""
    files = [HERE / "recipe.py", HERE / "image.py"]
    files += sorted(p for p in GUEST_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def recipe_key(kernels: Iterable[KernelPackage], package_list: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for path in recipe_sources():
        h.update(str(path.relative_to(HERE)).encode() + b"\0")
        h.update(oct(path.stat().st_mode & 0o777).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    meta = {
        "suite": SUITE,
        "sources": APT_SOURCES,
        "packages": package_list,
        "kernels": [[d.spec() for d in k.debs] for k in kernels],
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()[:16]
