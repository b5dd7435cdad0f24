"""The built-in flush step: sync, syncfs, freeze (root last); thaw on undo."""

from __future__ import annotations

import asyncio
import errno
import logging

from liveupd.errors import Failed
from liveupd.storage.plan import FreezePlan, plan_freeze
from liveupd.transition.checkpoint import write_exec_stamp
from liveupd.transition.context import TransitionContext
from liveupd.transition.phases import ExecMode, Phase
from liveupd.transition.steps import LAST, BuiltinStep, UndoRecord, undo_handler

UNFREEZABLE_ERRNOS = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL)


def _plan(ctx: TransitionContext) -> FreezePlan:
    plan = ctx.facts.get("freeze_plan")
    if isinstance(plan, FreezePlan):
        return plan
    plan = plan_freeze(
        ctx.backends.storage.mounts(), ctx.config.storage.freeze, str(ctx.config.state_dir)
    )
    ctx.facts["freeze_plan"] = plan
    return plan


class FlushStep(BuiltinStep):
    kind = "storage"
    name = "storage"
    phase = Phase.FLUSH
    order = LAST  # after flush hooks: nothing may write once frozen

    def prepare(self, ctx: TransitionContext) -> UndoRecord | None:
        if ctx.mode is ExecMode.SYSTEMD:
            return None  # systemd unmounts; nothing is frozen
        plan = _plan(ctx)
        return {"kind": "thaw", "mountpoints": list(plan.freeze)}

    async def apply(self, ctx: TransitionContext) -> None:
        plan = _plan(ctx)
        storage = ctx.backends.storage
        await asyncio.to_thread(storage.sync)
        for mp in plan.sync:
            try:
                await asyncio.to_thread(storage.syncfs, mp)
            except OSError as e:
                ctx.log(
                    "storage.syncfs-failed", level=logging.WARNING, mountpoint=mp, error=e.strerror
                )
        for mp, why in plan.skipped:
            ctx.log("storage.skipped", mountpoint=mp, reason=why)
        if ctx.mode is ExecMode.SYSTEMD:
            return
        last = plan.freeze[-1] if plan.freeze else None
        frozen: list[str] = []
        try:
            for mp in plan.freeze:
                if mp == last:
                    # The state directory lives here or on a filesystem not frozen.
                    write_exec_stamp(ctx)
                    ctx.log("storage.freezing-last", mountpoint=mp)
                    ctx.hold_writes()
                try:
                    await asyncio.to_thread(storage.freeze, mp)
                except OSError as e:
                    if e.errno in UNFREEZABLE_ERRNOS:
                        ctx.log(
                            "storage.skipped", mountpoint=mp, reason=f"cannot freeze: {e.strerror}"
                        )
                        continue
                    raise Failed(
                        f"freezing {mp} failed: {e.strerror}; everything frozen so far was thawed"
                    ) from e
                frozen.append(mp)
            ctx.facts["frozen"] = frozen
        except BaseException:
            await _thaw(ctx, list(reversed(frozen)))
            raise


async def _thaw(ctx: TransitionContext, mountpoints: list[str]) -> list[str]:
    failures = []
    for mp in mountpoints:
        try:
            await asyncio.to_thread(ctx.backends.storage.thaw, mp)
        except OSError as e:
            failures.append(f"{mp}: {e.strerror}")
    ctx.release_writes()
    for mp in mountpoints:
        ctx.log("storage.thawed", mountpoint=mp)
    return failures


@undo_handler("thaw")
async def undo_thaw(ctx: TransitionContext, record: UndoRecord) -> None:
    failures = await _thaw(ctx, list(reversed(record["mountpoints"])))
    if failures:
        raise Failed("thawing failed for " + "; ".join(failures) + "; run fsfreeze -u on them")
