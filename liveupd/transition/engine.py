"""Run a transition: stage (check, load), execute (quiesce .. exec), roll back.

The engine walks the plan group by group (``groups.run_group``): each group's
undo records are journaled before any of its steps starts, each result after
it ends.  A failure of any kind before ``exec`` (a step's error, any other
exception a step raises, a journal write that fails, a hook that cannot be
spawned, the task being cancelled) or a cancel rolls back: every completed
step's undo runs, most recent first (a failed undo is tried once more, after
the others), and the transition ends ``failed`` (or ``cancelled``, or
``rollback-failed`` if an undo failed twice) naming the step that failed, why,
and what was undone.  The rollback itself never gives up half-way: a journal
write that fails during it is logged and the undoing goes on, so the
transition always reaches a final state in memory and its owner is never left
busy.

The engine knows no built-in step and no undo handler by itself: both are
handed in (``builtins``, ``undo``) by ``liveupd.assembly``.

Decisions on a transition (staged -> running in ``start_execute``, staged or
running -> cancelling in ``begin_cancel``) are taken synchronously, before
the first ``await``, so that no other call can interleave between the check
and the change.
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
from liveupd.errors import Cancelled, Failed, LiveUpdError, NotStaged
from liveupd.hooks.discovery import discover, effective_hooks
from liveupd.hooks.manifest import Hook
from liveupd.transition.context import StageRequest, TransitionContext
from liveupd.transition.events import (
    EventSink,
    PhaseChanged,
    StateChanged,
    TransitionFailed,
)
from liveupd.transition.failures import LOG, StepFailure, as_error, describe, log_write_failure
from liveupd.transition.groups import run_group
from liveupd.transition.journal import Journal, transitions_dir
from liveupd.transition.phases import (
    EXECUTE_PHASES,
    STAGE_PHASES,
    ExecMode,
    Phase,
    StepStatus,
    TransitionState,
)
from liveupd.transition.plan import Group, plan, step_count
from liveupd.transition.records import Failure
from liveupd.transition.rollback import UndoTable, undo_journal
from liveupd.transition.steps import HookStep, Step

BuiltinFactory = Callable[[ExecMode, Sequence[Hook]], list[Step]]


def new_transition_id() -> str:
    """Sortable, readable, and valid as a D-Bus object path element."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "_" + secrets.token_hex(3)


