"""What goes into the guest image, and the cache key that pins it.

Everything that changes the image is here or in tests/vm/guest/ (plus the builder in
tests/vm/image.py): the key is a hash of all of it, the kernel packages the mirror
offers today and the project's runtime dependencies.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUEST_DIR = HERE / "guest"
PROJECT_ROOT = HERE.parent.parent

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Packages on top of debootstrap's minbase variant.
PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "libpam-systemd",  # logind: polkitd depends on it
    "dbus",
    "udev",
    "polkitd",
    "python3",
    "kexec-tools",
    "e2fsprogs",
    "iproute2",
    "procps",
    "kmod",
    "make",
    "util-linux",
    "linux-base",  # the kernel packages depend on it
    # initrds: a busybox initrd per kernel (tests/vm/guest/initrd-package), built at
    # image build time and by a kernel postinst hook when a kernel .deb is installed in
    # the guest. initramfs-tools worked too but cost 8.6 s more per boot and 135 s per
    # in-guest `dpkg -i` under TCG (docs/vm-harness.md).
    "busybox-static",
    "cpio",
    "less",
)
KERNEL_FLAVOUR = "cloud-amd64"
KERNEL_PACKAGE_RE = re.compile(r"^linux-image-(6\.1\.0-(\d+)-cloud-amd64)$")
# Guest python is Debian bookworm's 3.11; wheels are fetched for it on the host.
GUEST_PYTHON = "3.11"
WHEEL_PLATFORMS: tuple[str, ...] = (
    "manylinux_2_36_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
GUEST_SITE_PACKAGES = "/usr/local/lib/python3.11/dist-packages"
GUEST_DEB_DIR = "/var/cache/liveupd-test/debs"  # the kernel .debs, inside the guest
ROOT_LABEL = "liveupd-root"
DATA_LABEL = "liveupd-data"
ROOT_DISK_SIZE = "4G"  # sparse
DATA_DISK_SIZE = "512M"  # sparse


@dataclass(frozen=True)
class KernelPackage:
    """A Debian kernel package: `linux-image-<release>` at `version`."""

    release: str  # e.g. 6.1.0-55-cloud-amd64 (uname -r)
    version: str  # e.g. 6.1.192-1 (the .deb's version)

    @property
    def package(self) -> str:
        return f"linux-image-{self.release}"


class RecipeError(RuntimeError):
    pass


def _apt_kernel_releases() -> list[tuple[int, str]]:
    out = subprocess.run(
        ["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found: list[tuple[int, str]] = []
    for line in out.splitlines():
        m = KERNEL_PACKAGE_RE.match(line.split(" ", 1)[0])
        if m:
            found.append((int(m.group(2)), m.group(1)))
    return sorted(found)


def _apt_candidate_version(package: str) -> str:
    out = subprocess.run(
        ["apt-cache", "policy", package], check=True, capture_output=True, text=True
    ).stdout
    m = re.search(r"^\s*Candidate:\s*(\S+)", out, re.MULTILINE)
    if not m or m.group(1) == "(none)":
        raise RecipeError(f"apt has no candidate version for {package}:\n{out}")
    return m.group(1)


def newest_kernels(count: int = 2) -> tuple[KernelPackage, ...]:
    """The `count` newest linux-image-6.1.0-NN-cloud-amd64 packages the mirror offers.

    Returned oldest first: kernel A is [0], kernel B is [1]. Runs `apt-get update` once
    if the host's package lists do not have enough of them.
    """
    releases = _apt_kernel_releases()
    if len(releases) < count:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        releases = _apt_kernel_releases()
    if len(releases) < count:
        raise RecipeError(
            f"apt offers {len(releases)} linux-image-6.1.0-NN-{KERNEL_FLAVOUR} packages,"
            f" the harness needs {count}: {releases}"
        )
    chosen = [release for _, release in releases[-count:]]
    return tuple(
        KernelPackage(release=r, version=_apt_candidate_version(f"linux-image-{r}")) for r in chosen
    )


def project_dependencies(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> tuple[str, ...]:
    """`[project].dependencies` of the project: baked into the image as wheels."""
    with pyproject.open("rb") as f:
        data = tomllib.load(f)
    deps = data.get("project", {}).get("dependencies", [])
    return tuple(str(d) for d in deps)


def recipe_sources() -> list[Path]:
    """The files whose content defines the image (hashed into its key)."""
    files = [HERE / "recipe.py", HERE / "image.py"]
    files += sorted(p for p in GUEST_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def recipe_key(kernels: tuple[KernelPackage, ...], dependencies: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for path in recipe_sources():
        h.update(str(path.relative_to(HERE)).encode() + b"\0")
        h.update(oct(path.stat().st_mode & 0o777).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    meta = {
        "suite": SUITE,
        "mirror": MIRROR,
        "packages": PACKAGES,
        "kernels": [(k.release, k.version) for k in kernels],
        "dependencies": dependencies,
        "python": GUEST_PYTHON,
        "platforms": WHEEL_PLATFORMS,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()[:16]
