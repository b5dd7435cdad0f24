"""Failures after the point of no return, recorded for the new kernel's verification.

What runs after the jump was decided (the system-shutdown helper, which
unbinds the recorded devices at the very end of a ``systemd``-mode shutdown)
cannot fail the transition back any more, and by then every filesystem is
unmounted or read-only.  So a failure there is appended, one JSON line
``{"transition": ID, "message": TEXT}``, to ``<state-dir>/late-failures.jsonl``,
making the state directory's filesystem writable for that one write if it is
read-only (``mount -o remount,rw``, then read-only again).
``units/liveupd-shutdown`` writes the same line itself when the helper
failed without recording anything (it could not even start).  The new
kernel's verification takes the lines of its transition as warnings in the
report (``Verification.warnings``) and removes the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

RECORD_NAME = "late-failures.jsonl"
MAX_BYTES = 64 * 1024  # what verification reads at most
MAX_MESSAGE = 400  # characters of one message kept


def record_path(state_dir: Path) -> Path:
    return state_dir / RECORD_NAME


def _mountpoint(path: Path) -> Path:
    """The mount point of the filesystem holding ``path`` (walking up while st_dev holds)."""
    path = path.resolve()
    dev = path.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == dev:
        path = path.parent
    return path


def _remount(mountpoint: Path, how: str) -> None:
    subprocess.run(
        ["mount", "-o", f"remount,{how}", str(mountpoint)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def record(state_dir: Path, transition_id: str, message: str) -> None:
    """Append one failure durably; OSError (or CalledProcessError) if it cannot be written."""
    line = json.dumps(
        {"transition": transition_id, "message": message[:MAX_MESSAGE], "at": time.time()}
    )
    read_only = bool(os.statvfs(state_dir).f_flag & os.ST_RDONLY)
    mountpoint = _mountpoint(state_dir) if read_only else None
    if mountpoint is not None:
        _remount(mountpoint, "rw")
    try:
        fd = os.open(
            record_path(state_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        if mountpoint is not None:
            _remount(mountpoint, "ro")


def read(state_dir: Path, transition_id: str) -> list[str]:
    """The failures recorded for ``transition_id`` (a line that does not parse says so)."""
    path = record_path(state_dir)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as e:
        return [f"{path} could not be read: {e.strerror or e}"]
    messages = []
    lines = data[:MAX_BYTES].decode(errors="replace").splitlines()
    for number, text in enumerate(lines, 1):
        try:
            entry = json.loads(text)
            tid, message = entry["transition"], entry["message"]
            if not isinstance(tid, str) or not isinstance(message, str):
                raise TypeError("transition and message must be strings")
        except (ValueError, KeyError, TypeError) as e:
            messages.append(f"{path} line {number} could not be read ({str(e)[:80]})")
            continue
        if tid == transition_id:
            messages.append(message[:MAX_MESSAGE])
    if len(data) > MAX_BYTES:
        messages.append(f"{path} is longer than {MAX_BYTES} bytes: the rest was not read")
    return messages
