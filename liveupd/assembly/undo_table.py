"""Which function undoes which undo record: one explicit table, checked complete.

Rollback and crash recovery both undo through this table, so what a crashed
daemon undoes is exactly what a live one would have undone.
"""

from __future__ import annotations

from liveupd.devices.steps import undo_rebind
from liveupd.devices.watchdog_step import undo_watchdog
from liveupd.kernel.steps import undo_load
from liveupd.storage.steps import undo_thaw
from liveupd.transition.checkpoint import undo_checkpoint
from liveupd.transition.rollback import UndoTable
from liveupd.transition.steps import undo_hook
from liveupd.transition.undo import (
    CheckpointUndo,
    HookUndo,
    RebindUndo,
    ThawUndo,
    UnloadUndo,
    WatchdogUndo,
)

UNDO = UndoTable(
    {
        HookUndo: undo_hook,  # the hook's undo program
        RebindUndo: undo_rebind,  # bind the devices again, links up
        ThawUndo: undo_thaw,  # thaw, then write what was held
        CheckpointUndo: undo_checkpoint,  # nothing pending verification
        UnloadUndo: undo_load,  # kexec unload
        WatchdogUndo: undo_watchdog,  # stop the watchdog armed for the jump
    }
)
