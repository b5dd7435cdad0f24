"""After a daemon crash: thaw what it may have left frozen, before anything writes.

A daemon killed while filesystems were frozen leaves them frozen (the kernel
does not thaw on process exit), possibly including the one holding the state
directory.  Recovery must then thaw *before* it writes a journal or a log
line, or that write blocks forever.  The flush step journals its undo record
(the mount points it plans to freeze) before the first freeze, so the
journals say what may be frozen; a thaw of a filesystem that is not frozen is
a no-op.  Reading the journals is safe on a frozen filesystem.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from liveupd import logs
from liveupd.backends.base import StorageBackend
from liveupd.transition.journal import Journal
from liveupd.transition.phases import StepStatus

LOG = logs.get("storage")

# Statuses of a flush step whose freezes may still be in force.
_MAY_BE_FROZEN = {StepStatus.STARTED, StepStatus.DONE, StepStatus.UNDOING, StepStatus.FAILED}


def possibly_frozen(journal: Journal) -> list[str]:
    """Mount points the journal's flush steps may have left frozen, in thaw order."""
    out: list[str] = []
    for entry in reversed(journal.steps()):
        undo = entry.get("undo") or {}
        if undo.get("kind") != "thaw" or entry.get("status") not in _MAY_BE_FROZEN:
            continue
        for mp in reversed(undo.get("mountpoints", [])):
            if isinstance(mp, str) and mp not in out:
                out.append(mp)
    return out


async def thaw_leftovers(state_dir: Path, boot_id: str, storage: StorageBackend) -> list[str]:
    """Thaw what unfinished transitions of this boot may have frozen; returns what was thawed.

    Writes nothing: call it first thing on start, before any journal or log write.
    """
    thawed: list[str] = []
    for journal in Journal.all(state_dir):
        if journal.state.terminal or journal.data.get("boot_id") != boot_id:
            continue
        for mp in possibly_frozen(journal):
            try:
                await asyncio.to_thread(storage.thaw, mp)
            except OSError as e:
                logs.event(
                    LOG,
                    "storage.thaw-failed",
                    level=logging.ERROR,
                    transition=journal.id,
                    mountpoint=mp,
                    error=e.strerror or str(e),
                )
                continue
            thawed.append(mp)
            logs.event(LOG, "storage.thawed-after-crash", transition=journal.id, mountpoint=mp)
    return thawed
