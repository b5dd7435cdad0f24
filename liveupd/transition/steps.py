"""Steps of a transition, and the undo actions that reverse them.

A step has a phase and an order inside it (a hook's ``NN`` prefix; built-in
steps have fixed orders).  Before a step with side effects starts, its undo
record is journaled: a JSON object naming an undo handler (``kind``) and the
data it needs.  Rollback and crash recovery both undo by calling the handler
on the journaled record, so what a crashed daemon undoes is exactly what a
live one would have undone.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from liveupd.errors import Cancelled, HookFailed
from liveupd.hooks.manifest import Hook
from liveupd.hooks.runner import Outcome, ProgramResult, hook_environment, run_program
from liveupd.transition.context import TransitionContext
from liveupd.transition.events import StepFinished
from liveupd.transition.phases import Phase

UndoRecord = dict[str, Any]
UndoHandler = Callable[[TransitionContext, UndoRecord], Awaitable[None]]
_UNDO_HANDLERS: dict[str, UndoHandler] = {}
_Handler = TypeVar("_Handler", bound=UndoHandler)

# Orders of built-in steps relative to hooks' NN prefixes (00-99).
FIRST = -1  # before every hook of the phase
MIDDLE = 50  # after hooks 00-50, before 51-99
LAST = 100  # after every hook of the phase


def undo_handler(kind: str) -> Callable[[_Handler], _Handler]:
    """Register the function that undoes records of ``kind``."""

    def register(fn: _Handler) -> _Handler:
        if kind in _UNDO_HANDLERS:
            raise ValueError(f"undo handler {kind!r} registered twice")
        _UNDO_HANDLERS[kind] = fn
        return fn

    return register


def get_undo_handler(kind: str) -> UndoHandler:
    if kind not in _UNDO_HANDLERS:
        # The built-in steps register their handlers when imported; a daemon
        # recovering after a crash may not have imported them yet.
        import liveupd.transition.builtins  # noqa: F401
    try:
        return _UNDO_HANDLERS[kind]
    except KeyError:
        raise KeyError(f"no undo handler for {kind!r}") from None


class Step(ABC):
    kind: ClassVar[str]  # "hook" or the built-in's name
    concurrent: ClassVar[bool] = False  # hooks sharing a prefix run together
    phase: Phase
    order: int
    name: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def prepare(self, ctx: TransitionContext) -> UndoRecord | None:
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

    def prepare(self, ctx: TransitionContext) -> UndoRecord | None:
        undo = self.hook.manifest.undo
        if undo is None:
            return None
        return {
            "kind": "hook",
            "hook": self.name,
            "phase": str(self.phase),
            "argv": list(undo),
            "timeout": self.timeout,
        }

    async def apply(self, ctx: TransitionContext) -> None:
        argv = self.hook.manifest.run
        if argv is None:
            return  # a hook that only asks for devices to be unbound
        ctx.log("hook.started", hook=self.name, phase=str(self.phase), argv=argv)
        result = await run_program(
            argv,
            env=hook_env(ctx, self.name, self.phase, "run"),
            timeout=self.timeout,
            cancel=ctx.cancel,
            # Only a restarted daemon in this same boot needs the pgid (to kill
            # what a crash left running): it need not survive a power loss.
            on_start=lambda pgid: ctx.journal.step_update(self.key, pgid=pgid, durable=False),
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
        raise HookFailed(
            f"{detail}. Fix the hook or mask it (ln -s /dev/null /etc/liveupd/hooks.d/"
            f"{self.hook.path.name}), then try again.",
            hook=self.name,
        )


@undo_handler("hook")
async def undo_hook(ctx: TransitionContext, record: UndoRecord) -> None:
    phase = Phase(record["phase"])
    hook = record["hook"]
    result = await run_program(
        list(record["argv"]),
        env=hook_env(ctx, hook, phase, "undo"),
        timeout=float(record["timeout"]),
    )
    log_program(ctx, hook, phase, "undo", result)
    ok = result.outcome is Outcome.SUCCESS
    ctx.emit(
        StepFinished(
            ctx.id, "hook", hook, phase, "undone" if ok else "undo-failed", result.usec, "undo"
        )
    )
    if not ok:
        raise HookFailed(f"undo of hook {hook} {result.message}", hook=hook)
