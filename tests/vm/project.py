"""Build the project's Debian package on the host and install it in a running guest.

The package is built from the working tree as git would commit it now (tracked files
plus untracked files that are not ignored, deleted files left out), with the
project's own `make deb` (dpkg-buildpackage in a clean export), once per tree
content: the .deb is cached under ${LIVEUPD_VM_CACHE}/debs/<hash>/. In the guest it
is installed the way a user installs a downloaded package:

    apt-get install ./liveupd_<version>_all.deb

with its dependencies from Debian's archive (the image has them: the guest has no
network), nothing from pip. The image never contains the project, so a code change
needs no image rebuild, only a new .deb.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.vm import cache
from tests.vm.recipe import PROJECT_ROOT

if TYPE_CHECKING:
    from tests.vm.guest_vm import GuestVM
    from tests.vm.image import GuestImage

GUEST_DEB_DIR = "/var/cache/liveupd-test/project"
DEB_GLOB = "liveupd_*_all.deb"


class DebBuildError(RuntimeError):
    pass


def project_files(src: Path) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(src), "ls-files", "-z", "-co", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    names = sorted({n.decode() for n in out.split(b"\0") if n})
    return [n for n in names if (src / n).is_file() or (src / n).is_symlink()]


# Trees the package is never built from: a change there (a VM scenario being written)
# reuses the cached .deb and installed disk instead of rebuilding both.
NOT_PACKAGED = ("tests/", "bench/", "tryout/", ".ci/")


def tree_hash(src: Path) -> str:
    """A hash of the files the package is built from (names, modes, contents)."""
    h = hashlib.sha256()
    for name in project_files(src):
        if name.startswith(NOT_PACKAGED):
            continue
        path = src / name
        h.update(name.encode() + b"\0")
        if path.is_symlink():
            h.update(b"link:" + str(path.readlink()).encode() + b"\0")
            continue
        h.update(oct(path.stat().st_mode & 0o777).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build_deb(src: Path | None = None) -> Path:
    """The project's .deb for the tree at `src` (default: this checkout), built if needed."""
    src = (src or PROJECT_ROOT).resolve()
    key = tree_hash(src)
    out_dir = cache.cache_root() / "debs" / key
    with cache.file_lock(cache.cache_root() / "debs" / "build.lock"):
        found = sorted(out_dir.glob(DEB_GLOB))
        if found:
            return found[0]
        start = time.monotonic()
        result = subprocess.run(
            ["make", "-C", str(src), "--no-print-directory", "deb"],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        built = sorted((src / "build" / "deb").glob(DEB_GLOB))
        if result.returncode != 0 or not built:
            raise DebBuildError(
                f"make deb in {src} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        tmp = out_dir.with_name(f".tmp-{key}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy2(built[0], tmp / built[0].name)
        tmp.rename(out_dir)
        # Keep the newest few packages only.
        debs = sorted(
            (p for p in out_dir.parent.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
        )
        for old in debs[:-4]:
            shutil.rmtree(old, ignore_errors=True)
        print(
            f"[vm] built {built[0].name} from {src} in {time.monotonic() - start:.1f} s",
            flush=True,
        )
        return out_dir / built[0].name


def install_project(vm: GuestVM, src: Path | None = None, timeout: float = 600.0) -> None:
    deb = build_deb(src)
    marker = f"{GUEST_DEB_DIR}/installed-{deb.parent.name}"
    if vm.run(["test", "-e", marker], check=False).rc == 0:
        # The guest booted from installed_root(): this very package is installed.
        status = vm.run(["dpkg-query", "-W", "-f=${Status}", "liveupd"]).stdout
        assert status == "install ok installed", status
        return
    start = time.monotonic()
    guest_deb = f"{GUEST_DEB_DIR}/{deb.name}"
    vm.run(["mkdir", "-p", GUEST_DEB_DIR])
    vm.write_file(guest_deb, deb.read_bytes(), mode=0o644)
    # The bus daemon notices new policy files by itself, in its own time; asking it
    # to reload makes sure it has read them before the first call.
    script = f"""
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends {guest_deb}
dpkg-query -W -f='${{Status}} ${{Version}}\\n' liveupd
busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig
touch {marker}
"""
    result = vm.run(script, timeout=timeout)
    status = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert status.startswith("install ok installed"), result.stdout
    print(
        f"[vm] apt-get install ./{deb.name} ({deb.stat().st_size // 1024} KiB) in"
        f" {time.monotonic() - start:.1f} s",
        flush=True,
    )


def installed_root(image: GuestImage, src: Path | None = None) -> Path:
    """A root disk (qcow2 over the image's) with this tree's .deb installed, built once.

    Installing the package under TCG costs about half a minute per guest; the
    scenarios that are not about installing it boot an overlay of this disk instead
    (``GuestVM(installed=True)``), and ``install_project`` finds the package there.
    Built by a real ``apt-get install`` in a guest that is then powered off cleanly;
    cached per image and package under ${LIVEUPD_VM_CACHE}/installed/.
    """
    from tests.vm.guest_vm import GuestVM

    deb = build_deb(src)
    key = f"{image.key}-{deb.parent.name}"
    root = cache.cache_root() / "installed"
    out = root / key / "root.qcow2"
    with cache.file_lock(root / "build.lock"):
        if out.exists():
            return out
        start = time.monotonic()
        vm = GuestVM(image, kernel=image.kernel_a.release, keep_run_dir=True)
        try:
            vm.start()
            install_project(vm, src)
            vm.spawn("sync && systemctl poweroff")
            rc = vm.wait_exit(timeout=600)
            assert rc == 0, f"QEMU exited with {rc} after the guest's poweroff"
        finally:
            vm.stop()
        tmp = root / f".tmp-{key}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (vm.run_dir / "root.qcow2").rename(tmp / "root.qcow2")
        shutil.rmtree(vm.run_dir, ignore_errors=True)
        tmp.rename(out.parent)
        disks = sorted(
            (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
        )
        for old in disks[:-3]:
            shutil.rmtree(old, ignore_errors=True)
        print(f"[vm] installed root disk {key} in {time.monotonic() - start:.1f} s", flush=True)
        return out
