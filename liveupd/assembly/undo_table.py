"""Which function undoes which undo record: one explicit table, checked complete.

Rollback and crash recovery both undo through this table, so what a crashed
daemon undoes is exactly what a live one would have undone.  The domain
packages' handlers are imported when a record of theirs is first undone:
building the table (every engine, ``liveupd --verify`` included) stays cheap.
"""

from __future__ import annotations

from liveupd.transition.checkpoint import undo_checkpoint
from liveupd.transition.context import TransitionContext
from liveupd.transition.rollback import UndoTable
from liveupd.transition.steps import undo_hook
from liveupd.transition.undo import (
    CheckpointUndo,
    HookUndo,
    PreserveUndo,
    RebindUndo,
    StartUnitsUndo,
    ThawUndo,
    UnloadUndo,
    WatchdogUndo,
)


async def _undo_rebind(ctx: TransitionContext, record: RebindUndo) -> None:
    from liveupd.devices.steps import undo_rebind

    await undo_rebind(ctx, record)


async def _undo_thaw(ctx: TransitionContext, record: ThawUndo) -> None:
    from liveupd.storage.steps import undo_thaw

    await undo_thaw(ctx, record)


async def _undo_load(ctx: TransitionContext, record: UnloadUndo) -> None:
    from liveupd.kernel.steps import undo_load

    await undo_load(ctx, record)


async def _undo_watchdog(ctx: TransitionContext, record: WatchdogUndo) -> None:
    from liveupd.devices.watchdog_step import undo_watchdog

    await undo_watchdog(ctx, record)


async def _undo_start_units(ctx: TransitionContext, record: StartUnitsUndo) -> None:
    from liveupd.sessions.step import undo_start_units

    await undo_start_units(ctx, record)


async def _undo_preserve(ctx: TransitionContext, record: PreserveUndo) -> None:
    from liveupd.preserve.step import undo_preserve

    await undo_preserve(ctx, record)


UNDO = UndoTable(
    {
        HookUndo: undo_hook,  # the hook's undo program
        RebindUndo: _undo_rebind,  # bind the devices again, links up (devices.steps)
        ThawUndo: _undo_thaw,  # thaw, then write what was held (storage.steps)
        CheckpointUndo: undo_checkpoint,  # nothing pending verification
        UnloadUndo: _undo_load,  # kexec unload (kernel.steps)
        WatchdogUndo: _undo_watchdog,  # stop the watchdog armed for the jump
        StartUnitsUndo: _undo_start_units,  # start the remote-login listeners again
        PreserveUndo: _undo_preserve,  # resume the dumped services (preserve.step)
    }
)
