"""The machine came back on the old kernel after the jump: ``fell-back``.

Recognised by ``checks.fell_back`` (the transition reached exec, and this is a
new boot of the old kernel without the transition's id on its command line).
The reason comes from what this boot can read: the watchdog's boot status
(``WDIOF_CARDRESET``: it reset the machine), read once the watchdog armed
for the jump is registered again (its driver loaded here if udev has not yet),
or else "came back on the old kernel".  The
transition ends there: nothing stages or executes the target again by itself
(never a loop).
"""

from __future__ import annotations

import asyncio
import logging
import time

from liveupd.devices.watchdog import fell_back_reason
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
    return verification.model_copy(
        update={
            "fell_back": reason,
            "finished": time.time(),
            "policy": engine.config.verify.on_failure,
        }
    )
