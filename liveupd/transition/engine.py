"""Run a transition: stage (check, load), execute (quiesce .. exec), roll back.

The engine walks the plan group by group.  Before each step it journals the
step's undo record; after it, the step's result.  A failure before ``exec``
(or a cancel) rolls back: every completed step's undo runs, most recent first,
and the transition ends ``failed`` (or ``cancelled``) naming the step that
failed, why, and what was undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence

from liveupd.backends.base import Backends
from liveupd.config import Config
from liveupd.errors import Cancelled, Failed, LiveUpdError
from liveupd.hooks.discovery import discover, effective_hooks
from liveupd.hooks.manifest import Hook
from liveupd.transition.context import StageRequest, TransitionContext
from liveupd.transition.events import (
    EventSink,
    PhaseChanged,
    StateChanged,
    StepFinished,
    TransitionFailed,
)
from liveupd.transition.journal import Journal
from liveupd.transition.phases import (
    EXECUTE_PHASES,
    STAGE_PHASES,
    ExecMode,
    Phase,
    StepStatus,
    TransitionState,
)
from liveupd.transition.plan import Group, plan, step_count
from liveupd.transition.steps import HookStep, Step, get_undo_handler

BuiltinFactory = Callable[[ExecMode, Sequence[Hook]], list[Step]]


def new_transition_id() -> str:
    """Sortable, readable, and valid as a D-Bus object path element."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "_" + secrets.token_hex(3)


def default_builtins(mode: ExecMode, hooks: Sequence[Hook]) -> list[Step]:
    from liveupd.transition.builtins import builtin_steps

    return builtin_steps(mode, hooks)


class Transition:
    """One transition as the daemon sees it while it is alive."""

    def __init__(self, ctx: TransitionContext) -> None:
        self.ctx = ctx
        self.phase: Phase | None = None
        self.progress = 0
        self.error: LiveUpdError | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.ctx.id

    @property
    def state(self) -> TransitionState:
        return self.ctx.journal.state


