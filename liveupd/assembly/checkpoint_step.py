"""The checkpoint step: write the record the new kernel verifies against.

It joins what the other built-ins found (the devices step's bindings, the
storage freeze plan, the running kernel's files, the watchdog to arm for the
jump), so it sits here, above them; the
record itself is ``transition/checkpoint.py``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from liveupd.backends.base import WatchdogRecord
from liveupd.devices.steps import BINDINGS
from liveupd.devices.watchdog import blacklisted, plan_for
from liveupd.devices.watchdog_step import WATCHDOG
from liveupd.kernel.cmdline import split_cmdline
from liveupd.kernel.discovery import list_kernels
from liveupd.storage.plan import plan_freeze
from liveupd.storage.steps import FREEZE_PLAN
from liveupd.transition.checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    OldKernel,
    write_checkpoint,
    write_pending,
)
from liveupd.transition.context import TransitionContext
from liveupd.transition.phases import Phase
from liveupd.transition.steps import LAST, BuiltinStep
from liveupd.transition.undo import AnyUndo, CheckpointUndo


def old_kernel_paths(ctx: TransitionContext, release: str) -> tuple[str | None, str | None]:
    """Where the running kernel's image and initrd are (for a rollback), if found."""
    try:
        kernels = list_kernels(ctx.config, release)
    except OSError:
        return None, None
    for k in kernels:
        if k.release == release:
            return k.kernel_path, k.initrd_path
    return None, None


def hook_state_dirs(ctx: TransitionContext) -> dict[str, str]:
    hooks_dir = ctx.dir / "hooks"
    names: Sequence[str] = sorted(p.name for p in hooks_dir.iterdir()) if hooks_dir.is_dir() else []
    return {h: str(hooks_dir / h) for h in names}


def watchdog_to_arm(ctx: TransitionContext) -> WatchdogRecord | None:
    """The watchdog the jump is guarded by (the step before exec, or the shutdown helper)."""
    assert ctx.target is not None
    guard = plan_for(ctx.backends.watchdog, ctx.config, ctx.target.release)
    record = guard.record
    ctx.log("watchdog.planned", device=record.devnode if record else None, note=guard.note)
    words = split_cmdline(ctx.target.cmdline)
    if record is not None and record.module and not blacklisted(words, record.module):
        ctx.log(
            "watchdog.driver-not-kept-out",
            level=logging.WARNING,
            module=record.module,
            hint="the staged command line lets the new kernel load the driver early, which "
            "may stop the timer; stage again to add it",
        )
    return record


def crash_loaded(ctx: TransitionContext) -> bool | None:
    """Whether a crash kernel is loaded now (the new kernel's verification loads one
    again); a crash kernel is never unloaded by liveupd."""
    loaded = ctx.backends.kdump.crash_loaded()
    if loaded:
        ctx.log("kdump.loaded-before-jump")
    return loaded


class CheckpointStep(BuiltinStep):
    kind = "checkpoint"
    name = "checkpoint"
    phase = Phase.CHECKPOINT
    order = LAST  # after the hooks that save their own state

    def prepare(self, ctx: TransitionContext) -> AnyUndo | None:
        return CheckpointUndo()

    async def apply(self, ctx: TransitionContext) -> None:
        assert ctx.target is not None
        system = ctx.backends.system
        storage = ctx.backends.storage
        plan = plan_freeze(
            storage.mounts(),
            ctx.config.storage.freeze,
            str(ctx.config.state_dir),
            config_file=str(ctx.config_file),
        )
        ctx.facts.set(FREEZE_PLAN, plan)
        release = system.release()
        kernel_path, initrd_path = old_kernel_paths(ctx, release)
        watchdog = watchdog_to_arm(ctx)
        ctx.facts.set(WATCHDOG, watchdog)
        record = Checkpoint(
            id=ctx.id,
            written=time.time(),
            mode=str(ctx.mode),
            old=OldKernel(
                release=release,
                boot_id=system.boot_id(),
                cmdline=system.cmdline(),
                kernel_path=kernel_path,
                initrd_path=initrd_path,
            ),
            new=ctx.target,
            bindings=ctx.facts.get_or(BINDINGS, ()),
            freeze=plan.freeze,
            freeze_skipped=plan.skipped,
            hook_state_dirs=hook_state_dirs(ctx),
            dry_run=ctx.backends.dry_run,
            watchdog=watchdog,
            crash_loaded=crash_loaded(ctx),
        )
        write_checkpoint(ctx.dir, record)
        write_pending(ctx.config.state_dir, ctx.id)
        ctx.log(
            "checkpoint.written",
            path=str(ctx.dir / CHECKPOINT_NAME),
            bindings=len(record.bindings),
            freeze=",".join(record.freeze) or None,
            old_kernel=kernel_path,
            pid=os.getpid(),
        )
