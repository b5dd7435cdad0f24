"""The built-in step that ends remote login sessions: quiesce, before every hook.

First it stops the remote-login listeners (``[exec] remote-login-units``,
default ``ssh.socket`` and ``ssh.service``; only those active, in that order),
so that no new login (Ansible's boot-id poll, say) can start between the
sessions being ended and the network going down, and then hang on a machine
that went away.  Stopping Debian's ``ssh.service`` stops only the listening
sshd (``KillMode=process``; the logins are in their own session scopes), and
its clients now get "connection refused" (which Ansible retries).  The units
to stop are known only as the step runs (which are active), so the step
journals its undo record itself, durably, before it stops the first one
(``StartUnitsUndo``: start them again, in the same order), then narrows it to
the units actually stopped.  A rollback, or crash recovery, starts them again.

Ending a session (logind's ``TerminateSession``) stops its scope: every
process in it gets SIGTERM and SIGHUP, sshd's among them, and the kernel
closes their TCP connections with a FIN while the network is still up, so
the clients see "Connection closed by remote host" (ssh exits 255) instead
of waiting forever for a machine that went away (see /work/notes, issue 20).
It runs first in the quiesce phase, before any hook (the shipped
``20-network`` takes links down there) or built-in step (``devices`` unbinds
in the unbind phase) can take the network away, in both exec modes: in
``systemd`` mode the quiesce hooks run before ``kexec.target`` starts, so
systemd's own shutdown ordering (session scopes stop before the network)
comes too late for them.

An ended session cannot be brought back: a transition that fails later
leaves the sessions ended (their users log in again).  A failure to stop a
listener, or to list or end a session, never fails the transition: it is a
warning on the step, and the transition goes on as it would without this
step.
"""

from __future__ import annotations

import asyncio
import logging
import time

from liveupd.backends.base import Session
from liveupd.errors import Failed
from liveupd.sessions.plan import plan_endings
from liveupd.transition.context import TransitionContext
from liveupd.transition.phases import Phase
from liveupd.transition.records import EndedSession
from liveupd.transition.steps import FIRST, BuiltinStep
from liveupd.transition.undo import AnyUndo, StartUnitsUndo

END_TIMEOUT = 10.0  # seconds to wait for the sessions ended at once to be gone
CALL_TIMEOUT = 5.0  # seconds for one call to logind
POLL = 0.05  # seconds between two checks that a session is gone


