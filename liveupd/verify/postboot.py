"""Post-boot verification of a transition found unfinished after a new boot.

Runs early in the new boot (``liveupd --verify``, a oneshot unit) and again
when the daemon starts; a lock in the state directory and a re-read of the
journal make the second run a no-op.

1. Did this boot come from the transition's kexec?  The command line must
   carry ``liveupd.transition=ID`` (only that kexec passes it).  If not, and
   the jump was made but this is the old kernel again, the transition
   ``fell-back`` (``fallback.py``); otherwise the
   machine was rebooted some other way: ``superseded``, never a success.
2. The running kernel must be the target and the boot_id must have changed.
   The watchdog armed for the jump is taken over and fed from here on
   (``watchdog.py``).
3. Wait for udev to settle (``verify.settle-timeout``), then every recorded
   device must be bound to its driver again and every recorded network
   interface present with the same MAC.
4. Run the ``verify`` hooks, then the ``restore`` hooks; then check that the
   services ``[preserve] units`` dumped came back with their state
   (``liveupd.preserve.restore``: "state of X lost" is a warning).
   What failed on the old kernel after the point of no return (the
   system-shutdown helper, ``transition/late_failures.py``) becomes a warning
   in the report: the transition can still complete.
5. The watchdog is handed to systemd or stopped (``watchdog.py``).  Staying on
   this kernel, a crash kernel loaded before the jump is loaded again
   (``kdump.py``), or the report says "kdump not re-armed".
6. Record the result and the downtime figures; the transition ends
   ``completed`` or ``recovery-failed``.  With ``verify.on-failure =
   "rollback"`` a failure (on a new boot) transitions back to the previous
   kernel, at most once.

A watchdog armed for the jump that could not be taken over is a problem
(``watchdog``) of its own: its timer still runs, so nothing rolls back and the
pending record stays; the boot after the reset, on the old kernel, turns the
``recovery-failed`` into ``fell-back`` (:func:`after_watchdog_failure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from liveupd.backends.base import Binding
from liveupd.errors import Failed
from liveupd.fsio import remove_durably
from liveupd.transition import late_failures
from liveupd.transition.checkpoint import (
    Checkpoint,
    load_checkpoint,
    pending_path,
    read_exec_stamp,
    read_pending,
)
from liveupd.transition.engine import Engine, Transition
from liveupd.transition.events import TransitionFailed
from liveupd.transition.journal import Journal, JournalCorrupt
from liveupd.transition.phases import Phase, TransitionState
from liveupd.transition.records import RollbackResult, Verification
from liveupd.verify import kdump
from liveupd.verify.checks import (
    Check,
    Problem,
    device_problems,
    fell_back,
    kernel_problems,
    subsystems_to_check,
    superseded_reason,
)
from liveupd.verify.downtime import measure
from liveupd.verify.hooks import run_phase
from liveupd.verify.rollback import refusal, roll_back
from liveupd.verify.watchdog import Outcome, guarded

LOCK_NAME = "verify.lock"
DEVICE_POLL = 0.25  # seconds between device checks while waiting for them to come back


@contextlib.asynccontextmanager
async def verify_lock(state_dir: Path) -> AsyncIterator[None]:
    """One verifier at a time (the boot unit and the daemon may start together)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


async def check_devices(
    engine: Engine, bindings: tuple[Binding, ...], timeout: float
) -> list[Problem]:
    """Settle udev, then wait (within the same deadline) for every device to be back."""
    devices = engine.backends.devices
    simulated = engine.backends.dry_run
    deadline = time.monotonic() + timeout
    settled = await asyncio.to_thread(devices.settle, timeout)
    problems = []
    if not settled:
        problems.append(
            Problem(
                check=Check.SETTLE,
                message=f"udev did not settle within {timeout:g} s (verify.settle-timeout); "
                + (
                    'the simulated machine\'s description says so ("udev_settles": false)'
                    if simulated
                    else "see udevadm monitor and the journal of systemd-udevd"
                ),
            )
        )
    # Only the recorded devices' subsystems: enumerating every device (pyudev) takes
    # long under emulation, and this runs again every DEVICE_POLL until they are back.
    subsystems = subsystems_to_check(bindings)
    while True:
        present = [] if subsystems is None else await asyncio.to_thread(devices.devices, subsystems)
        found = device_problems(bindings, present, simulated=simulated)
        if not found or not settled or time.monotonic() >= deadline:
            return problems + found
        await asyncio.sleep(min(DEVICE_POLL, max(deadline - time.monotonic(), 0)))


def _remove_pending(engine: Engine, transition_id: str) -> None:
    if read_pending(engine.config.state_dir) == transition_id:
        remove_durably(pending_path(engine.config.state_dir))


