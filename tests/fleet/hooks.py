"""Run the shipped kernel hooks (kernel-install/) as a package manager would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.dbus.buses import REPO, PrivateBus

HOOKS = REPO / "kernel-install"
POSTINST = HOOKS / "postinst.d" / "zz-liveupd"
POSTRM = HOOKS / "postrm.d" / "zz-liveupd"
KERNEL_INSTALL = HOOKS / "99-liveupd.install"
# The virtualenv's python3 and liveupctl, as /usr/bin's would be on a machine, and
# a stand-in for the installed /usr/libexec/liveupd/kernel-hook that runs with it.
BIN = Path(sys.executable).parent
KERNEL_HOOK = Path(__file__).resolve().parent / "bin" / "kernel-hook"


def run_hook(
    bus: PrivateBus,
    script: Path,
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``script ARGS`` with the private bus as the system bus, the test's liveupd.conf."""
    extra = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "LIVEUPD_KERNEL_HOOK": str(KERNEL_HOOK),
    }
    if config is not None:
        extra["LIVEUPD_CONFIG"] = str(config)
    extra.update(env or {})
    return subprocess.run(
        ["/bin/sh", str(script), *args],
        capture_output=True,
        text=True,
        env=bus.env(**extra),
        cwd="/",
        timeout=120,
        check=False,
    )


def enable_auto_stage(config: Path) -> None:
    """A drop-in next to the test's liveupd.conf: [kernel] auto-stage = true."""
    dropins = config.with_name(config.name + ".d")
    dropins.mkdir(exist_ok=True)
    (dropins / "50-auto-stage.conf").write_text("[kernel]\nauto-stage = true\n")
