"""The systemd generator that makes the new boot restore the preserved services.

systemd runs generators before it loads any unit, at every boot and every
``daemon-reload``, one after the other: whatever a generator costs delays the
whole boot.  So this entry point imports nothing of liveupd until the kernel
command line says this is a live update's boot (``liveupd.transition=``); the
work is in ``dropins.py``.  A generator must never fail the boot: a problem is
logged (to the kernel log, where systemd puts a generator's stderr) and the
units start fresh.
"""

from __future__ import annotations

import sys


def _say(message: str) -> None:
    print(f"liveupd-preserve-generator: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        _say("usage: liveupd-preserve-generator NORMAL_DIR [EARLY_DIR LATE_DIR]")
        return 0
    try:
        # open(), not pathlib: nothing more is imported on an ordinary boot
        with open("/proc/cmdline", encoding="utf-8", errors="replace") as f:  # noqa: PTH123
            cmdline = f.read()
        if "liveupd.transition=" not in cmdline:
            return 0  # the common case: not a live update's boot
        from pathlib import Path

        from liveupd.preserve.dropins import configured_state_dir, generate

        for note in generate(Path(args[0]), configured_state_dir(), cmdline):
            _say(note)
    except Exception as e:  # never fail the boot: the services start fresh
        _say(f"nothing restored: {type(e).__name__}: {str(e)[:300]}")
    return 0
