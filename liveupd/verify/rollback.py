"""``verify.on-failure = "rollback"``: go back to the previous kernel, at most once.

A failed verification stages the kernel the transition left (its image,
initrd and old command line, from the checkpoint) and runs a transition back
to it in the original transition's exec mode.  The new transition's journal
carries ``rollback_of`` = the original id; the original's verification
records the rollback (``verification.rollback``, the one place).  A rollback
is never rolled back, and an original transition is rolled back once at
most, whatever crashes in between: the original is marked (terminal,
rollback requested) before anything is staged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace

from liveupd.errors import LiveUpdError
from liveupd.transition.checkpoint import Checkpoint
from liveupd.transition.context import StageRequest
from liveupd.transition.engine import Engine, Transition
from liveupd.transition.journal import Journal
from liveupd.transition.phases import ExecMode
from liveupd.transition.records import RollbackResult


def refusal(
    policy: str, journal: Journal, journals: Iterable[Journal], checkpoint: Checkpoint | None
) -> str | None:
    """Why there is no rollback for this failed transition; None when there is one."""
    if policy != "rollback":
        return f'verify.on-failure is "{policy}"'
    original = journal.record.rollback_of
    if original:
        return f"{journal.id} is itself the rollback of {original}; a rollback is never rolled back"
    done = journal.record.verification.rollback if journal.record.verification else None
    if done is not None and (done.requested is not None or done.transition is not None):
        return f"a rollback of {journal.id} was already requested"
    for other in journals:
        if other.id != journal.id and other.record.rollback_of == journal.id:
            return f"{journal.id} was already rolled back by {other.id}"
    if checkpoint is None:
        return "the checkpoint is missing, so the previous kernel is unknown"
    if not checkpoint.old.kernel_path:
        return (
            f"the previous kernel {checkpoint.old.release} was not found in kernel.allowed-dirs "
            "when the transition ran"
        )
    return None


async def roll_back(engine: Engine, t: Transition, checkpoint: Checkpoint) -> RollbackResult:
    """Stage the previous kernel and run the transition back to it; what happened.

    The caller has already recorded the rollback as requested.
    """
    ctx = t.ctx
    old = checkpoint.old
    assert old.kernel_path is not None
    request = StageRequest(
        kernel=old.kernel_path, initrd=old.initrd_path or "", cmdline=old.cmdline
    )
    ctx.log(
        "verify.rollback-staging",
        level=logging.WARNING,
        release=old.release,
        kernel=old.kernel_path,
        cmdline=old.cmdline,
    )
    try:
        back = await engine.stage(request)
    except LiveUpdError as e:
        error = f"staging the previous kernel failed: {e.message}"
        ctx.log("verify.rollback-failed", level=logging.ERROR, error=error)
        return RollbackResult(requested=_requested(t), error=error)
    mode = ExecMode(checkpoint.mode)
    try:
        back.ctx.journal.update(rollback_of=t.id)
        task = engine.start_execute(back, mode)
    except (LiveUpdError, OSError) as e:
        message = e.message if isinstance(e, LiveUpdError) else (e.strerror or str(e))
        error = f"starting the rollback failed: {message}"
        ctx.log("verify.rollback-failed", level=logging.ERROR, error=error)
        return RollbackResult(requested=_requested(t), transition=back.id, error=error)
    # Recorded before the jump, which does not come back when it works.
    verification = ctx.journal.record.verification
    if verification is not None:
        running = RollbackResult(transition=back.id, mode=mode)
        engine.finish(t, t.state, verification=replace(verification, rollback=running))
    ctx.log("verify.rollback-started", rollback=back.id, mode=str(mode))
    await task
    return RollbackResult(
        transition=back.id,
        mode=mode,
        state=back.state,
        error=back.error.message if back.error is not None else None,
    )


def _requested(t: Transition) -> float | None:
    verification = t.ctx.journal.record.verification
    return verification.rollback.requested if verification and verification.rollback else None