class EndSessionsStep(BuiltinStep):
    kind = "sessions"
    name = "end-remote-sessions"
    phase = Phase.QUIESCE
    order = FIRST

    def prepare(self, ctx: TransitionContext) -> AnyUndo | None:
        # Which listeners are active is known only in apply, which journals the undo
        # record before it stops any; an ended session cannot be brought back.
        return None

    async def apply(self, ctx: TransitionContext) -> None:
        await self._stop_listeners(ctx)
        if not ctx.config.exec.end_remote_sessions:
            ctx.log(
                "sessions.kept", reason=f"[exec] end-remote-sessions is false in {ctx.config_file}"
            )
            return
        backend = ctx.backends.sessions
        try:
            found = await asyncio.wait_for(backend.sessions(), CALL_TIMEOUT)
            caller = None
            if ctx.caller_pid:
                caller = await asyncio.wait_for(backend.session_of(ctx.caller_pid), CALL_TIMEOUT)
        except (OSError, TimeoutError) as e:
            self._warn(
                ctx,
                f"cannot list the login sessions ({_why(e)}): remote sessions were not ended, "
                "and their clients may hang when the network goes down",
            )
            return
        endings = plan_endings(found, caller)
        if not endings.ordered:
            ctx.log("sessions.none-remote", sessions=len(found), caller_session=caller)
            return
        ended: list[EndedSession] = []
        # The caller's own session last: the others are gone before it is ended.
        for batch, is_caller in ((endings.first, False), ((endings.last,), True)):
            ended += await self._end(ctx, [s for s in batch if s is not None], is_caller)
        ctx.journal.update(sessions_ended=tuple(ended))

    async def _stop_listeners(self, ctx: TransitionContext) -> None:
        """Stop the active remote-login listeners, in the configured order."""
        units = ctx.config.exec.remote_login_units
        if not units:
            ctx.log("sessions.listeners-kept", reason=f"[exec] remote-login-units is [] in "
                    f"{ctx.config_file}")  # fmt: skip
            return
        backend = ctx.backends.sessions
        try:
            active = await backend.active_units(units)
        except OSError as e:
            self._warn(
                ctx, f"cannot tell which of {' '.join(units)} are active ({_why(e)}): none stopped"
            )
            return
        if not active:
            ctx.log("sessions.no-listener", units=list(units))
            return
        # On the disk before anything is stopped: a rollback or a crash from here on
        # starts them again (starting a unit that is running does nothing).
        ctx.journal.step_update(self.key, undo=StartUnitsUndo(units=tuple(active)))
        stopped: list[str] = []
        for unit in active:
            ctx.log("sessions.listener-stopping", unit=unit)
            try:
                await backend.stop_unit(unit)
            except OSError as e:
                self._warn(
                    ctx,
                    f"could not stop {unit} ({_why(e)}): new remote logins may start until "
                    "the network goes down, and their clients hang",
                )
                continue
            stopped.append(unit)
            ctx.log("sessions.listener-stopped", unit=unit)
        if stopped != active:
            undo = StartUnitsUndo(units=tuple(stopped))
            ctx.journal.step_update(self.key, undo=undo, durable=False)
        if stopped:
            ctx.journal.update(units_stopped=tuple(stopped))

    async def _end(
        self, ctx: TransitionContext, sessions: list[Session], is_caller: bool
    ) -> list[EndedSession]:
        backend = ctx.backends.sessions
        errors: dict[str, str] = {}
        for s in sessions:
            ctx.log(
                "sessions.ending",
                session=s.id,
                user=s.user,
                service=s.service,
                remote_host=s.remote_host or None,
                leader=s.leader,
                caller=is_caller,
            )
            try:
                await asyncio.wait_for(backend.terminate(s.id), CALL_TIMEOUT)
            except (OSError, TimeoutError) as e:
                errors[s.id] = _why(e)
                self._warn(ctx, f"logind did not end session {s.id} of {s.user}: {errors[s.id]}")
        waiting = {s.id for s in sessions if s.id not in errors}
        deadline = time.monotonic() + END_TIMEOUT
        while waiting:
            for sid in sorted(waiting):
                try:
                    if await asyncio.wait_for(backend.gone(sid), CALL_TIMEOUT):
                        waiting.discard(sid)
                except (OSError, TimeoutError):
                    pass  # asked again until the deadline
            if not waiting or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL)
        for sid in sorted(waiting):
            self._warn(ctx, f"session {sid} was still there {END_TIMEOUT:.0f} s after it was ended")
        out = []
        for s in sessions:
            record = EndedSession(
                id=s.id,
                user=s.user,
                uid=s.uid,
                service=s.service,
                remote_host=s.remote_host,
                leader=s.leader,
                caller=is_caller,
                gone=s.id not in waiting and s.id not in errors,
                error=errors.get(s.id),
            )
            if record.gone:
                ctx.log("sessions.ended", session=s.id, user=s.user, caller=is_caller)
            out.append(record)
        return out

    def _warn(self, ctx: TransitionContext, message: str) -> None:
        ctx.log("sessions.warning", level=logging.WARNING, message=message)
        ctx.journal.step_update(self.key, warning=message, durable=False)


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return f"no answer within {CALL_TIMEOUT:.0f} s"
    return str(getattr(e, "strerror", None) or e)


async def undo_start_units(ctx: TransitionContext, record: StartUnitsUndo) -> None:
    """Start the listeners stopped for the transition again, in the order they were stopped."""
    failed: list[str] = []
    for unit in record.units:
        try:
            await ctx.backends.sessions.start_unit(unit)
        except OSError as e:
            failed.append(f"{unit} ({_why(e)})")
            ctx.log("sessions.listener-start-failed", level=logging.ERROR, unit=unit, error=_why(e))
            continue
        ctx.log("sessions.listener-started", unit=unit)
    if failed:
        names = " ".join(u for u in record.units)
        raise Failed(
            f"could not start the remote-login listeners again: {'; '.join(failed)}. "
            f"Start them from the console: systemctl start {names}"
        )
