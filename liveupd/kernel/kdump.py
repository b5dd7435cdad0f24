"""The crash kernel (kdump) as the running kernel shows it, and the distribution's loader.

``/sys/kernel/kexec_crash_loaded`` says whether a crash kernel is loaded,
``/sys/kernel/kexec_crash_size`` how much memory ``crashkernel=`` reserved for
one.  liveupd never unloads a crash kernel (its unload is
``kexec_file_load(KEXEC_FILE_UNLOAD)`` without ``KEXEC_FILE_ON_CRASH``); the
new kernel has none until something loads one: Debian's kdump-tools
(``kdump-config load``), run by ``verify/kdump.py`` after verification.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

CRASH_LOADED = "sys/kernel/kexec_crash_loaded"
CRASH_SIZE = "sys/kernel/kexec_crash_size"
# The distributions' loaders, in order: kdump-tools (Debian, Ubuntu).
LOADERS = ("/usr/sbin/kdump-config", "/sbin/kdump-config")
MAX_OUTPUT = 200  # characters of the loader's output kept in a warning


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][-MAX_OUTPUT:] if lines else ""


class SysKdump:
    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def crash_loaded(self) -> bool | None:
        value = _read_int(self.root / CRASH_LOADED)
        return None if value is None else value == 1

    def crash_size(self) -> int | None:
        return _read_int(self.root / CRASH_SIZE)

    def loader(self) -> str | None:
        return next((p for p in LOADERS if os.access(p, os.X_OK)), None)

    def load(self, timeout: float) -> str:
        program = self.loader()
        if program is None:
            return "no loader is installed (kdump-tools' kdump-config)"
        argv = [program, "load"]
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return f"'{' '.join(argv)}' did not finish within {timeout:g} s"
        except OSError as e:
            return f"'{' '.join(argv)}' could not be run: {e.strerror or e}"
        if result.returncode != 0:
            said = last_line(result.stderr) or last_line(result.stdout) or "no output"
            return f"'{' '.join(argv)}' exited with status {result.returncode}: {said}"
        return ""
