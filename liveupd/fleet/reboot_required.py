"""Is a reboot due?  A newer kernel is installed, or a package asked for one.

Debian and Ubuntu packages that need a reboot (a kernel, libc, systemd...)
create ``/run/reboot-required`` (also reached as ``/var/run/reboot-required``)
and append their names to ``reboot-required.pkgs`` next to it; kured watches
the same file.  Both files are world-readable, so this is read client-side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from liveupd.kernel.versions import version_key

FILES = ("/run/reboot-required", "/var/run/reboot-required")
# Colon-separated flag files to look at instead of FILES (tests).
FILES_ENV = "LIVEUPCTL_REBOOT_REQUIRED"


@dataclass(frozen=True)
class RebootRequired:
    file: str  # the flag file that exists
    packages: tuple[str, ...]  # from FILE.pkgs, in order, once each


def flag_files() -> list[str]:
    env = os.environ.get(FILES_ENV)
    return [f for f in env.split(":") if f] if env else list(FILES)


def reboot_required(files: Sequence[str] | None = None) -> RebootRequired | None:
    """The first flag file that exists (None when none does), with the packages it names."""
    for name in flag_files() if files is None else files:
        path = Path(name)
        if not path.exists():
            continue
        return RebootRequired(str(path), _packages(path.with_name(path.name + ".pkgs")))
    return None


def _packages(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ()
    seen: dict[str, None] = {}
    for line in text.splitlines():
        name = line.strip()
        if name:
            seen.setdefault(name, None)
    return tuple(seen)


def newer_kernel(running: str | None, latest: str | None) -> str | None:
    """``latest`` when it sorts after the running release, else None."""
    if not running or not latest or latest == running:
        return None
    return latest if version_key(latest) > version_key(running) else None