class Transition:
    """One transition as the daemon sees it while it is alive."""

    def __init__(self, ctx: TransitionContext) -> None:
        self.ctx = ctx
        self.phase: Phase | None = None
        self.progress = 0
        self.error: LiveUpdError | None = None
        self.task: asyncio.Task[None] | None = None
        # Set once a cancel was decided: the one rollback every Cancel waits for.
        self.cancelling: asyncio.Future[None] | None = None

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
        builtins: BuiltinFactory,
        undo: UndoTable,
    ) -> None:
        self.config = config
        self.backends = backends
        self.events = events
        self.builtins = builtins
        self.undo = undo

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

    def context(self, journal: Journal) -> TransitionContext:
        """A context for a transition known from its journal (recovery, verification)."""
        record = journal.record
        return TransitionContext(
            transition_id=journal.id,
            config=self.config,
            backends=self.backends,
            journal=journal,
            events=self.events,
            request=record.request,
            target=record.target,
            mode=record.mode or ExecMode.DIRECT,
        )

    def announce(self, t: Transition, state: TransitionState) -> None:
        """Log and signal the transition's (new) state."""
        t.ctx.log("transition.state", state=str(state), progress=t.progress)
        self.events(StateChanged(t.id, state, t.progress))

    def finish(self, t: Transition, state: TransitionState, **fields: object) -> None:
        """Record a final state: in memory always; on disk if at all possible."""
        journal = t.ctx.journal
        try:
            journal.set_state(state, **fields)
        except Exception as e:
            log_write_failure(LOG, t.id, f"final state {state}", e)
            try:
                journal.flush()  # one more try, rewriting the whole journal
            except Exception as again:
                t.ctx.log(
                    "journal.unwritable",
                    level=logging.ERROR,
                    state=str(state),
                    error=describe(again),
                    hint="the transition ended; its journal on disk is behind",
                )
        self.announce(t, state)

    # ------------------------------------------------------------- stage --

    async def stage(self, request: StageRequest, transition_id: str | None = None) -> Transition:
        """Check and load a kernel.  On failure everything is undone and the error raised."""
        hooks = await self.discover_hooks()  # refuse bad hooks now, before anything is loaded
        tid = transition_id or new_transition_id()
        try:
            journal = Journal.create(
                self.config.state_dir,
                tid,
                files=self.backends.files,
                boot_id=self.backends.system.boot_id(),
                old_release=self.backends.system.release(),
                request=request,
                dry_run=self.backends.dry_run,
            )
        except OSError as e:
            with contextlib.suppress(OSError):  # leave no empty transition behind
                (transitions_dir(self.config.state_dir) / tid).rmdir()
            raise Failed(
                f"cannot create the journal of a new transition in {self.config.state_dir}: "
                f"{describe(e)}; nothing was staged. Free space there or fix it, then retry"
            ) from e
        ctx = TransitionContext(
            transition_id=tid,
            config=self.config,
            backends=self.backends,
            journal=journal,
            events=self.events,
            request=request,
        )
        t = Transition(ctx)
        ctx.log("transition.stage", request=request.to_json(), dry_run=self.backends.dry_run)
        groups = plan(self.steps(ExecMode.DIRECT, hooks), STAGE_PHASES)
        await self._run(t, groups, final=TransitionState.STAGED)
        return t

    # ----------------------------------------------------------- execute --

    def start_execute(
        self,
        t: Transition,
        mode: ExecMode,
        hooks: Sequence[Hook] | None = None,
        *,
        caller_pid: int | None = None,
    ) -> asyncio.Task[None]:
        """Begin Execute in the background; failures end in the transition's state.

        Synchronous up to the decision: the transition is ``running`` (in memory)
        when this returns, and a Cancel already under way refuses it.  ``hooks``:
        as :meth:`discover_hooks` found them (found here when None).  ``caller_pid``:
        the process that asked (its login session is ended last), if known.
        """
        if t.cancelling is not None:
            raise NotStaged(
                f"transition {t.id} is being cancelled; stage a kernel again (liveupctl stage)"
            )
        if t.state is not TransitionState.STAGED:
            raise Failed(f"transition {t.id} is {t.state}, not staged")
        hooks = hooks if hooks is not None else self.hooks()
        t.ctx.mode = mode
        t.ctx.caller_pid = caller_pid
        groups = plan(self.steps(mode, hooks), EXECUTE_PHASES)
        start_error: LiveUpdError | None = None
        try:
            t.ctx.journal.set_state(
                TransitionState.RUNNING, mode=mode, execute_requested=time.time()
            )
        except Exception as e:  # running in memory: the run rolls back at once
            start_error = as_error(e, f"journaling the start of transition {t.id}")
        self.announce(t, TransitionState.RUNNING)
        t.ctx.log("transition.execute", mode=str(mode), steps=step_count(groups))
        t.task = asyncio.create_task(self._execute(t, groups, start_error))
        return t.task

    async def _execute(
        self, t: Transition, groups: list[Group], start_error: LiveUpdError | None
    ) -> None:
        try:
            await self._run(t, groups, final=TransitionState.EXEC, start_error=start_error)
        except LiveUpdError:
            pass  # recorded in the transition and signalled to listeners
        finally:
            if t.state is TransitionState.RUNNING:
                self._stuck(t)

    def _stuck(self, t: Transition) -> None:
        """A run that ended without a final state is a bug: end it, never leave it running."""
        error = Failed(
            f"transition {t.id} stopped without finishing its rollback (a bug in liveupd); "
            "check devices, filesystems and hooks by hand, see 'journalctl -u liveupd'"
        )
        t.error = error
        failure = Failure(kind=error.kind, dbus_name=error.dbus_name, message=error.message)
        self.finish(t, TransitionState.ROLLBACK_FAILED, error=failure)
        self.events(TransitionFailed(t.id, error.dbus_name, error.message))

    # ------------------------------------------------------------ cancel --

    def begin_cancel(self, t: Transition) -> asyncio.Future[None]:
        """Decide to cancel (synchronously); the rollback every caller waits for.

        A second Cancel gets the same rollback; a Cancel of a transition that is
        neither staged nor running is NotStaged, one past exec is Failed.
        """
        if t.cancelling is not None:
            return t.cancelling
        if t.state is TransitionState.STAGED:
            t.error = Cancelled(f"transition {t.id} was cancelled; the staged kernel was unloaded")
            t.cancelling = asyncio.ensure_future(self._cancel_staged(t, t.error))
        elif t.state is TransitionState.RUNNING and t.task is not None:
            if t.phase is Phase.EXEC:
                raise Failed(f"transition {t.id} has reached exec; it can no longer be cancelled")
            t.ctx.cancel.set()
            t.cancelling = t.task
        else:
            raise NotStaged(
                f"transition {t.id} is {t.state}; only a staged or running one can be cancelled"
            )
        return t.cancelling

    async def cancel(self, t: Transition) -> None:
        """Cancel a staged or running transition and wait for its rollback."""
        await asyncio.shield(self.begin_cancel(t))

    async def _cancel_staged(self, t: Transition, error: LiveUpdError) -> None:
        try:
            await self.rollback(t, error)
        finally:
            if not t.state.terminal:
                self._stuck(t)

    # --------------------------------------------------------------- run --

    async def _run(
        self,
        t: Transition,
        groups: list[Group],
        *,
        final: TransitionState,
        start_error: LiveUpdError | None = None,
    ) -> None:
        ctx = t.ctx
        total = max(step_count(groups), 1)
        done = 0
        phase_started = time.monotonic()
        try:
            if start_error is not None:
                raise StepFailure(None, start_error)
            for group in groups:
                if ctx.cancel.is_set():
                    raise Cancelled(
                        f"transition {t.id} was cancelled before {group.phase}; "
                        "everything done so far was undone"
                    )
                if group.phase != t.phase:
                    if t.phase is not None:
                        self._phase_time(t, phase_started)
                    phase_started = time.monotonic()
                    t.phase = group.phase
                    ctx.log("phase.started", phase=str(group.phase))
                    self.events(PhaseChanged(t.id, group.phase))
                outcomes = await run_group(ctx, group)
                failed = [o for o in outcomes if o.error is not None]
                if failed and not (group.phase is Phase.EXEC and all(o.applied for o in outcomes)):
                    # A step's own failure comes before a failure to record a success.
                    first = next((o for o in failed if not o.applied), failed[0])
                    assert first.error is not None
                    raise StepFailure(first.key, first.error)
                for o in failed:  # the jump was made: nothing can be undone any more
                    assert o.error is not None
                    ctx.log("exec.record-failed", level=logging.ERROR, error=o.error.message)
                done += len(group.steps)
                t.progress = done * 100 // total if final is TransitionState.EXEC else 0
            if t.phase is not None:
                self._phase_time(t, phase_started)
        except BaseException as e:
            step, error = self._failure_of(t, e)
            t.error = error
            await self.rollback(t, error, step=step)
            if isinstance(e, asyncio.CancelledError):
                raise
            raise error from e
        if self.backends.dry_run:
            # The simulated jump "rebooted" the simulated machine: nothing is frozen.
            ctx.release_writes()
        try:
            ctx.journal.set_state(final)
        except Exception as e:
            if final is not TransitionState.EXEC:
                error = as_error(e, f"journaling that transition {t.id} is {final}")
                t.error = error
                await self.rollback(t, error)
                raise error from e
            # Past the jump nothing is undone: the state is exec (in memory), and said so.
            log_write_failure(LOG, t.id, f"state {final} (after the jump)", e)
            with contextlib.suppress(Exception):
                ctx.journal.flush()
        self.announce(t, final)

    def _phase_time(self, t: Transition, started: float) -> None:
        assert t.phase is not None
        try:
            t.ctx.journal.phase_time(t.phase, int((time.monotonic() - started) * 1e6))
        except Exception as e:
            raise StepFailure(None, as_error(e, f"journaling the end of phase {t.phase}")) from e

    def _failure_of(self, t: Transition, e: BaseException) -> tuple[str | None, LiveUpdError]:
        if isinstance(e, StepFailure):
            return e.step, e.error
        if isinstance(e, asyncio.CancelledError):
            return None, Cancelled(
                f"transition {t.id} was stopped (liveupd is shutting down); everything done "
                "so far was undone"
            )
        return None, as_error(e, f"transition {t.id}", transition=t.id)

    # ---------------------------------------------------------- rollback --

    async def rollback(
        self,
        t: Transition,
        error: LiveUpdError,
        *,
        step: str | None = None,
        after_crash: bool = False,
    ) -> None:
        """Undo what the journal shows as done, then end the transition failed/cancelled."""
        ctx = t.ctx
        failed_step = step or next(
            (s.key for s in reversed(ctx.journal.steps()) if s.status is StepStatus.FAILED),
            None,
        )
        ctx.log("rollback.started", level=logging.WARNING, reason=error.message, step=failed_step)
        t.phase = Phase.ROLLBACK
        self.events(PhaseChanged(t.id, Phase.ROLLBACK))
        undone, undo_failures = await undo_journal(ctx, self.undo, after_crash=after_crash)
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
        failure = Failure(
            kind=error.kind, dbus_name=error.dbus_name, message=error.message, step=failed_step
        )
        self.finish(t, state, error=failure, undone=undone, undo_failures=undo_failures)
        message = error.message
        if undo_failures:
            message += " Rolling back also failed: " + "; ".join(undo_failures)
        self.events(TransitionFailed(t.id, error.dbus_name, message))
