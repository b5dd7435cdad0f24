"""On the new kernel: load a crash kernel again if the old kernel had one (kdump survives).

A kexec replaces the kernel and its crash kernel with it; liveupd never
unloads a crash kernel on the old side (its unload is the normal image's
only), and the checkpoint records whether one was loaded
(``Checkpoint.crash_loaded``).  After the new kernel's checks, when it stays
on this kernel: if one was loaded before the jump and
``/sys/kernel/kexec_crash_loaded`` reads 0 here, the distribution's loader
runs (``kdump-config load`` of kdump-tools, in a worker thread, within
:data:`LOAD_TIMEOUT`); when there is none, it fails, or the crash kernel is
still not loaded, verification records the warning "kdump not re-armed" with
why.  The transition still completes: a missing crash kernel is a lost
diagnosis tool, not a broken machine.

:func:`decide` and :func:`after_load` are the decisions, pure; :func:`rearm`
does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from liveupd.transition.checkpoint import Checkpoint
from liveupd.transition.context import TransitionContext

LOAD_TIMEOUT = 90.0  # seconds the loader may take (it may build the crash kernel's initrd)
PREFIX = "kdump not re-armed: "


@dataclass(frozen=True)
class Decision:
    load: bool  # run the loader
    warning: str = ""  # for the verification report ("" for none)
    note: str = ""  # for the log


def decide(
    before: bool | None, now: bool | None, reserved: int | None, loader: str | None
) -> Decision:
    """What to do about the crash kernel on the new kernel.

    ``before``: loaded on the old kernel (the checkpoint); ``now``: loaded here
    (None: this kernel has no crash kexec); ``reserved``: bytes ``crashkernel=``
    reserved here (None: unknown); ``loader``: the loader program, if installed.
    """
    if before is not True:
        return Decision(False, note="no crash kernel was loaded before the jump")
    if now is True:
        return Decision(False, note="a crash kernel is loaded already")
    if now is None:
        return Decision(
            False,
            PREFIX + "this kernel has no /sys/kernel/kexec_crash_loaded (it was built "
            "without crash kexec support), so no crash kernel can be loaded",
        )
    if reserved == 0:
        return Decision(
            False,
            PREFIX + "no memory is reserved for a crash kernel on this kernel "
            "(/sys/kernel/kexec_crash_size reads 0): its command line lacks crashkernel=; "
            "stage with it (liveupctl stage --append crashkernel=...)",
        )
    if loader is None:
        return Decision(
            False,
            PREFIX + "the old kernel had a crash kernel loaded, and no loader is installed "
            "here (kdump-tools' kdump-config); load one by hand (kexec -p)",
        )
    return Decision(True, note=f"running {loader} load")


def after_load(error: str, now: bool | None) -> str:
    """The warning after the loader ran ("" when a crash kernel is loaded now)."""
    if error:
        return PREFIX + error
    if now is not True:
        return (
            PREFIX + "kdump-config load succeeded, but /sys/kernel/kexec_crash_loaded still "
            "does not read 1; see 'kdump-config status'"
        )
    return ""


async def rearm(ctx: TransitionContext, checkpoint: Checkpoint | None) -> str:
    """Load the crash kernel again if it was loaded before the jump; a warning when it
    could not be ("" when it is loaded, or none was)."""
    kdump = ctx.backends.kdump
    before = checkpoint.crash_loaded if checkpoint is not None else None
    if before is not True:
        return ""
    now, reserved, loader = await asyncio.to_thread(
        lambda: (kdump.crash_loaded(), kdump.crash_size(), kdump.loader())
    )
    decision = decide(before, now, reserved, loader)
    if not decision.load:
        if decision.warning:
            ctx.log("kdump.not-rearmed", level=logging.WARNING, why=decision.warning)
        else:
            ctx.log("kdump.loaded", note=decision.note)
        return decision.warning
    ctx.log("kdump.loading", loader=loader, timeout_s=LOAD_TIMEOUT)
    error = await asyncio.to_thread(kdump.load, LOAD_TIMEOUT)
    warning = after_load(error, await asyncio.to_thread(kdump.crash_loaded))
    if warning:
        ctx.log("kdump.not-rearmed", level=logging.WARNING, why=warning)
    else:
        ctx.log("kdump.rearmed", loader=loader)
    return warning
