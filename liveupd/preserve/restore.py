"""The new kernel's side: was each preserved service restored with its state?

The generator made each dumped service's start a ``criu restore``
(``generator.py``).  Verification starts the unit (or waits for the start
the boot already queued) and checks that its main process is the dumped one:
then the restore is logged with its duration and the images removed.
Otherwise the images are removed, systemd reloaded (the generator writes no
drop-in any more) and the unit started the ordinary way; the verification
gets the warning "state of X lost: started fresh (why)".  Either way systemd
is reloaded at the end, so that a later restart of the unit is an ordinary
start.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from liveupd.backends.base import UnitStatus
from liveupd.preserve.dropins import pending_records
from liveupd.preserve.plan import PRESERVE_DIR, RESTORE_LOG, RestoreRecord, lost
from liveupd.preserve.step import log_tail
from liveupd.transition.context import TransitionContext
from liveupd.transition.records import PreservedService, PreserveOutcome


async def check_restored(ctx: TransitionContext, cmdline: str) -> list[str]:
    """Verify the restores of this transition's services; the warnings."""
    state_dir = ctx.config.state_dir
    records, skipped = await asyncio.to_thread(pending_records, state_dir, cmdline)
    warnings = [lost(s.split(":", 1)[0], f"unreadable record: {s}") for s in skipped]
    if not records and not (ctx.dir / PRESERVE_DIR).exists():
        return warnings
    checked: dict[str, PreservedService] = {}
    for record in records:
        warning, usec = await _check_one(ctx, record)
        if warning:
            ctx.log("preserve.lost", level=logging.WARNING, unit=record.unit, message=warning)
            warnings.append(warning)
        checked[record.unit] = PreservedService(
            unit=record.unit,
            dump_usec=record.dump_usec,
            image_bytes=record.image_bytes,
            outcome=PreserveOutcome.STARTED_FRESH if warning else PreserveOutcome.RESTORED,
            restore_usec=usec,
        )
    if checked:  # the report: each dump's entry gets its restore
        known = [checked.pop(p.unit, p) for p in ctx.journal.record.preserved]
        ctx.journal.update(preserved=(*known, *checked.values()))
    shutil.rmtree(ctx.dir / PRESERVE_DIR, ignore_errors=True)
    try:
        await ctx.backends.services.reload()
    except OSError as e:
        warnings.append(f"systemctl daemon-reload after the restores failed: {e.strerror or e}")
    return warnings


async def _check_one(
    ctx: TransitionContext, record: RestoreRecord
) -> tuple[str | None, int | None]:
    """The warning of a service whose state was lost (None: restored) and how long
    its restore took (restored only)."""
    services = ctx.backends.services
    timeout = ctx.config.preserve.restore_timeout
    try:
        status = await services.start(record.unit, timeout)
    except (OSError, TimeoutError) as e:
        status = UnitStatus(active="unknown", main_pid=0, result=str(e) or "timed out")
    if status.active == "active" and status.main_pid == record.pid:
        usec = max(status.ready_usec - status.start_usec, 0)
        ctx.log(
            "preserve.restored",
            unit=record.unit,
            pid=record.pid,
            restore_usec=usec,
            dump_usec=record.dump_usec,
            image_bytes=record.image_bytes,
        )
        _remove(record)
        return None, usec
    why = log_tail(Path(record.images) / RESTORE_LOG) or (
        f"the unit is {status.active} ({status.result}), main PID {status.main_pid}, "
        f"not {record.pid}"
    )
    _remove(record)
    try:
        fresh = await services.start_fresh(record.unit, timeout)
    except (OSError, TimeoutError) as e:
        return lost(record.unit, f"{why}; and its fresh start failed: {e}"), None
    if fresh.active != "active":
        return lost(record.unit, f"{why}; and its fresh start failed: {fresh.result}"), None
    return lost(record.unit, why), None


def _remove(record: RestoreRecord) -> None:
    shutil.rmtree(record.images, ignore_errors=True)