class Engine:
    def __init__(
        self,
        config: Config,
        backends: Backends,
        *,
        events: EventSink,
        builtins: BuiltinFactory = default_builtins,
    ) -> None:
        self.config = config
        self.backends = backends
        self.events = events
        self.builtins = builtins

    # ------------------------------------------------------------ helpers --

    def hooks(self) -> list[Hook]:
        """The effective hooks; ConfigError (nothing changed) if any is bad."""
        return effective_hooks(self.config.hook_dirs)

    async def discover_hooks(self) -> list[Hook]:
        """:meth:`hooks`, found off the event loop within a time bound."""
        return await discover(self.config.hook_dirs)

    def steps(self, mode: ExecMode, hooks: Sequence[Hook]) -> list[Step]:
        steps = self.builtins(mode, hooks)
        steps += [HookStep(h, self.config.hooks.timeout) for h in hooks]
        return steps

    def _set_state(self, t: Transition, state: TransitionState, **fields: object) -> None:
        t.ctx.journal.set_state(state, **fields)
        t.ctx.log("transition.state", state=str(state), progress=t.progress)
        self.events(StateChanged(t.id, state, t.progress))

    # ------------------------------------------------------------- stage --

    async def stage(self, request: StageRequest, transition_id: str | None = None) -> Transition:
        """Check and load a kernel.  On failure everything is undone and the error raised."""
        hooks = await self.discover_hooks()  # refuse bad hooks now, before anything is loaded
        tid = transition_id or new_transition_id()
        journal = Journal.create(
            self.config.state_dir,
            tid,
            boot_id=self.backends.system.boot_id(),
            old_release=self.backends.system.release(),
            request=request.__dict__,
            dry_run=self.backends.dry_run,
        )
        ctx = TransitionContext(
            transition_id=tid,
            config=self.config,
            backends=self.backends,
            journal=journal,
            events=self.events,
            request=request,
        )
        t = Transition(ctx)
        ctx.log("transition.stage", request=request.__dict__, dry_run=self.backends.dry_run)
        groups = plan(self.steps(ExecMode.DIRECT, hooks), STAGE_PHASES)
        await self._run(t, groups, final=TransitionState.STAGED)
        return t

    # ----------------------------------------------------------- execute --

    def start_execute(
        self, t: Transition, mode: ExecMode, hooks: Sequence[Hook] | None = None
    ) -> asyncio.Task[None]:
        """Begin Execute in the background; failures end in the transition's state.

        ``hooks``: as :meth:`discover_hooks` found them (found here when None).
        """
        if t.state is not TransitionState.STAGED:
            raise Failed(f"transition {t.id} is {t.state}, not staged")
        hooks = hooks if hooks is not None else self.hooks()
        t.ctx.mode = mode
        groups = plan(self.steps(mode, hooks), EXECUTE_PHASES)
        t.ctx.journal.update(mode=str(mode), execute_requested=time.time())
        self._set_state(t, TransitionState.RUNNING)
        t.ctx.log("transition.execute", mode=str(mode), steps=step_count(groups))
        t.task = asyncio.create_task(self._execute(t, groups))
        return t.task

    async def _execute(self, t: Transition, groups: list[Group]) -> None:
        # A failure is recorded in the transition and signalled to listeners.
        with contextlib.suppress(LiveUpdError):
            await self._run(t, groups, final=TransitionState.EXEC)

    # ------------------------------------------------------------ cancel --

    async def cancel(self, t: Transition) -> None:
        """Cancel a staged or running transition and roll it back."""
        if t.state is TransitionState.STAGED:
            t.error = Cancelled(f"transition {t.id} was cancelled; the staged kernel was unloaded")
            await self.rollback(t, t.error)
            return
        if t.state is not TransitionState.RUNNING:
            raise Failed(
                f"transition {t.id} is {t.state}; only a staged or running one can be cancelled"
            )
        if t.phase is Phase.EXEC:
            raise Failed(f"transition {t.id} has reached exec; it can no longer be cancelled")
        t.ctx.cancel.set()
        if t.task is not None:
            await asyncio.shield(t.task)

    # --------------------------------------------------------------- run --

    async def _run(self, t: Transition, groups: list[Group], *, final: TransitionState) -> None:
        ctx = t.ctx
        total = max(step_count(groups), 1)
        done = 0
        phase_started = time.monotonic()
        try:
            for group in groups:
                if ctx.cancel.is_set():
                    raise Cancelled(
                        f"transition {t.id} was cancelled before {group.phase}; "
                        "everything done so far was undone"
                    )
                if group.phase != t.phase:
                    if t.phase is not None:
                        ctx.journal.phase_time(t.phase, _usec_since(phase_started))
                    phase_started = time.monotonic()
                    t.phase = group.phase
                    ctx.log("phase.started", phase=str(group.phase))
                    self.events(PhaseChanged(t.id, group.phase))
                await self._run_group(ctx, group)
                done += len(group.steps)
                t.progress = done * 100 // total if final is TransitionState.EXEC else 0
            if t.phase is not None:
                ctx.journal.phase_time(t.phase, _usec_since(phase_started))
        except LiveUpdError as e:
            t.error = e
            await self.rollback(t, e)
            raise
        if self.backends.dry_run:
            # The simulated jump "rebooted" the simulated machine: nothing is frozen.
            ctx.release_writes()
        self._set_state(t, final)

    async def _run_group(self, ctx: TransitionContext, group: Group) -> None:
        ctx.journal.steps_started(
            [(step.key, step.phase, step.prepare(ctx)) for step in group.steps]
        )
        outcomes = await asyncio.gather(
            *(self._run_step(ctx, step) for step in group.steps), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        for err in errors:
            if not isinstance(err, LiveUpdError):
                raise err
        if errors:
            first = errors[0]
            assert isinstance(first, LiveUpdError)
            raise first

    async def _run_step(self, ctx: TransitionContext, step: Step) -> None:
        start = time.monotonic()
        try:
            await step.apply(ctx)
        except LiveUpdError as e:
            ctx.journal.step_status(step.key, StepStatus.FAILED, error=e.message)
            raise
        except Exception as e:
            ctx.log("step.crashed", level=logging.ERROR, step=step.key, error=repr(e))
            ctx.journal.step_status(step.key, StepStatus.FAILED, error=repr(e))
            raise Failed(f"step {step.key} failed unexpectedly: {e!r}") from e
        usec = _usec_since(start)
        # Not fsync'd: see transition/journal.py; the next durable write carries it.
        ctx.journal.step_status(step.key, StepStatus.DONE, durable=False, usec=usec)
        if step.kind != "hook":
            ctx.log("step.finished", step=step.key, phase=str(step.phase), usec=usec)
            self.events(StepFinished(ctx.id, step.kind, step.name, step.phase, "success", usec))

    # ---------------------------------------------------------- rollback --

    async def rollback(
        self, t: Transition, error: LiveUpdError, *, after_crash: bool = False
    ) -> None:
        """Undo what the journal shows as done, then end the transition failed/cancelled."""
        ctx = t.ctx
        failed_step = next(
            (s["key"] for s in reversed(ctx.journal.steps()) if s["status"] == StepStatus.FAILED),
            None,
        )
        ctx.log("rollback.started", level=logging.WARNING, reason=error.message, step=failed_step)
        t.phase = Phase.ROLLBACK
        self.events(PhaseChanged(t.id, Phase.ROLLBACK))
        undone, undo_failures = await undo_journal(ctx, after_crash=after_crash)
        # Held writes are released by the thaw undo once every filesystem thawed;
        # releasing them here after a failed thaw would block forever on a frozen one.
        if undo_failures:
            state = TransitionState.ROLLBACK_FAILED
        elif isinstance(error, Cancelled):
            state = TransitionState.CANCELLED
        elif after_crash:
            state = TransitionState.ABORTED
        else:
            state = TransitionState.FAILED
        self._set_state(
            t,
            state,
            error={
                "kind": error.kind,
                "dbus_name": error.dbus_name,
                "message": error.message,
                "step": failed_step,
            },
            undone=undone,
            undo_failures=undo_failures,
        )
        message = error.message
        if undo_failures:
            message += " Rolling back also failed: " + "; ".join(undo_failures)
        self.events(TransitionFailed(t.id, error.dbus_name, message))


async def undo_journal(ctx: TransitionContext, *, after_crash: bool) -> tuple[list[str], list[str]]:
    """Run the undo of every step the journal says needs it; (undone, failures)."""
    undone: list[str] = []
    failures: list[str] = []
    for entry in ctx.journal.to_undo(after_crash=after_crash):
        key = entry["key"]
        record = entry["undo"]
        ctx.journal.step_status(key, StepStatus.UNDOING)
        try:
            await get_undo_handler(record["kind"])(ctx, record)
        except Exception as e:  # keep undoing the rest; report every failure
            msg = e.message if isinstance(e, LiveUpdError) else repr(e)
            ctx.log("undo.failed", level=logging.ERROR, step=key, error=msg)
            ctx.journal.step_status(key, StepStatus.UNDO_FAILED, undo_error=msg)
            failures.append(f"{key}: {msg}")
            continue
        ctx.journal.step_status(key, StepStatus.UNDONE)
        ctx.log("undo.finished", step=key)
        undone.append(key)
    return undone, failures


def _usec_since(start: float) -> int:
    return int((time.monotonic() - start) * 1e6)
