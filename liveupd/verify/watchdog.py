"""On the new kernel: take over the watchdog armed for the jump, feed it, hand it over.

The old kernel left the timer running with its driver unbound, and the new
kernel's command line kept udev from loading the driver (its probe may stop
a running timer).  Verification now loads the driver itself, opens the
device (which starts a fresh period of ``[exec] watchdog-sec``) and feeds it
from its event loop while it verifies: a verification that hangs stops
feeding it, and the machine resets into the old kernel.

When verification is over (passed or not: what follows a failure is
``[verify] on-failure``'s to decide), the watchdog is handed to systemd if
PID 1 watches this device (``RuntimeWatchdogSec=``): closed without the
magic character, left running until PID 1 opens it; otherwise it is closed
with the magic character, which stops it.  Another process that opened it
first (PID 1) keeps it: nothing to take over.

A watchdog that cannot be taken over (its driver missing on this kernel, no
device, the open failed) is a verification failure: its timer still runs and
resets the machine into the old kernel, so the pending record is kept and that
boot records the transition ``fell-back`` (``postboot.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from liveupd.backends.base import WatchdogBusy, WatchdogRecord
from liveupd.devices.watchdog import feed_interval, handover
from liveupd.transition.context import TransitionContext
from liveupd.transition.engine import Engine


@dataclass
class Outcome:
    """What became of the watchdog (``Verification.watchdog``) and what needs a look."""

    note: str | None = None
    warnings: list[str] = field(default_factory=list)
    failed: str | None = None  # the armed watchdog could not be taken over: why (a problem)


async def _feed(engine: Engine, ctx: TransitionContext, interval: float) -> None:
    backend = engine.backends.watchdog
    failed = False
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(backend.feed)
        except OSError as e:
            if not failed:  # once: it is tried again every interval
                ctx.log("watchdog.feed-failed", level=logging.ERROR, error=e.strerror or str(e))
            failed = True


@contextlib.asynccontextmanager
async def guarded(
    engine: Engine, ctx: TransitionContext, record: WatchdogRecord | None, outcome: Outcome
) -> AsyncIterator[None]:
    """Keep the watchdog fed while the body runs; hand it over or stop it afterwards."""
    if record is None:
        yield
        return
    backend = engine.backends.watchdog
    try:
        timeout = await asyncio.to_thread(backend.take_over, record, record.timeout)
    except WatchdogBusy as e:
        outcome.note = f"{record.devnode} was already held by another process: {e.strerror}"
        ctx.log("watchdog.held", device=record.devnode, error=e.strerror)
        yield
        return
    except OSError as e:
        why = e.strerror or str(e)
        outcome.note = f"{record.devnode} could not be taken over: {why}"
        outcome.failed = (
            f"the watchdog armed for the jump ({record.devnode}, {record.identity}) could not "
            f"be taken over on this kernel: {why}. Its timer still runs: the machine resets "
            f"within {record.timeout} s into the old kernel, and that boot records the "
            "transition fell-back"
        )
        ctx.log("watchdog.take-over-failed", level=logging.ERROR, device=record.devnode, error=why)
        yield
        return
    ctx.log("watchdog.taken-over", device=record.devnode, timeout=timeout)
    feeder = asyncio.create_task(_feed(engine, ctx, feed_interval(timeout)))
    try:
        yield
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        await _release(engine, ctx, record, timeout, outcome)


async def _release(
    engine: Engine,
    ctx: TransitionContext,
    record: WatchdogRecord,
    timeout: int,
    outcome: Outcome,
) -> None:
    backend = engine.backends.watchdog
    seconds, device = await asyncio.to_thread(backend.manager_watchdog)
    decision = handover(record, seconds, device)
    try:
        await asyncio.to_thread(
            backend.release, keep_running=decision.keep_running, timeout=decision.timeout
        )
    except OSError as e:
        why = e.strerror or str(e)
        outcome.note = f"{record.devnode} taken over ({timeout} s); releasing it failed: {why}"
        outcome.warnings.append(
            f"releasing the watchdog {record.devnode} failed ({why}): if it still runs and "
            "nothing feeds it, the machine resets"
        )
        ctx.log("watchdog.release-failed", level=logging.ERROR, device=record.devnode, error=why)
        return
    outcome.note = f"{record.devnode} fed during verification ({timeout} s), then {decision.note}"
    ctx.log("watchdog.released", device=record.devnode, note=decision.note)
