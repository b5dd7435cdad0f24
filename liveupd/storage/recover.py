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
from collections.abc import Iterable, Sequence

from liveupd import logs
from liveupd.backends.base import StorageBackend
from liveupd.transition.journal import Journal
from liveupd.transition.phases import StepStatus
from liveupd.transition.undo import ThawUndo

LOG = logs.get("storage")

# Statuses of a flush step whose freezes may still be in force.
_MAY_BE_FROZEN = {StepStatus.STARTED, StepStatus.DONE, StepStatus.UNDOING, StepStatus.FAILED}


def possibly_frozen(journal: Journal) -> list[str]:
    """Mount points the journal's flush steps may have left frozen, in thaw order."""
    out: list[str] = []
    for entry in reversed(journal.steps()):
        if not isinstance(entry.undo, ThawUndo) or entry.status not in _MAY_BE_FROZEN:
            continue
        for mp in reversed(entry.undo.mountpoints):
            if mp not in out:
                out.append(mp)
    return out


async def thaw_leftovers(
    journals: Iterable[Journal], boot_id: str, storage: StorageBackend
) -> list[str]:
    """Thaw what unfinished transitions of this boot may have frozen; returns what was thawed.

    Writes nothing: call it first thing on start, before any journal or log write.
    """
    thawed: list[str] = []
    for journal in journals:
        if journal.state.terminal or journal.record.boot_id != boot_id:
            continue
        thawed += await thaw(storage, possibly_frozen(journal), journal.id)
    return thawed


async def thaw(storage: StorageBackend, mountpoints: Sequence[str], transition: str) -> list[str]:
    """Thaw each (in the order given; no error when one is not frozen); what was thawed."""
    thawed: list[str] = []
    for mp in mountpoints:
        try:
            await asyncio.to_thread(storage.thaw, mp)
        except OSError as e:
            logs.event(
                LOG,
                "storage.thaw-failed",
                level=logging.ERROR,
                transition=transition,
                mountpoint=mp,
                error=e.strerror or str(e),
            )
            continue
        thawed.append(mp)
        logs.event(LOG, "storage.thawed-after-crash", transition=transition, mountpoint=mp)
    return thawed
