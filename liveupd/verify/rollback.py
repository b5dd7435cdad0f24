"""``verify.on-failure = "rollback"``: go back to the previous kernel, at most once.

A failed verification stages the kernel the transition left (its image,
initrd and old command line, from the checkpoint) and runs a transition back
to it in the original transition's exec mode.  The new transition's journal
carries ``rollback_of`` = the original id; the original's verification
records the rollback.  A rollback is never rolled back, and an original
transition is rolled back once at most, whatever crashes in between: the
original is marked (terminal, ``rollback`` requested) before anything is
staged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from liveupd.errors import LiveUpdError
from liveupd.transition.checkpoint import Checkpoint
from liveupd.transition.context import StageRequest
from liveupd.transition.engine import Engine, Transition
from liveupd.transition.journal import Journal
from liveupd.transition.phases import ExecMode


def refusal(
    policy: str, journal: Journal, journals: Iterable[Journal], checkpoint: Checkpoint | None
) -> str | None:
    """Why there is no rollback for this failed transition; None when there is one."""
    if policy != "rollback":
        return f'verify.on-failure is "{policy}"'
    original = journal.data.get("rollback_of")
    if original:
        return f"{journal.id} is itself the rollback of {original}; a rollback is never rolled back"
    if journal.data.get("rollback"):
        return f"a rollback of {journal.id} was already requested"
    for other in journals:
        if other.id != journal.id and other.data.get("rollback_of") == journal.id:
            return f"{journal.id} was already rolled back by {other.id}"
    if checkpoint is None:
        return "the checkpoint is missing, so the previous kernel is unknown"
    if not checkpoint.old.kernel_path:
        return (
            f"the previous kernel {checkpoint.old.release} was not found in kernel.allowed-dirs "
            "when the transition ran"
        )
    return None


async def roll_back(engine: Engine, t: Transition, checkpoint: Checkpoint) -> dict[str, Any]:
    """Stage the previous kernel and run the transition back to it; what happened."""
    ctx = t.ctx
    old = checkpoint.old
    assert old.kernel_path is not None
    ctx.journal.update(rollback={"requested": time.time()})  # before anything: never twice
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
        result: dict[str, Any] = {"error": f"staging the previous kernel failed: {e.message}"}
        ctx.journal.update(rollback={"requested": time.time(), **result})
        ctx.log("verify.rollback-failed", level=logging.ERROR, error=result["error"])
        return result
    back.ctx.journal.update(rollback_of=t.id)
    mode = ExecMode(checkpoint.mode)
    try:
        task = engine.start_execute(back, mode)
    except LiveUpdError as e:
        result = {"transition": back.id, "error": f"starting the rollback failed: {e.message}"}
        ctx.journal.update(rollback=result)
        ctx.log("verify.rollback-failed", level=logging.ERROR, error=result["error"])
        return result
    # Recorded before the jump, which does not come back when it works.
    ctx.journal.update(rollback={"transition": back.id, "mode": str(mode)})
    ctx.log("verify.rollback-started", rollback=back.id, mode=str(mode))
    await task
    result = {"transition": back.id, "mode": str(mode), "state": str(back.state)}
    if back.error is not None:
        result["error"] = back.error.message
    ctx.journal.update(rollback=result)
    return result
