"""Crash recovery: finish what a dead daemon left behind, from its journals.

On start, the daemon looks at every transition whose journal is not in a
terminal state:

* same boot, ``staged``, kernel still loaded: adopt it (staged again);
* same boot, anything else: the daemon died mid-transition.  Kill hook
  process groups it left running, then undo exactly what the journal shows
  as done (``aborted``);
* another boot: the machine went through a kexec or a reboot since; that
  transition is handed to post-boot verification.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from dataclasses import dataclass

import psutil

from liveupd import logs
from liveupd.errors import Failed
from liveupd.transition.context import StageRequest, Target, TransitionContext
from liveupd.transition.engine import Engine, Transition
from liveupd.transition.journal import Journal
from liveupd.transition.phases import ExecMode, StepStatus, TransitionState

LOG = logs.get("recovery")


@dataclass(frozen=True)
class Recovered:
    id: str
    action: str  # adopted | rolled-back | handed-to-verify
    state: TransitionState


def context_from_journal(engine: Engine, journal: Journal) -> TransitionContext:
    data = journal.data
    target = Target.from_json(data["target"]) if data.get("target") else None
    request = StageRequest(**data["request"]) if data.get("request") else None
    return TransitionContext(
        transition_id=journal.id,
        config=engine.config,
        backends=engine.backends,
        journal=journal,
        events=engine.events,
        request=request,
        target=target,
        mode=ExecMode(data.get("mode", ExecMode.DIRECT)),
    )


def kill_leftover_hooks(journal: Journal) -> list[int]:
    """SIGKILL the process groups of hooks that were running when the daemon died."""
    killed = []
    for entry in journal.steps():
        pgid = entry.get("pgid")
        if entry["status"] != StepStatus.STARTED or not isinstance(pgid, int):
            continue
        try:
            leader = psutil.Process(pgid)
            # A recycled pid is a different process, started after the hook was.
            if leader.create_time() + 1 < float(entry["started"]) or os.getpgid(pgid) != pgid:
                continue
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass  # the leader is gone; members of its group may remain
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
            killed.append(pgid)
    return killed


async def recover(engine: Engine) -> tuple[Transition | None, list[Recovered]]:
    """Recover every unfinished transition; returns (adopted staged transition, report)."""
    boot_id = engine.backends.system.boot_id()
    # First, before anything writes: a daemon that died with filesystems frozen left
    # them frozen, and a write to one (a journal, a log line) would block forever.
    from liveupd.storage.recover import thaw_leftovers

    await thaw_leftovers(engine.config.state_dir, boot_id, engine.backends.storage)
    adopted: Transition | None = None
    report: list[Recovered] = []
    journals = sorted(
        (j for j in Journal.all(engine.config.state_dir) if not j.state.terminal),
        key=lambda j: float(j.data.get("created", 0)),
    )
    for journal in journals:
        t = Transition(context_from_journal(engine, journal))
        if journal.data.get("boot_id") != boot_id:
            from liveupd.verify.postboot import verify_after_boot

            state = await verify_after_boot(engine, t)
            report.append(Recovered(journal.id, "handed-to-verify", state))
            continue
        if (
            journal.state is TransitionState.STAGED
            and adopted is None
            and engine.backends.kexec.is_loaded()
        ):
            adopted = t
            t.ctx.log("recovery.adopted")
            report.append(Recovered(journal.id, "adopted", journal.state))
            continue
        killed = kill_leftover_hooks(journal)
        t.ctx.log(
            "recovery.rollback",
            level=logging.WARNING,
            was=str(journal.state),
            killed_process_groups=",".join(map(str, killed)) or None,
        )
        error = Failed(
            f"liveupd stopped during transition {journal.id} ({journal.state}); "
            "what it had done was undone when it restarted. Stage again to retry."
        )
        await engine.rollback(t, error, after_crash=True)
        report.append(Recovered(journal.id, "rolled-back", t.state))
    return adopted, report