def _watchdog_runs(verification: Verification) -> bool:
    """The watchdog armed for the jump was not taken over: its timer resets the machine."""
    return any(p.check is Check.WATCHDOG for p in verification.problems)


def _finish(
    engine: Engine, t: Transition, state: TransitionState, verification: Verification
) -> None:
    ctx = t.ctx
    t.progress = 100
    engine.finish(t, state, verification=verification)
    if not _watchdog_runs(verification):  # else kept: the boot after the reset falls back
        _remove_pending(engine, t.id)
    level = logging.INFO if state is TransitionState.COMPLETED else logging.WARNING
    ctx.log("verify.finished", level=level, state=str(state), **_log_fields(verification))
    if state is TransitionState.RECOVERY_FAILED:
        message = "verification failed: " + "; ".join(p.message for p in verification.problems)
        engine.events(TransitionFailed(t.id, Failed.dbus_name, message))


def _log_fields(verification: Verification) -> dict[str, object]:
    downtime = verification.downtime
    return {
        "reason": verification.superseded or verification.fell_back,
        "warnings": "; ".join(verification.warnings) or None,
        "watchdog": verification.watchdog,
        "problems": "; ".join(p.message for p in verification.problems) or None,
        "downtime_s": downtime.downtime_s if downtime else None,
        "exec_to_kernel_s": downtime.exec_to_kernel_s if downtime else None,
        "kernel_to_verified_s": downtime.kernel_to_verified_s if downtime else None,
    }


async def verify_after_boot(engine: Engine, t: Transition) -> TransitionState:
    """Verify ``t`` on this boot; its final state (terminal)."""
    async with verify_lock(engine.config.state_dir):
        try:
            fresh: Journal | None = Journal.load(t.ctx.journal.path)
        except (OSError, JournalCorrupt):
            fresh = None
        if fresh is not None and fresh.state.terminal:
            t.ctx.journal.adopt(fresh)  # another verifier finished it meanwhile
            return fresh.state
        return await _verify(engine, t)


async def _not_this_kexec(
    engine: Engine,
    t: Transition,
    checkpoint: Checkpoint | None,
    verification: Verification,
    reason: str,
) -> TransitionState:
    """This boot did not come from the transition's kexec: fell back, or superseded."""
    system = engine.backends.system
    if checkpoint is not None and fell_back(
        t.id,
        state=t.ctx.journal.state,
        exec_stamped=read_exec_stamp(t.ctx.journal.dir) is not None,
        checkpoint=checkpoint,
        pending=read_pending(engine.config.state_dir),
        running_release=verification.running_release,
        boot_id=verification.boot_id,
        cmdline=system.cmdline(),
    ):
        from liveupd.verify.fallback import fall_back  # the rare case: imported for it

        verification = await fall_back(engine, t, checkpoint, verification)
        _finish(engine, t, TransitionState.FELL_BACK, verification)
        return TransitionState.FELL_BACK
    verification = replace(verification, superseded=reason)
    _finish(engine, t, TransitionState.SUPERSEDED, verification)
    return TransitionState.SUPERSEDED


async def _new_boot_checks(
    engine: Engine,
    t: Transition,
    checkpoint: Checkpoint | None,
    problems: list[Problem],
    *,
    may_roll_back: bool,
    watchdog: Outcome,
) -> bool:
    """Devices, then the verify and restore hooks, with the watchdog armed for the jump
    fed meanwhile; what they find is added to ``problems``.  Whether a rollback follows."""
    ctx = t.ctx
    config = engine.config
    async with guarded(engine, ctx, checkpoint.watchdog if checkpoint else None, watchdog):
        if watchdog.failed is not None:
            problems.append(Problem(check=Check.WATCHDOG, message=watchdog.failed))
        bindings = checkpoint.bindings if checkpoint else ()
        problems += await check_devices(engine, bindings, config.verify.settle_timeout)
        problems += await run_phase(engine, ctx, Phase.VERIFY)
        # A watchdog still running takes the machine back to the old kernel itself.
        rolling_back = bool(problems) and may_roll_back and watchdog.failed is None
        if not rolling_back:
            # Restore service on this kernel (a rollback restores it on the previous one).
            problems += await run_phase(engine, ctx, Phase.RESTORE)
    return rolling_back


