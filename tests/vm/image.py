"""Build (once) and find the cached guest image.

    python -m tests.vm.image            build the image now if it is not cached, print it
    python -m tests.vm.image --rebuild  build it even if it is cached

The image is keyed on a hash of its recipe (tests/vm/recipe.py, this file,
tests/vm/guest/, the kernel packages and liveupd's dependencies from debian/control);
see tests/vm/cache.py for the layout. Building needs root (debootstrap, chroot) and
the network (Debian's mirror); using a built image needs neither.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.vm import cache, recipe

Log = Callable[[str], None]
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class KernelBuild:
    """One kernel installed in the image, with its boot files kept on the host."""

    release: str  # uname -r
    package: str  # linux-image-<release>
    version: str  # the .deb's version
    vmlinuz: Path  # host copy of the kernel image (QEMU's -kernel)
    initrd: Path  # host copy of /boot/initrd.img-<release>
    guest_vmlinuz: str  # where the package put the image in the guest
    packages: tuple[str, ...]  # linux-image-<release> and the packages it brought

    @property
    def guest_initrd(self) -> str:
        return f"/boot/initrd.img-{self.release}"


@dataclass(frozen=True)
class GuestImage:
    """A finished image in the cache. Never modified: every run uses overlays."""

    key: str
    path: Path
    root_disk: Path  # raw ext4, label liveupd-root
    data_disk: Path  # raw ext4, label liveupd-data
    kernels: tuple[KernelBuild, ...]  # oldest first

    @property
    def kernel_a(self) -> KernelBuild:
        return self.kernels[0]

    @property
    def kernel_b(self) -> KernelBuild:
        return self.kernels[1]

    def kernel(self, release: str | None = None) -> KernelBuild:
        if release is None:
            return self.kernel_a
        for k in self.kernels:
            if release in (k.release, k.package):
                return k
        known = ", ".join(k.release for k in self.kernels)
        raise KeyError(f"kernel {release!r} is not in image {self.key} ({known})")

    @classmethod
    def load(cls, path: Path) -> GuestImage:
        data = json.loads((path / MANIFEST).read_text())
        kernels = tuple(
            KernelBuild(
                release=k["release"],
                package=k["package"],
                version=k["version"],
                vmlinuz=path / k["vmlinuz"],
                initrd=path / k["initrd"],
                guest_vmlinuz=k["guest_vmlinuz"],
                packages=tuple(k["packages"]),
            )
            for k in data["kernels"]
        )
        return cls(
            key=data["key"],
            path=path,
            root_disk=path / data["root_disk"],
            data_disk=path / data["data_disk"],
            kernels=kernels,
        )


class ImageBuildError(RuntimeError):
    pass


class KernelDownloadError(ImageBuildError):
    """apt's lists name a kernel the mirror no longer has (stale lists)."""


