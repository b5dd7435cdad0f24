"""The built-in step that ends remote login sessions: quiesce, before every hook.

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

Nothing to undo: an ended session cannot be brought back.  ``prepare``
journals no undo record, and a transition that fails later leaves the
sessions ended (their users log in again).  A failure to list or end a
session never fails the transition: it is a warning on the step, and the
transition goes on as it would without this step.
"""

from __future__ import annotations

import asyncio
import logging
import time

from liveupd.backends.base import Session
from liveupd.sessions.plan import plan_endings
from liveupd.transition.context import TransitionContext
from liveupd.transition.phases import Phase
from liveupd.transition.records import EndedSession
from liveupd.transition.steps import FIRST, BuiltinStep
from liveupd.transition.undo import AnyUndo

END_TIMEOUT = 10.0  # seconds to wait for the sessions ended at once to be gone
CALL_TIMEOUT = 5.0  # seconds for one call to logind
POLL = 0.05  # seconds between two checks that a session is gone


class EndSessionsStep(BuiltinStep):
    kind = "sessions"
    name = "end-remote-sessions"
    phase = Phase.QUIESCE
    order = FIRST

    def prepare(self, ctx: TransitionContext) -> AnyUndo | None:
        return None  # nothing to undo: an ended session cannot be brought back

    async def apply(self, ctx: TransitionContext) -> None:
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
