"""The built-in flush step: sync, syncfs, freeze (root last); thaw on undo.

Order inside the step: sync(), syncfs() on every writable local filesystem,
then FIFREEZE each planned filesystem, the one holding the state directory
last.  Just before that last freeze the exec timestamp is written and the
journal and transition log start holding their writes in memory: from then
on the daemon writes nothing to a frozen filesystem.  Any failure thaws what
was frozen (most recent first) before the error goes up; the undo record,
journaled before the first freeze, thaws them all again after a cancel or a
crash (a thaw of a filesystem that is not frozen is a no-op).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
from collections.abc import Sequence

from liveupd.errors import Failed
from liveupd.storage.plan import FreezePlan, plan_freeze
from liveupd.transition.checkpoint import write_exec_stamp
from liveupd.transition.context import Fact, TransitionContext
from liveupd.transition.phases import ExecMode, Phase
from liveupd.transition.steps import LAST, MIDDLE, BuiltinStep
from liveupd.transition.undo import AnyUndo, ThawUndo

UNFREEZABLE_ERRNOS = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL)

# The freeze plan the checkpoint recorded, which the flush step then follows.
FREEZE_PLAN: Fact[FreezePlan] = Fact("storage.freeze-plan")
FROZEN: Fact[tuple[str, ...]] = Fact("storage.frozen")


def freeze_plan(ctx: TransitionContext) -> FreezePlan:
    """The freeze plan of this run (planned once, then handed on as a fact)."""
    plan = ctx.facts.get(FREEZE_PLAN)
    if plan is None:
        plan = plan_freeze(
            ctx.backends.storage.mounts(),
            ctx.config.storage.freeze,
            str(ctx.config.state_dir),
            config_file=str(ctx.config_file),
        )
        ctx.facts.set(FREEZE_PLAN, plan)
    return plan


class StorageCheckStep(BuiltinStep):
    """At stage: the configured filesystems exist (nothing is frozen or synced)."""

    kind = "storage-check"
    name = "storage-check"
    phase = Phase.CHECK
    order = MIDDLE

    async def apply(self, ctx: TransitionContext) -> None:
        storage = ctx.backends.storage
        mounts = await asyncio.to_thread(storage.mounts)
        # InvalidArgument (a configured filesystem is not mounted) refuses the stage.
        plan = plan_freeze(
            mounts,
            ctx.config.storage.freeze,
            str(ctx.config.state_dir),
            config_file=str(ctx.config_file),
        )
        ctx.log(
            "storage.planned",
            freeze=",".join(plan.freeze) or None,
            state_mount=plan.state_mount,
            skipped=_listed(plan.skipped) or None,
        )


class FlushStep(BuiltinStep):
    kind = "storage"
    name = "storage"
    phase = Phase.FLUSH
    order = LAST  # after flush hooks: nothing may write once frozen

    def prepare(self, ctx: TransitionContext) -> AnyUndo | None:
        if ctx.mode is ExecMode.SYSTEMD:
            return None  # systemd unmounts; nothing is frozen
        return ThawUndo(mountpoints=freeze_plan(ctx).freeze)

    async def apply(self, ctx: TransitionContext) -> None:
        plan = freeze_plan(ctx)
        storage = ctx.backends.storage
        await asyncio.to_thread(storage.sync)
        synced = []
        for mp in plan.sync:
            try:
                await asyncio.to_thread(storage.syncfs, mp)
                synced.append(mp)
            except OSError as e:
                # Not fatal: freezing syncs the filesystem again, and fails if it cannot.
                error = e.strerror or str(e)
                ctx.log("storage.syncfs-failed", level=logging.WARNING, mountpoint=mp, error=error)
                ctx.journal.step_update(
                    self.key, warning=f"syncfs {mp}: {error}"[:300], durable=False
                )
        ctx.log("storage.synced", mountpoints=",".join(synced) or None)
        if plan.skipped:  # one line for all: each line costs a write, ~1 ms under TCG
            ctx.log("storage.skipped", mountpoints=_listed(plan.skipped))
        if ctx.mode is ExecMode.SYSTEMD:
            return
        # An import after the freeze must not try to write its bytecode cache (it would
        # block forever on a frozen /usr); the unit sets PYTHONDONTWRITEBYTECODE too.
        sys.dont_write_bytecode = True
        frozen: list[str] = []
        try:
            for mp in plan.freeze:
                if mp == plan.state_mount:
                    # The last one: the state directory lives here.  Stamp, then stop writing.
                    write_exec_stamp(ctx)
                    ctx.log("storage.freezing-state", mountpoint=mp)
                    ctx.hold_writes()
                try:
                    await asyncio.to_thread(storage.freeze, mp)
                except OSError as e:
                    if e.errno in UNFREEZABLE_ERRNOS:
                        ctx.log(
                            "storage.skipped",
                            mountpoint=mp,
                            reason=f"cannot be frozen: {e.strerror or e}",
                        )
                        continue
                    check = ctx.on_machine(f"check that nothing else froze it (fsfreeze -u {mp})")
                    raise Failed(
                        f"freezing {mp} failed: {e.strerror or e}; everything frozen so far "
                        f"was thawed. {check[0].upper()}{check[1:]}, or leave it out of "
                        f"[storage] freeze in {ctx.config_file}"
                    ) from e
                frozen.append(mp)
                ctx.log("storage.frozen", mountpoint=mp)
            ctx.facts.set(FROZEN, tuple(frozen))
        except BaseException:
            await _thaw(ctx, list(reversed(frozen)))
            raise


def _listed(skipped: Sequence[tuple[str, str]]) -> str:
    """``/run (tmpfs cannot be frozen),/tmp (...)``: mount points with why they are skipped."""
    return ",".join(f"{mp} ({why})" for mp, why in skipped)


async def _thaw(ctx: TransitionContext, mountpoints: list[str]) -> list[str]:
    """Thaw, most recent first; writes resume only once the state filesystem is thawed."""
    failures = []
    for mp in mountpoints:
        try:
            await asyncio.to_thread(ctx.backends.storage.thaw, mp)
        except OSError as e:
            failures.append(f"{mp}: {e.strerror or e}")
            ctx.log("storage.thaw-failed", level=logging.ERROR, mountpoint=mp, error=str(e))
            continue
        ctx.log("storage.thawed", mountpoint=mp)
    if not failures:
        ctx.release_writes()
    return failures


async def undo_thaw(ctx: TransitionContext, record: ThawUndo) -> None:
    failures = await _thaw(ctx, list(reversed(record.mountpoints)))
    if failures:
        raise Failed(
            "thawing failed for "
            + "; ".join(failures)
            + "; "
            + ctx.on_machine("thaw them by hand with: fsfreeze -u MOUNTPOINT")
        )