def _stderr_log(msg: str) -> None:
    print(f"[vm-image {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class _Builder:
    def __init__(
        self,
        key: str,
        kernels: tuple[recipe.KernelPackage, ...],
        package_list: tuple[str, ...],
        log: Log,
    ) -> None:
        self.key = key
        self.kernels = kernels
        self.package_list = package_list
        self.log = log
        self.final = cache.images_dir() / key
        self.tmp = cache.images_dir() / f".tmp-{key}-{os.getpid()}"
        self.rootfs = self.tmp / "rootfs"
        self.build_log = self.tmp / "build.log"

    # -- helpers --------------------------------------------------------------
    def step(self, name: str, argv: Sequence[str | os.PathLike[str]], **kw: Any) -> None:
        """Run one build step, its output appended to build.log; fail with its tail."""
        start = time.monotonic()
        self.log(f"{name} ...")
        with self.build_log.open("a") as logf:
            logf.write(f"\n===== {name}: {' '.join(map(str, argv))}\n")
            logf.flush()
            proc = subprocess.run(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                check=False,
                **kw,
            )
        if proc.returncode != 0:
            raise ImageBuildError(
                f"image build step '{name}' failed with exit code {proc.returncode}"
                f" (full log: {self.build_log}); last lines:\n{_tail(self.build_log)}"
            )
        self.log(f"{name}: done in {time.monotonic() - start:.1f} s")

    # -- steps ----------------------------------------------------------------
    def download_kernels(self) -> list[Path]:
        """Every .deb of both kernels (B brings linux-binary/modules/base) into the cache."""
        dest = cache.downloads_dir("kernels")
        debs: list[Path] = []
        for k in self.kernels:
            for d in k.debs:
                pattern = f"{d.package}_{d.version.replace(':', '%3a')}_*.deb"
                matches = sorted(dest.glob(pattern))
                if not matches:
                    try:
                        with recipe.apt_lock():
                            self.step(
                                f"download {d.spec()}",
                                ["apt-get", "download", "-q", d.spec()],
                                cwd=dest,
                                env=recipe.apt_env(),
                            )
                    except ImageBuildError as exc:
                        raise KernelDownloadError(str(exc)) from exc
                    matches = sorted(dest.glob(pattern))
                if not matches:
                    raise ImageBuildError(f"apt-get download left no .deb for {d.spec()} in {dest}")
                debs.append(matches[0])
        return debs

    def debootstrap(self) -> None:
        self.step(
            f"debootstrap {recipe.SUITE}",
            [
                "debootstrap",
                "--variant=minbase",
                f"--keyring={recipe.KEYRING}",
                f"--cache-dir={cache.downloads_dir('debootstrap')}",
                f"--include={','.join(recipe.BASE_PACKAGES)}",
                recipe.SUITE,
                self.rootfs,
                recipe.MIRROR,
            ],
        )

    def overlay(self) -> None:
        self.log("copying guest files (agent, units, config)")
        src_root = recipe.GUEST_DIR / "rootfs"
        for src in sorted(src_root.rglob("*")):
            dst = self.rootfs / src.relative_to(src_root)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                if dst.is_symlink() or dst.exists():
                    dst.unlink()
                shutil.copy2(src, dst)
        agent_dir = self.rootfs / "usr/local/lib/liveupd-test"
        agent_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(recipe.GUEST_DIR / "agent.py", agent_dir / "agent.py")
        (agent_dir / "agent.py").chmod(0o755)
        # The archive, for apt in the chroot (configure.sh removes it at the end: the
        # guest has no network, its only package source is the local repository).
        (self.rootfs / "etc/apt/sources.list").write_text(
            "".join(f"deb {m} {s} main\n" for m, s in recipe.APT_SOURCES if s != recipe.BACKPORTS)
        )

    def local_repository(self, debs: list[Path]) -> None:
        """The kernel .debs as a flat apt repository in the guest (GUEST_DEB_DIR)."""
        repo = self.rootfs / recipe.GUEST_DEB_DIR.lstrip("/")
        repo.mkdir(parents=True, exist_ok=True)
        for deb in debs:
            shutil.copy2(deb, repo / deb.name)
        write_packages_index(repo)

    def configure(self, debs: list[Path]) -> None:
        shutil.copy2(recipe.GUEST_DIR / "configure.sh", self.rootfs / "tmp/configure.sh")
        self.step(
            "dpkg-deb --build liveupd-test-initrd",
            [
                "dpkg-deb",
                "--root-owner-group",
                "-Zgzip",
                "--build",
                recipe.GUEST_DIR / "initrd-package",
                self.rootfs / "tmp/liveupd-test-initrd.deb",
            ],
        )
        a, b = self.kernels
        a_deb = next(d for d in debs if d.name.startswith(f"{a.package}_"))
        # A private mount namespace: the chroot's /proc, /sys and /dev mounts vanish
        # with it, whatever happens.
        script = (
            'set -e; r="$1"; shift; '
            'mount -t proc proc "$r/proc"; '
            'mount --rbind /sys "$r/sys"; '
            'mount --rbind /dev "$r/dev"; '
            'mount -t tmpfs tmpfs "$r/run"; '
            'exec chroot "$r" /bin/sh /tmp/configure.sh "$@"'
        )
        self.step(
            "configure the image in a chroot (user, units, initrd tool, kernels)",
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "configure",
                self.rootfs,
                f"{recipe.GUEST_DEB_DIR}/{a_deb.name}",
                b.package,
                *sorted(set(self.package_list) - set(recipe.BASE_PACKAGES)),
            ],
        )

    def export_boot_files(self) -> list[dict[str, Any]]:
        out_dir = self.tmp / "kernels"
        out_dir.mkdir()
        entries: list[dict[str, Any]] = []
        for k in self.kernels:
            # Debian's new packaging puts the image in /usr/lib/modules/R/vmlinuz (and
            # linux-base's legacy hook links it to /boot); the old one in /boot.
            candidates = (f"usr/lib/modules/{k.release}/vmlinuz", f"boot/vmlinuz-{k.release}")
            image = next((c for c in candidates if (self.rootfs / c).is_file()), None)
            if image is None:
                raise ImageBuildError(f"the image has no kernel image for {k.release}")
            initrd = self.rootfs / "boot" / f"initrd.img-{k.release}"
            if not initrd.is_file():
                raise ImageBuildError(f"the image has no {initrd.name} after installing")
            shutil.copy2(self.rootfs / image, out_dir / f"vmlinuz-{k.release}")
            shutil.copy2(initrd, out_dir / initrd.name)
            entries.append(
                {
                    "release": k.release,
                    "package": k.package,
                    "version": k.version,
                    "suite": k.suite,
                    "vmlinuz": f"kernels/vmlinuz-{k.release}",
                    "initrd": f"kernels/{initrd.name}",
                    "guest_vmlinuz": f"/{image}",
                    "packages": [d.package for d in k.debs if d.package != "linux-base"],
                }
            )
        return entries

    def make_disks(self) -> None:
        self.step(
            "mkfs.ext4 -d (root disk)",
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                recipe.ROOT_LABEL,
                "-d",
                self.rootfs,
                self.tmp / "root.raw",
                recipe.ROOT_DISK_SIZE,
            ],
        )
        self.step(
            "mkfs.ext4 (data disk)",
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                recipe.DATA_LABEL,
                self.tmp / "data.raw",
                recipe.DATA_DISK_SIZE,
            ],
        )

    def build(self) -> GuestImage:
        start = time.monotonic()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.log(f"building image {self.key} in {self.tmp} (log: {self.build_log})")
        try:
            debs = self.download_kernels()
            self.debootstrap()
            self.overlay()
            self.local_repository(debs)
            self.configure(debs)
            kernels = self.export_boot_files()
            self.make_disks()
            shutil.rmtree(self.rootfs)
            manifest = {
                "key": self.key,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.monotonic() - start, 1),
                "suite": recipe.SUITE,
                "root_disk": "root.raw",
                "data_disk": "data.raw",
                "kernels": kernels,
                "packages": list(self.package_list),
            }
            (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            os.replace(self.tmp, self.final)
        except BaseException:
            # Keep the log of a failed build next to the cache for a post-mortem.
            failed_log = cache.images_dir() / f"failed-{self.key}.log"
            if self.build_log.exists():
                shutil.copy2(self.build_log, failed_log)
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self.log(f"image {self.key} built in {time.monotonic() - start:.0f} s: {self.final}")
        return GuestImage.load(self.final)


def write_packages_index(repo: Path) -> None:
    """A `Packages` file for the .debs in `repo` (a flat repository: `deb file:REPO ./`)."""
    stanzas: list[str] = []
    for deb in sorted(repo.glob("*.deb")):
        control = subprocess.run(
            ["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True
        ).stdout.rstrip("\n")
        data = deb.read_bytes()
        stanzas.append(
            f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    (repo / "Packages").write_text("\n".join(stanzas))


def current_key() -> tuple[str, tuple[recipe.KernelPackage, ...], tuple[str, ...]]:
    kernels = recipe.newest_kernels()
    package_list = recipe.packages()
    return recipe.recipe_key(kernels, package_list), kernels, package_list


def ensure_image(*, rebuild: bool = False, log: Log = _stderr_log) -> GuestImage:
    """The cached image for the current recipe, built first if needed."""
    try:
        return _ensure_image(rebuild, log)
    except KernelDownloadError as exc:
        # The mirror keeps only recent kernels: stale lists may name one it dropped.
        log(f"{exc}\nrefreshing the {recipe.SUITE} package lists and choosing the kernels again")
        recipe.apt_update()
        return _ensure_image(rebuild, log)


def _ensure_image(rebuild: bool, log: Log) -> GuestImage:
    key, kernels, package_list = current_key()
    final = cache.images_dir() / key
    if not rebuild and (final / MANIFEST).is_file():
        cache.touch(final)
        return GuestImage.load(final)
    if os.geteuid() != 0:
        raise ImageBuildError(
            f"the VM image {key} is not in {cache.images_dir()} and building it needs root"
            " (debootstrap, chroot): run `python -m tests.vm.image` as root once"
        )
    for tool in ("debootstrap", "mkfs.ext4", "unshare", "apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise ImageBuildError(f"building the VM image needs {tool}: run `make host-deps`")
    with cache.build_lock(log):
        if not rebuild and (final / MANIFEST).is_file():
            return GuestImage.load(final)
        if rebuild and final.exists():
            shutil.rmtree(final)
        image = _Builder(key, kernels, package_list, log).build()
        for p in cache.prune(key):
            log(f"pruned {p}")
        return image


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm.image", description=__doc__)
    parser.add_argument("--rebuild", action="store_true", help="build even if cached")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        image = ensure_image(rebuild=args.rebuild)
    except (ImageBuildError, recipe.RecipeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"image {image.key} ready in {time.monotonic() - start:.1f} s: {image.path}")
    for k in image.kernels:
        print(f"  kernel {k.release} ({k.version}): {k.vmlinuz.name}, {k.initrd.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
