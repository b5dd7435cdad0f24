"""Undoing: the table of undo handlers, and the undo of what a journal shows as done.

Rollback (a failure, a cancel) and crash recovery both come here, with the
same journal records and the same handlers.  Undos run most recent first; one
that fails is tried once more at once (a transient error: a device busy for a
moment, a fork that failed), so the order is kept, and only then reported.
A journal write that fails meanwhile is logged (and listed in the journal's
``journal_errors``) and the undoing goes on: the machine matters more than
the record.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from liveupd.errors import LiveUpdError
from liveupd.transition.context import TransitionContext
from liveupd.transition.failures import LOG, describe, log_write_failure
from liveupd.transition.phases import StepStatus
from liveupd.transition.records import StepEntry
from liveupd.transition.undo import UNDO_TYPES, AnyUndo, UndoBase

UndoHandler = Callable[[TransitionContext, Any], Awaitable[None]]


class UndoTable:
    """Which handler undoes which record type: given whole, checked complete."""

    def __init__(self, handlers: Mapping[type[UndoBase], UndoHandler]) -> None:
        missing = [t.__name__ for t in UNDO_TYPES if t not in handlers]
        extra = [t.__name__ for t in handlers if t not in UNDO_TYPES]
        if missing or extra:
            raise ValueError(
                f"undo table: no handler for {', '.join(missing) or '-'}; "
                f"unknown record types {', '.join(extra) or '-'}"
            )
        self._handlers = dict(handlers)

    async def undo(self, ctx: TransitionContext, record: AnyUndo) -> None:
        await self._handlers[type(record)](ctx, record)


async def undo_journal(
    ctx: TransitionContext, table: UndoTable, *, after_crash: bool
) -> tuple[list[str], list[str]]:
    """Run the undo of every step the journal says needs it; (undone, failures)."""
    undone: list[str] = []
    failures: list[str] = []
    for entry in ctx.journal.to_undo(after_crash=after_crash):
        ok = await _undo_one(ctx, table, entry)
        if not ok:
            ctx.log("undo.retry", level=logging.WARNING, step=entry.key, error=entry.undo_error)
            ok = await _undo_one(ctx, table, entry)
        if ok:
            undone.append(entry.key)
        else:
            failures.append(f"{entry.key}: {entry.undo_error}")
    return undone, failures


async def _undo_one(ctx: TransitionContext, table: UndoTable, entry: StepEntry) -> bool:
    assert entry.undo is not None
    _best_effort(ctx, entry.key, StepStatus.UNDOING)
    try:
        await table.undo(ctx, entry.undo)
    except Exception as e:  # keep undoing the rest; report every failure
        msg = e.message if isinstance(e, LiveUpdError) else describe(e)
        ctx.log("undo.failed", level=logging.ERROR, step=entry.key, error=msg)
        entry.undo_error = msg  # in memory even if the journal cannot take it
        _best_effort(ctx, entry.key, StepStatus.UNDO_FAILED, undo_error=msg)
        return False
    _best_effort(ctx, entry.key, StepStatus.UNDONE)
    ctx.log("undo.finished", step=entry.key)
    return True


def _best_effort(ctx: TransitionContext, key: str, status: StepStatus, **fields: str) -> None:
    """Journal an undo's progress; a failing journal must not stop the undoing."""
    try:
        ctx.journal.step_status(key, status, durable=status is not StepStatus.UNDOING, **fields)
    except Exception as e:
        log_write_failure(LOG, ctx.id, f"{status} of {key}", e)
