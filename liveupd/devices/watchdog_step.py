"""The built-in watchdog step: arm the hardware watchdog as the last thing before the jump.

The checkpoint step plans it (``WATCHDOG``: which device, for how long; the
record goes into the checkpoint, for the new kernel's verification).  In
``direct`` mode this step, just before ``exec`` in the exec phase, arms it:
from then on the machine resets unless the new kernel's
``liveupd --verify`` takes the watchdog over in time.  Its undo (the jump
failed, or the daemon died before it) stops the timer again.  In ``systemd``
mode the daemon does not arm it: services still have to stop, and the
system-shutdown helper arms it after the last unbind
(``devices/shutdown.py``).

A watchdog another process holds open (systemd's ``RuntimeWatchdogSec=`` in
``direct`` mode) cannot be armed: the jump goes on unguarded, and the
transition's log says so; the undo then leaves it alone (``NOT_ARMED``; after
a crash, ``disarm`` itself leaves alone a device that is busy and not ours).
"""

from __future__ import annotations

import asyncio
import logging

from liveupd.backends.base import WatchdogBusy, WatchdogRecord
from liveupd.errors import Failed
from liveupd.transition.context import Fact, TransitionContext
from liveupd.transition.phases import ExecMode, Phase
from liveupd.transition.steps import FIRST, BuiltinStep
from liveupd.transition.undo import AnyUndo, WatchdogUndo

# Set by the checkpoint step: the watchdog to arm (None: the jump is not guarded).
WATCHDOG: Fact[WatchdogRecord | None] = Fact("devices.watchdog")
# Set by this step when the watchdog could not be armed (held by another process):
# its undo, journaled by prepare, then has nothing to stop.
NOT_ARMED: Fact[str] = Fact("devices.watchdog-not-armed")


class WatchdogStep(BuiltinStep):
    kind = "watchdog"
    name = "watchdog"
    phase = Phase.EXEC
    order = FIRST - 1  # before the jump (exec, FIRST): the last step of the old kernel

    def _record(self, ctx: TransitionContext) -> WatchdogRecord | None:
        if ctx.mode is not ExecMode.DIRECT:
            return None
        return ctx.facts.get(WATCHDOG)

    def prepare(self, ctx: TransitionContext) -> AnyUndo | None:
        record = self._record(ctx)
        return WatchdogUndo(watchdog=record) if record is not None else None

    async def apply(self, ctx: TransitionContext) -> None:
        record = self._record(ctx)
        if record is None:
            planned = ctx.facts.get(WATCHDOG) is not None
            why = (
                "the system-shutdown helper arms it after the last unbind"
                if ctx.mode is ExecMode.SYSTEMD and planned
                else "none is planned (see the checkpoint's log line)"
            )
            ctx.log(
                "watchdog.not-armed",
                mode=str(ctx.mode),
                why=why,
            )
            return
        try:
            timeout = await asyncio.to_thread(ctx.backends.watchdog.arm, record)
        except WatchdogBusy as e:
            ctx.facts.set(NOT_ARMED, e.strerror or str(e))
            ctx.log(
                "watchdog.busy",
                level=logging.WARNING,
                device=record.devnode,
                error=e.strerror,
                hint="the jump is not guarded; systemd mode arms it after PID 1 lets go",
            )
            return
        except OSError as e:
            # A liveupd error says the step undid its own partial work: do so first.
            armed = f"arming the watchdog {record.devnode} ({record.identity}) failed: "
            try:
                await undo_watchdog(ctx, WatchdogUndo(watchdog=record))
            except Failed as undo:
                raise Failed(f"{armed}{e.strerror or e}; {undo.message}") from e
            raise Failed(
                f"{armed}{e.strerror or e}; it was stopped again. "
                + ctx.on_machine("Set [exec] watchdog-sec = 0 to go on without it, or see dmesg")
            ) from e
        ctx.log(
            "watchdog.armed",
            level=logging.WARNING,
            device=record.devnode,
            identity=record.identity,
            timeout=timeout,
            unbound=f"{record.subsystem}/{record.device} from {record.driver}",
        )


async def undo_watchdog(ctx: TransitionContext, record: WatchdogUndo) -> None:
    """Stop the timer again (the jump did not happen)."""
    not_armed = ctx.facts.get(NOT_ARMED)
    if not_armed is not None:
        # Busy at arm: another process's watchdog, which must be left alone.
        ctx.log("watchdog.undo-skipped", device=record.watchdog.devnode, why=not_armed)
        return
    w = record.watchdog
    try:
        await asyncio.to_thread(ctx.backends.watchdog.disarm, w)
    except OSError as e:
        raise Failed(
            f"disarming the watchdog {w.devnode} ({w.identity}) failed: {e.strerror or e}; "
            f"the watchdog still runs: the machine resets within {w.timeout} s. "
            + ctx.on_machine(
                f"Stop it now if you can (bind {w.device} to {w.driver} again, then write "
                f"V to {w.devnode}), or expect the reset: the firmware boots the boot loader's "
                "default kernel"
            )
        ) from e
    ctx.log("watchdog.disarmed", device=w.devnode)
