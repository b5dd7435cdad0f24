"""The machine came back on the old kernel after the jump: ``fell-back``.

Recognised by ``checks.fell_back`` (the transition reached exec, and this is a
new boot of the old kernel without the transition's id on its command line).
The reason comes from what this boot can read: the watchdog's boot status
(``WDIOF_CARDRESET``: it reset the machine), read once the watchdog armed
for the jump is registered again (its driver loaded here if udev has not yet),
or else "came back on the old kernel".  The
target kernel is quarantined (``kernel/quarantine.py``) before the transition
ends: nothing stages or executes it again by itself (never a loop) until an
admin clears it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from liveupd.devices.watchdog import fell_back_reason
from liveupd.kernel import quarantine
from liveupd.kernel.quarantine import MAX_REASON, QuarantinedKernel
from liveupd.transition.checkpoint import Checkpoint
from liveupd.transition.engine import Engine, Transition
from liveupd.transition.records import Verification


async def fall_back(
    engine: Engine, t: Transition, checkpoint: Checkpoint, verification: Verification
) -> Verification:
    """The verification record of a transition that fell back to the old kernel."""
    backends = engine.backends
    await asyncio.to_thread(backends.devices.settle, engine.config.verify.settle_timeout)
    if checkpoint.watchdog is not None:
        try:
            await asyncio.to_thread(backends.watchdog.load, checkpoint.watchdog)
        except OSError as e:
            t.ctx.log(
                "verify.watchdog-unreadable",
                level=logging.WARNING,
                device=checkpoint.watchdog.devnode,
                error=e.strerror or str(e),
            )
    watchdogs = await asyncio.to_thread(backends.watchdog.watchdogs)
    reason = fell_back_reason([(w.name, w.bootstatus) for w in watchdogs])
    t.ctx.log(
        "verify.fell-back",
        level=logging.ERROR,
        reason=reason,
        running=checkpoint.old.release,
        target=checkpoint.new.release,
    )
    warnings = verification.warnings
    problem = await _quarantine(engine, t, checkpoint, reason)
    if problem:
        warnings = (*warnings, problem)
    return replace(
        verification,
        fell_back=reason,
        warnings=warnings,
        finished=time.time(),
        policy=engine.config.verify.on_failure,
    )


async def _quarantine(engine: Engine, t: Transition, checkpoint: Checkpoint, reason: str) -> str:
    """Quarantine the target kernel (never staged again until cleared); a warning if the
    record cannot be written ("" when it was)."""
    entry = QuarantinedKernel(
        release=checkpoint.new.release,
        kernel=checkpoint.new.kernel_path,
        transition=t.id,
        reason=reason[:MAX_REASON],
        since=time.time(),
    )
    try:
        await asyncio.to_thread(quarantine.add, engine.config.state_dir, entry)
    except OSError as e:
        why = e.strerror or str(e)
        t.ctx.log(
            "quarantine.write-failed",
            level=logging.ERROR,
            release=entry.release,
            error=why,
        )
        where = quarantine.path_in(engine.config.state_dir)
        return (
            f"{entry.release} could not be quarantined ({where}: {why}): auto-stage and "
            "'liveupctl reboot' may try it again"
        )
    t.ctx.log("quarantine.added", release=entry.release, reason=reason)
    return ""
