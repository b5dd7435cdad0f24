"""Run one group of steps: the engine's loop body, shared with post-boot verification.

1. Each step's undo record is prepared, then the group's steps are journaled
   as started, with their undo records, in one write, durable when there is an
   undo: nothing runs before its undo is on disk.
2. The steps run concurrently (a group is hooks sharing an ``NN`` prefix, or
   one built-in step).
3. Each step's result is journaled (done, without fsync; or failed).

Nothing escapes as a raw exception: a failure to prepare or to journal the
start raises ``StepFailure`` (nothing in the group ran); a step's failure, of
any kind, and a failure to record its result, come back as its ``StepOutcome``.
Only task cancellation goes up as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time

from liveupd.transition.context import TransitionContext
from liveupd.transition.events import StepFinished
from liveupd.transition.failures import LOG, StepFailure, StepOutcome, as_error, log_write_failure
from liveupd.transition.phases import Phase, StepStatus
from liveupd.transition.plan import Group
from liveupd.transition.steps import Step
from liveupd.transition.undo import AnyUndo


async def run_group(
    ctx: TransitionContext, group: Group, *, journal_undo: bool = True
) -> list[StepOutcome]:
    """Run ``group``; one StepOutcome per step, in the group's order."""
    started: list[tuple[str, Phase, AnyUndo | None]] = []
    for step in group.steps:
        try:
            undo = step.prepare(ctx) if journal_undo else None
        except Exception as e:
            raise StepFailure(
                step.key, as_error(e, f"preparing step {step.key}", transition=ctx.id)
            ) from e
        started.append((step.key, step.phase, undo))
    try:
        ctx.journal.steps_started(started)
    except Exception as e:
        keys = ", ".join(step.key for step in group.steps)
        raise StepFailure(
            group.steps[0].key,
            as_error(e, f"journaling the start of {keys}", transition=ctx.id),
        ) from e
    # Each step in its own task (even alone): whoever started the run (a D-Bus
    # Execute) gets to finish its turn, its reply, before the first step starts.
    return list(await asyncio.gather(*(_run_step(ctx, step) for step in group.steps)))


async def _run_step(ctx: TransitionContext, step: Step) -> StepOutcome:
    start = time.monotonic()
    try:
        await step.apply(ctx)
    except Exception as e:
        usec = _usec_since(start)
        error = as_error(e, f"step {step.key}", transition=ctx.id)
        if error is not e:
            ctx.log("step.crashed", level=logging.ERROR, step=step.key, error=error.message)
        try:
            ctx.journal.step_status(
                step.key,
                StepStatus.FAILED,
                durable=False,
                error=error.message,
                partial=True if error is not e else None,
            )
        except Exception as w:  # the failure is already what this outcome reports
            log_write_failure(LOG, ctx.id, f"failure of {step.key}", w)
        return StepOutcome(step.key, usec, error, applied=False)
    usec = _usec_since(start)
    try:
        # Not fsync'd: see journal.py; the next durable write carries it.
        ctx.journal.step_status(step.key, StepStatus.DONE, durable=False, usec=usec)
    except Exception as e:
        error = as_error(e, f"recording the end of step {step.key}", transition=ctx.id)
        return StepOutcome(step.key, usec, error, applied=True)
    if step.kind != "hook":
        ctx.log("step.finished", step=step.key, phase=str(step.phase), usec=usec)
        ctx.emit(StepFinished(ctx.id, step.kind, step.name, step.phase, "success", usec))
    return StepOutcome(step.key, usec, None, applied=True)


def _usec_since(start: float) -> int:
    return int((time.monotonic() - start) * 1e6)
