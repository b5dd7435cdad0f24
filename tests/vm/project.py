"""Put the project's current working tree into a running guest and `make install` it.

The tree is what git would commit now: tracked files plus untracked files that are not
ignored (`git ls-files -co --exclude-standard`), deleted files left out. It is streamed
through the agent as a gzipped tar (the cloud kernel has no 9p), unpacked in
/usr/src/liveupd, and installed as a distribution package would be:

    make install DESTDIR= PREFIX=/usr PYTHON=/usr/bin/python3

then systemd and the system bus reload their configuration. The image never contains
the project's code, so a code change needs no image rebuild.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.vm.recipe import PROJECT_ROOT

if TYPE_CHECKING:
    from tests.vm.guest_vm import GuestVM

GUEST_SRC = "/usr/src/liveupd"
GUEST_TARBALL = "/run/liveupd-test-src.tar.gz"


def project_files(src: Path) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(src), "ls-files", "-z", "-co", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    names = sorted({n.decode() for n in out.split(b"\0") if n})
    return [n for n in names if (src / n).is_file() or (src / n).is_symlink()]


def project_tarball(src: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for name in project_files(src):
            info = tar.gettarinfo(str(src / name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isreg():
                with (src / name).open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def install_project(vm: GuestVM, src: Path | None = None, timeout: float = 600.0) -> None:
    src = (src or PROJECT_ROOT).resolve()
    start = time.monotonic()
    data = project_tarball(src)
    vm.write_file(GUEST_TARBALL, data, mode=0o600)
    script = f"""
set -eu
rm -rf {GUEST_SRC}
mkdir -p {GUEST_SRC}
tar -xzf {GUEST_TARBALL} -C {GUEST_SRC} --no-same-owner
rm -f {GUEST_TARBALL}
make -C {GUEST_SRC} --no-print-directory install DESTDIR= PREFIX=/usr PYTHON=/usr/bin/python3
systemctl daemon-reload
systemctl reload dbus.service
"""
    vm.run(script, timeout=timeout)
    print(
        f"[vm] installed {src} ({len(data) // 1024} KiB) in {time.monotonic() - start:.1f} s",
        flush=True,
    )
