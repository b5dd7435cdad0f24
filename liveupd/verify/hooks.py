"""Run the ``verify`` or ``restore`` hooks on the new kernel, with the engine's machinery.

The same hooks (discovered from the configured hook directories), the same
:class:`HookStep` (environment, timeout, process-group kill, ``on-failure``),
the same plan (by ``NN`` prefix; a shared prefix runs concurrently) and the
same group runner (``transition.groups.run_group``) as a transition's other
phases.  Each hook is journaled as a step of the transition, so history shows
it; there is nothing to undo.  The first failing group ends the phase.
"""

from __future__ import annotations

import time

from liveupd.errors import ConfigError
from liveupd.hooks.manifest import Hook
from liveupd.transition.context import TransitionContext
from liveupd.transition.engine import Engine
from liveupd.transition.events import PhaseChanged
from liveupd.transition.failures import StepFailure
from liveupd.transition.groups import run_group
from liveupd.transition.phases import Phase
from liveupd.transition.plan import plan
from liveupd.transition.steps import HookStep
from liveupd.verify.checks import Check, Problem


async def _hooks(engine: Engine) -> tuple[list[Hook], list[Problem]]:
    try:
        return await engine.discover_hooks(), []  # off the event loop, bounded in time
    except ConfigError as e:
        return [], [
            Problem(check=Check.HOOK, message=f"the hooks are invalid, none was run: {e.message}")
        ]


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
        try:
            outcomes = await run_group(ctx, group, journal_undo=False)
        except StepFailure as e:
            problems.append(
                Problem(
                    check=Check.HOOK,
                    message=f"{phase} hooks: {e.error.message}",
                    step=e.step.split(":", 1)[-1] if e.step else None,
                )
            )
            break
        for step, outcome in zip(group.steps, outcomes, strict=True):
            if outcome.error is not None:
                problems.append(
                    Problem(
                        check=Check.HOOK,
                        message=f"{phase} hook {step.name}: {outcome.error.message}",
                        step=step.name,
                    )
                )
        if problems:
            break
    try:
        ctx.journal.phase_time(phase, int((time.monotonic() - started) * 1e6))
    except OSError as e:
        ctx.log("journal.write-failed", what=f"end of phase {phase}", error=e.strerror or str(e))
    return problems
