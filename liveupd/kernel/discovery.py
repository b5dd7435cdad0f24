"""Find installed kernels in the allowed directories.

(First version: /DIR/vmlinuz-RELEASE with initrd.img-RELEASE; BLS entries,
/usr/lib/modules/RELEASE/vmlinuz and real version ordering build on this.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from liveupd.config import Config


@dataclass(frozen=True)
class InstalledKernel:
    release: str
    kernel_path: str
    initrd_path: str | None
    running: bool


def list_kernels(config: Config, running_release: str) -> list[InstalledKernel]:
    """Installed kernels, oldest first."""
    found: dict[str, InstalledKernel] = {}
    for d in map(Path, config.kernel.allowed_dirs):
        for k in sorted(d.glob("vmlinuz-*")):
            release = k.name.removeprefix("vmlinuz-")
            initrd = k.with_name(f"initrd.img-{release}")
            found.setdefault(
                release,
                InstalledKernel(
                    release,
                    str(k),
                    str(initrd) if initrd.exists() else None,
                    release == running_release,
                ),
            )
    return [found[r] for r in sorted(found)]