async def _verify(engine: Engine, t: Transition) -> TransitionState:
    ctx = t.ctx
    journal = ctx.journal
    system = engine.backends.system
    config = engine.config
    started = time.time()
    release, boot_id, cmdline = system.release(), system.boot_id(), system.cmdline()
    checkpoint = load_checkpoint(journal.dir)
    target = ctx.target or (checkpoint.new if checkpoint else None)
    target_release = target.release if target else None
    verification = Verification(
        started=started, running_release=release, boot_id=boot_id, target_release=target_release
    )

    if journal.state is TransitionState.STAGED:
        reason: str | None = "it was staged but never executed; the machine has rebooted since"
    else:
        reason = superseded_reason(t.id, target_release, cmdline, release)
    if reason is not None:
        return await _not_this_kexec(engine, t, checkpoint, verification, reason)

    ctx.log("verify.started", release=release, boot_id=boot_id)
    problems: list[Problem] = []
    if checkpoint is None:
        problems.append(
            Problem(
                check=Check.CHECKPOINT,
                message=f"{journal.dir}/checkpoint.json is missing or invalid: the devices "
                "cannot be checked",
            )
        )
    old_boot_id = checkpoint.old.boot_id if checkpoint else journal.record.boot_id
    problems += kernel_problems(target_release, old_boot_id, release, boot_id)
    new_boot = boot_id != old_boot_id
    no_rollback = refusal(
        config.verify.on_failure, journal, Journal.all(config.state_dir), checkpoint
    )
    watchdog = Outcome()
    rolling_back = new_boot and await _new_boot_checks(
        engine, t, checkpoint, problems, may_roll_back=no_rollback is None, watchdog=watchdog
    )
    preserve_warnings: list[str] = []
    if new_boot and (journal.dir / "preserve").is_dir():  # [preserve] units were dumped
        from liveupd.preserve.restore import check_restored

        preserve_warnings = await check_restored(ctx, cmdline)
    kdump_warnings: tuple[str, ...] = ()
    if new_boot and not rolling_back and watchdog.failed is None:  # staying on this kernel
        kdump_warning = await kdump.rearm(ctx, checkpoint)
        kdump_warnings = (kdump_warning,) if kdump_warning else ()

    now = time.time()
    figures = measure(
        read_exec_stamp(journal.dir),
        checkpoint.written if checkpoint else journal.record.created,
        system.uptime(),
        now,
    )
    rollback: RollbackResult | None = None
    if problems and config.verify.on_failure == "rollback":
        rollback = (
            RollbackResult(requested=now)
            if rolling_back
            else RollbackResult(skipped=no_rollback or "still on the old boot")
        )
    warnings = late_failures.read(config.state_dir, t.id)
    for warning in warnings:
        ctx.log("verify.late-failure", level=logging.WARNING, message=warning)
    verification = replace(
        verification,
        finished=now,
        problems=tuple(problems),
        warnings=(*warnings, *preserve_warnings, *watchdog.warnings, *kdump_warnings),
        watchdog=watchdog.note,
        downtime=figures.to_record(),
        policy=config.verify.on_failure,
        rollback=rollback,
    )
    state = TransitionState.RECOVERY_FAILED if problems else TransitionState.COMPLETED
    # Terminal, with the rollback requested, before anything is staged: never twice.
    _finish(engine, t, state, verification)
    # In the journal now: read once (lines of another transition are stale).
    remove_durably(late_failures.record_path(config.state_dir))

    if rolling_back:
        assert checkpoint is not None
        result = await roll_back(engine, t, checkpoint)
        engine.finish(t, state, verification=replace(verification, rollback=result))
    return state


async def after_watchdog_failure(engine: Engine, journal: Journal) -> TransitionState | None:
    """The pending transition ended ``recovery-failed`` because the watchdog armed for its
    jump could not be taken over, on another boot than this one: its timer reset the
    machine.  Back on the old kernel: ``fell-back``; otherwise only the pending record
    goes.  None when there is nothing to do (not that case, or still the same boot)."""
    if read_pending(engine.config.state_dir) != journal.id:
        return None
    async with verify_lock(engine.config.state_dir):
        try:
            fresh = Journal.load(journal.path, engine.backends.files)  # done meanwhile?
        except (OSError, JournalCorrupt):
            return None
        return await _after_watchdog_failure(engine, fresh)


async def _after_watchdog_failure(engine: Engine, journal: Journal) -> TransitionState | None:
    state_dir = engine.config.state_dir
    verification = journal.record.verification
    if (
        read_pending(state_dir) != journal.id
        or journal.state is not TransitionState.RECOVERY_FAILED
        or verification is None
        or not _watchdog_runs(verification)
    ):
        return None
    system = engine.backends.system
    boot_id, release = system.boot_id(), system.release()
    if boot_id == verification.boot_id:
        return None  # the reset is still to come
    t = Transition(engine.context(journal))
    checkpoint = load_checkpoint(journal.dir)
    if checkpoint is None or release != checkpoint.old.release:
        _remove_pending(engine, t.id)
        t.ctx.log("verify.pending-dropped", release=release, boot_id=boot_id)
        return None
    moved = replace(verification, running_release=release, boot_id=boot_id)
    from liveupd.verify.fallback import fall_back

    fell = await fall_back(engine, t, checkpoint, moved)
    _finish(engine, t, TransitionState.FELL_BACK, fell)
    _remove_pending(engine, t.id)
    return TransitionState.FELL_BACK
