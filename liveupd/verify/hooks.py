"""Run the ``verify`` or ``restore`` hooks on the new kernel, with the engine's machinery.

The same hooks (discovered from the configured hook directories), the same
:class:`HookStep` (environment, timeout, process-group kill, ``on-failure``)
and the same plan (by ``NN`` prefix; a shared prefix runs concurrently) as a
transition's other phases.  Each hook is journaled as a step of the
transition, so history shows it.  The first failing group ends the phase.
"""

from __future__ import annotations

import asyncio
import time

from liveupd.errors import ConfigError, LiveUpdError
from liveupd.hooks.manifest import Hook
from liveupd.transition.context import TransitionContext
from liveupd.transition.engine import Engine
from liveupd.transition.events import PhaseChanged
from liveupd.transition.phases import Phase, StepStatus
from liveupd.transition.plan import plan
from liveupd.transition.steps import HookStep, Step
from liveupd.verify.checks import Check, Problem


async def _hooks(engine: Engine) -> tuple[list[Hook], list[Problem]]:
    try:
        return await engine.discover_hooks(), []  # off the event loop, bounded in time
    except ConfigError as e:
        return [], [Problem(Check.HOOK, f"the hooks are invalid, none was run: {e.message}")]


async def run_phase(engine: Engine, ctx: TransitionContext, phase: Phase) -> list[Problem]:
    """Run the phase's hooks in plan order; the problems (empty when all succeeded)."""
    hooks, problems = await _hooks(engine)
    if problems:
        return problems
    steps = [HookStep(h, engine.config.hooks.timeout) for h in hooks if h.phase is phase]
    groups = plan(steps, (phase,))
    if not groups:
        return []
    ctx.emit(PhaseChanged(ctx.id, phase))
    ctx.log("phase.started", phase=str(phase))
    started = time.monotonic()
    for group in groups:
        ctx.journal.steps_started([(step.key, phase, None) for step in group.steps])
        outcomes = await asyncio.gather(
            *(_timed(step, ctx) for step in group.steps), return_exceptions=True
        )
        for step, outcome in zip(group.steps, outcomes, strict=True):
            if isinstance(outcome, int):
                ctx.journal.step_status(step.key, StepStatus.DONE, usec=outcome)
                continue
            message = outcome.message if isinstance(outcome, LiveUpdError) else repr(outcome)
            ctx.journal.step_status(step.key, StepStatus.FAILED, error=message)
            problems.append(Problem(Check.HOOK, f"{phase} hook {step.name}: {message}"))
        if problems:
            break
    ctx.journal.phase_time(phase, int((time.monotonic() - started) * 1e6))
    return problems


async def _timed(step: Step, ctx: TransitionContext) -> int:
    """Run the hook; how long it took, in microseconds (as the engine records it)."""
    started = time.monotonic()
    await step.apply(ctx)
    return int((time.monotonic() - started) * 1e6)
