"""Crash recovery: finish what a dead daemon left behind, from its journals.

On start (the daemon's, and ``liveupd --verify``'s), for every transition:

* a journal that cannot be parsed or does not validate is renamed aside
  (``journal.json.corrupt``), logged at error level and reported; the daemon
  still starts.  If it may belong to an unfinished transition of this boot,
  recovery does what it can without it: thaw and bind again what the
  checkpoint lists, unload the kernel (unless a staged transition is adopted),
  and says that the rest (hooks' undo programs) needs a person;
* same boot, ``staged`` with every stage step done and the kernel still
  loaded: adopt it (staged again);
* same boot, anything else unfinished: the daemon died mid-transition.  Kill
  the hook process groups it left running (only a group whose leader has the
  pid *and* the start time the journal recorded: a recycled pid is another
  process), then undo exactly what the journal shows as done (``aborted``);
* another boot: the machine went through a kexec or a reboot since; that
  transition is handed to post-boot verification.

The first thing done writes nothing: a daemon that died with filesystems
frozen left them frozen, and a write to one (a journal, a log line, a rename)
would block forever, so every possibly frozen filesystem is thawed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass

from liveupd import logs
from liveupd.errors import Failed
from liveupd.storage.recover import thaw, thaw_leftovers
from liveupd.transition.checkpoint import Checkpoint, load_checkpoint
from liveupd.transition.context import TransitionContext
from liveupd.transition.engine import Engine, Transition
from liveupd.transition.journal import JOURNAL_NAME, CorruptJournal, Journal, quarantine
from liveupd.transition.phases import STAGE_PHASES, Phase, StepStatus, TransitionState
from liveupd.transition.records import TransitionRecord
from liveupd.transition.undo import RebindUndo
from liveupd.verify.postboot import after_watchdog_failure, verify_after_boot

LOG = logs.get("recovery")
START_TOLERANCE = 0.05  # seconds: the same process always reads back the same start time


class Action:
    ADOPTED = "adopted"
    ROLLED_BACK = "rolled-back"
    HANDED_TO_VERIFY = "handed-to-verify"
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class Recovered:
    id: str
    action: str  # Action.*
    state: TransitionState | None  # None: the journal was corrupt (quarantined)
    note: str = ""


def context_from_journal(engine: Engine, journal: Journal) -> TransitionContext:
    return engine.context(journal)


def kill_leftover_hooks(journal: Journal) -> list[int]:
    """SIGKILL the process groups of hooks that were running when the daemon died.

    Only a group whose leader is still the process the journal recorded: same
    pid and same start time.  A pid that was reused belongs to a process started
    later, and is left alone; so is a group whose leader is gone (nothing can
    prove its members were the hook's).
    """
    import psutil  # only here: the verify path does not need it otherwise

    killed = []
    for entry in journal.steps():
        pgid, started = entry.pgid, entry.leader_started
        if entry.status is not StepStatus.STARTED or pgid is None or started is None:
            continue
        try:
            same = (
                abs(psutil.Process(pgid).create_time() - started) < START_TOLERANCE
                and os.getpgid(pgid) == pgid
            )
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
        if not same:
            logs.event(
                LOG,
                "recovery.pid-reused",
                transition=journal.id,
                step=entry.key,
                pgid=pgid,
                hint="another process has this pid now; it was left alone",
            )
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
            killed.append(pgid)
    return killed


def fully_staged(journal: Journal) -> bool:
    """Every step of the stage phases ran to its end (the kernel load among them)."""
    steps = [s for s in journal.steps() if s.phase in STAGE_PHASES]
    return any(s.phase is Phase.LOAD for s in steps) and all(
        s.status is StepStatus.DONE for s in steps
    )


async def recover(engine: Engine) -> tuple[Transition | None, list[Recovered]]:
    """Recover every unfinished transition; returns (adopted staged transition, report)."""
    backends = engine.backends
    boot_id = backends.system.boot_id()
    scan = Journal.scan(engine.config.state_dir, backends.files)
    # First, before anything writes: thaw what may have been left frozen.
    await thaw_leftovers(scan.journals, boot_id, backends.storage)
    corrupt = [c for c in scan.corrupt if not c.quarantined]
    salvage = {c.id: cp for c in corrupt if (cp := _this_boots(engine, c, boot_id)) is not None}
    for c in corrupt:
        if c.id in salvage and (cp := salvage[c.id]).checkpoint is not None:
            await thaw(backends.storage, list(reversed(cp.checkpoint.freeze)), c.id)
    report: list[Recovered] = []
    for c in corrupt:
        _quarantine(c)

    for journal in scan.journals:
        if journal.state.terminal and (fell := await after_watchdog_failure(engine, journal)):
            report.append(Recovered(journal.id, Action.HANDED_TO_VERIFY, fell))

    adopted: Transition | None = None
    journals = sorted(
        (j for j in scan.journals if not j.state.terminal), key=lambda j: j.record.created
    )
    for journal in journals:
        t = Transition(engine.context(journal))
        if journal.record.boot_id != boot_id:
            state = await verify_after_boot(engine, t)
            report.append(Recovered(journal.id, Action.HANDED_TO_VERIFY, state))
            continue
        if (
            journal.state is TransitionState.STAGED
            and adopted is None
            and fully_staged(journal)
            and backends.kexec.is_loaded()
        ):
            adopted = t
            t.ctx.log("recovery.adopted")
            report.append(Recovered(journal.id, Action.ADOPTED, journal.state))
            continue
        await _disarm_watchdog(t.ctx, load_checkpoint(journal.dir))
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
        report.append(Recovered(journal.id, Action.ROLLED_BACK, t.state))

    for c in corrupt:
        note = f"its journal is corrupt ({c.reason}); it was set aside as {c.path.name}.corrupt"
        if c.id in salvage:
            note += "; " + await _salvage(engine, salvage[c.id], unload=adopted is None)
        else:
            note += "; inspect it by hand"
        logs.event(LOG, "recovery.corrupt", level=logging.ERROR, transition=c.id, note=note)
        report.append(Recovered(c.id, Action.QUARANTINED, None, note))
    return adopted, report


async def _disarm_watchdog(ctx: TransitionContext, checkpoint: Checkpoint | None) -> str:
    """A daemon that died between arming the watchdog and the jump (``direct`` mode) left
    it running: its undo was journaled after the state directory was frozen, so the
    journal may not show it.  The checkpoint does: stop it (idempotent) before the rest
    is undone, or the machine resets.  What was done, for a note ("" if nothing)."""
    record = checkpoint.watchdog if checkpoint is not None else None
    if record is None or checkpoint is None or checkpoint.mode != "direct":
        return ""
    try:
        await asyncio.to_thread(ctx.backends.watchdog.disarm, record)
    except OSError as e:
        why = e.strerror or str(e)
        ctx.log(
            "recovery.watchdog-disarm-failed",
            level=logging.ERROR,
            device=record.devnode,
            error=why,
            hint=f"if it runs, the machine resets within {record.timeout} s",
        )
        return f"disarming the watchdog {record.devnode} failed: {why}"
    ctx.log("recovery.watchdog-disarmed", device=record.devnode)
    return f"disarmed the watchdog {record.devnode}"


# ------------------------------------------------------------ corrupt ----


@dataclass(frozen=True)
class _Salvage:
    corrupt: CorruptJournal
    checkpoint: Checkpoint | None


def _this_boots(engine: Engine, c: CorruptJournal, boot_id: str) -> _Salvage | None:
    """The corrupt journal may be an unfinished transition of this boot: what we know."""
    checkpoint = load_checkpoint(c.dir)
    if checkpoint is not None:
        return _Salvage(c, checkpoint) if checkpoint.old.boot_id == boot_id else None
    try:
        written = c.path.stat().st_mtime
    except OSError:
        return None
    booted = time.time() - engine.backends.system.uptime()
    return _Salvage(c, None) if written >= booted else None


def _quarantine(c: CorruptJournal) -> None:
    try:
        quarantine(c)
    except OSError as e:
        logs.event(
            LOG,
            "journal.quarantine-failed",
            level=logging.ERROR,
            transition=c.id,
            path=str(c.path),
            error=e.strerror or str(e),
        )
        return
    logs.event(
        LOG,
        "journal.corrupt",
        level=logging.ERROR,
        transition=c.id,
        path=str(c.path),
        reason=c.reason,
        action=f"renamed to {c.path.name}.corrupt",
    )


async def _salvage(engine: Engine, salvage: _Salvage, *, unload: bool) -> str:
    """Undo what can be undone without the journal; says what was done and what is left."""
    c, checkpoint = salvage.corrupt, salvage.checkpoint
    stand_in = Journal(
        c.dir / JOURNAL_NAME,
        # Not validated (built, not loaded): the directory's name may be anything; this
        # is never written.
        TransitionRecord(id=c.id, state=TransitionState.ABORTED, created=time.time(), steps=[]),
        engine.backends.files,
    )  # never written: it only gives the context a directory for its log
    ctx = engine.context(stand_in)
    done: list[str] = []
    problems: list[str] = []
    if checkpoint is not None and checkpoint.freeze:
        done.append("thawed " + ", ".join(checkpoint.freeze))
    if checkpoint is not None and checkpoint.bindings:
        from liveupd.devices.steps import undo_rebind

        try:
            await undo_rebind(ctx, RebindUndo(bindings=checkpoint.bindings))
            done.append("bound again " + ", ".join(b.sys_path for b in checkpoint.bindings))
        except Exception as e:
            problems.append(str(e.args[0] if e.args else e)[:300])
    if checkpoint is not None:
        disarmed = await _disarm_watchdog(ctx, checkpoint)
        if disarmed:
            (problems if disarmed.startswith("disarming") else done).append(disarmed)
    kexec = engine.backends.kexec
    if unload:
        try:
            if kexec.is_loaded():
                kexec.unload()
                done.append("unloaded the staged kernel")
        except OSError as e:
            problems.append(f"unloading the kernel failed: {e.strerror or e}")
    text = ("; ".join(done) or "nothing could be undone without it") + (
        "; " + "; ".join(problems) if problems else ""
    )
    return (
        text + ". Manual inspection is needed: hooks' undo programs were not run "
        f"(see {c.dir}/log.jsonl for what the transition did)"
    )
