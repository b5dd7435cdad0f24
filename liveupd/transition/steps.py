"""Steps of a transition: the Step interface, and the hook steps.

A step has a phase and an order inside it (a hook's ``NN`` prefix; built-in
steps have fixed orders).  Before a step with side effects starts, its undo
record (``transition/undo.py``) is journaled; rollback and crash recovery
undo by handing that record to its handler (the undo table, assembled with
the built-in steps in ``liveupd.assembly``).  The hook steps live here: a
hook is the engine's own unit of work, whatever the hook does.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import ClassVar

from liveupd.errors import Cancelled, HookFailed
from liveupd.hooks.manifest import Hook
from liveupd.hooks.runner import Outcome, ProgramResult, hook_environment, run_program
from liveupd.transition.context import TransitionContext
from liveupd.transition.events import StepFinished
from liveupd.transition.phases import Phase
from liveupd.transition.undo import AnyUndo, HookUndo

# Orders of built-in steps relative to hooks' NN prefixes (00-99).
FIRST = -1  # before every hook of the phase
MIDDLE = 50  # after hooks 00-50, before 51-99
LAST = 100  # after every hook of the phase


class Step(ABC):
    kind: ClassVar[str]  # "hook" or the built-in's name
    concurrent: ClassVar[bool] = False  # hooks sharing a prefix run together
    phase: Phase
    order: int
    name: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def prepare(self, ctx: TransitionContext) -> AnyUndo | None:
        """The undo record to journal before the step starts (None: nothing to undo)."""
        return None

    @abstractmethod
    async def apply(self, ctx: TransitionContext) -> None:
        """Do the step; raise a LiveUpdError on failure, after undoing partial work."""


class BuiltinStep(Step):
    """A built-in step: devices, storage, kernel load, checkpoint, exec."""


# ---------------------------------------------------------------- hooks ----


def hook_env(ctx: TransitionContext, hook: str, phase: Phase, action: str) -> dict[str, str]:
    state_dir = ctx.hook_state_dir(hook)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {
        "LIVEUPD_PHASE": str(phase),
        "LIVEUPD_ACTION": action,
        "LIVEUPD_TRANSITION_ID": ctx.id,
        "LIVEUPD_TARGET_RELEASE": ctx.target.release if ctx.target else "",
        "LIVEUPD_STATE_DIR": str(state_dir),
        "LIVEUPD_HOOK": hook,
        "LIVEUPD_EXEC_MODE": str(ctx.mode),
    }
    if ctx.backends.dry_run:
        env["LIVEUPD_DRY_RUN"] = "1"
    return hook_environment(env)


def log_program(
    ctx: TransitionContext, hook: str, phase: Phase, action: str, result: ProgramResult
) -> None:
    ok = result.outcome is Outcome.SUCCESS
    ctx.log(
        "hook.finished",
        level=logging.INFO if ok else logging.WARNING,
        hook=hook,
        phase=str(phase),
        action=action,
        result=str(result.outcome),
        rc=result.returncode,
        usec=result.usec,
        message=result.message,
        stdout=result.stdout or None,
        stderr=result.stderr or None,
        truncated=result.truncated or None,
    )


class HookStep(Step):
    kind = "hook"
    concurrent = True

    def __init__(self, hook: Hook, default_timeout: float) -> None:
        self.hook = hook
        self.name = hook.name
        self.phase = hook.phase
        self.order = hook.prefix
        self.timeout = hook.timeout(default_timeout)

    def prepare(self, ctx: TransitionContext) -> AnyUndo | None:
        undo = self.hook.manifest.undo
        if undo is None:
            return None
        return HookUndo(hook=self.name, phase=self.phase, argv=tuple(undo), timeout=self.timeout)

    async def apply(self, ctx: TransitionContext) -> None:
        argv = self.hook.manifest.run
        if argv is None:
            return  # a hook that only asks for devices to be unbound
        ctx.log("hook.started", hook=self.name, phase=str(self.phase), argv=argv)
        env = hook_env(ctx, self.name, self.phase, "run")
        ctx.backends.faults.check("hook-spawn")

        def started(pgid: int, leader_started: float | None) -> None:
            # Only a restarted daemon in this same boot needs these (to kill what a
            # crash left running, if it is still the same process): no fsync.
            ctx.journal.step_update(
                self.key, pgid=pgid, leader_started=leader_started, durable=False
            )

        result = await run_program(
            argv, env=env, timeout=self.timeout, cancel=ctx.cancel, on_start=started
        )
        log_program(ctx, self.name, self.phase, "run", result)
        ctx.emit(
            StepFinished(ctx.id, "hook", self.name, self.phase, str(result.outcome), result.usec)
        )
        if result.outcome is Outcome.SUCCESS:
            return
        if result.outcome is Outcome.CANCELLED:
            raise Cancelled(
                f"transition {ctx.id} was cancelled during hook {self.name} (its process "
                "group was killed); everything done so far was undone"
            )
        detail = f"hook {self.name} ({self.hook.path}) {result.message}"
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        if tail:
            detail += ": " + " | ".join(tail)
        if self.hook.manifest.on_failure == "continue":
            ctx.log("hook.failure-ignored", level=logging.WARNING, hook=self.name, reason=detail)
            return
        # Masked in the last (the admin's) hook directory of the configuration in use.
        dirs = ctx.config.hook_dirs
        mask = (dirs[-1] if dirs else self.hook.path.parent) / self.hook.path.name
        raise HookFailed(
            f"{detail}. Fix the hook or mask it (ln -s /dev/null {mask}), then try again.",
            hook=self.name,
        )


async def undo_hook(ctx: TransitionContext, record: HookUndo) -> None:
    phase = record.phase
    hook = record.hook
    env = hook_env(ctx, hook, phase, "undo")
    ctx.backends.faults.check("hook-spawn")
    result = await run_program(list(record.argv), env=env, timeout=record.timeout)
    log_program(ctx, hook, phase, "undo", result)
    ok = result.outcome is Outcome.SUCCESS
    ctx.emit(
        StepFinished(
            ctx.id, "hook", hook, phase, "undone" if ok else "undo-failed", result.usec, "undo"
        )
    )
    if not ok:
        raise HookFailed(f"undo of hook {hook} {result.message}", hook=hook)
