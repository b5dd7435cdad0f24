"""The daemon's one stateful object: at most one transition at a time.

The D-Bus layer calls these methods after it has checked authorization; this
is where Busy / NotStaged are decided, where the daemon-wide state (idle,
staged, running, exec, failed) comes from, and where history is read.

Every decision is taken synchronously, before the first ``await`` that could
let another call in: a Stage marks the Manager busy before it starts, Execute
turns a staged transition into a running one in one step, and Cancel decides
the one rollback of a transition (``Engine.begin_cancel``), which concurrent
Cancels then wait for; an Execute after a Cancel has begun is NotStaged.

A Stage that names no installed kernel or no existing file is refused before
its transition is recorded (``kernel.named``): history holds only transitions
that started.

With ``rehearse`` (the daemon's ``--dry-run``) a transition that reached the
simulated jump goes on as the machine would: the simulated machine boots the
loaded kernel (``Backends.simulated_boot``), the new boot's verification runs
as ``liveupd --verify`` would run it (``verify_after_boot``), and the
transition ends ``completed`` (or ``recovery-failed``); the Manager is idle
again and the rehearsal can be repeated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from liveupd import logs
from liveupd.backends.base import Backends, Refusal, VolumeScan
from liveupd.config import Config
from liveupd.errors import Busy, Failed, NotStaged, Unsupported
from liveupd.hooks.manifest import Hook
from liveupd.kernel.latest import LatestKernel
from liveupd.quoting import clip
from liveupd.transition import history
from liveupd.transition.context import StageRequest
from liveupd.transition.events import Event, EventSink, Verified
from liveupd.transition.phases import ExecMode, TransitionState
from liveupd.transition.records import Check, Problem, Verification

if TYPE_CHECKING:
    from liveupd.kernel.discovery import InstalledKernel
    from liveupd.kernel.quarantine import Quarantine
    from liveupd.kernel.resolve import Verdict
    from liveupd.kernel.stageable import StageableKernels
    from liveupd.recovery import Recovered
    from liveupd.transition.engine import Engine, Transition

# The kernel package (discovery, Stage's checks: image formats, UKIs, signatures)
# is imported by the first call that needs it, not before the daemon owns its name;
# so are the engine and recovery (the transition machinery: steps, hooks runner,
# post-boot verification): the daemon's start (Manager.start, after the name is
# owned) or the first call that needs them imports them.

LOG = logs.get("manager")


class ManagerState(StrEnum):
    IDLE = "idle"
    STAGED = "staged"
    RUNNING = "running"
    EXEC = "exec"
    FAILED = "failed"


_STATE_OF = {
    TransitionState.STAGED: ManagerState.STAGED,
    TransitionState.RUNNING: ManagerState.RUNNING,
    TransitionState.EXEC: ManagerState.EXEC,
    TransitionState.FAILED: ManagerState.FAILED,
    TransitionState.ROLLBACK_FAILED: ManagerState.FAILED,
    TransitionState.ABORTED: ManagerState.FAILED,
}


class Manager:
    def __init__(self, config: Config, backends: Backends, *, rehearse: bool = False) -> None:
        self.config = config
        self.backends = backends
        self._engine: Engine | None = None
        self.current: Transition | None = None
        self.transitions: dict[str, Transition] = {}  # every transition seen by this process
        self._listeners: list[EventSink] = []
        self._staging: asyncio.Future[None] | None = None  # done when the Stage ends
        self._stageable: StageableKernels | None = None
        # The LatestKernel property: latest_kernel() in a worker thread, never on the loop.
        self.latest = LatestKernel(self.latest_kernel)
        if rehearse and backends.simulated_boot is None:
            raise ValueError("a rehearsal needs the dry-run machine (Backends.simulated_boot)")
        self.rehearse = rehearse
        # The dry run's simulated new boot and its verification, while it runs.
        self.rehearsal: asyncio.Task[None] | None = None
        # Machines that would not come back, as last looked at (refusals()), and the
        # look at the LUKS volumes under way.
        self._comeback: list[Refusal] = []
        self._scanning: asyncio.Task[VolumeScan] | None = None

    @property
    def engine(self) -> Engine:
        """The transition engine, made (and its modules imported) on first use."""
        if self._engine is None:
            from liveupd.assembly import make_engine

            self._engine = make_engine(self.config, self.backends, events=self._on_event)
        return self._engine

    # ------------------------------------------------------------- events --

    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        self._listeners.append(sink)
        return lambda: self._listeners.remove(sink)

    def _on_event(self, event: Event) -> None:
        for sink in list(self._listeners):
            try:
                sink(event)
            except Exception:  # a listener must never break a transition
                LOG.exception("event listener failed")

    # -------------------------------------------------------------- state --

    @property
    def state(self) -> ManagerState:
        if self._staging is not None:
            return ManagerState.RUNNING
        if self.current is None:
            return ManagerState.IDLE
        return _STATE_OF.get(self.current.state, ManagerState.IDLE)

    @property
    def staging(self) -> bool:
        """A Stage is in progress (its transition is not ``current`` until it is staged)."""
        return self._staging is not None

    @property
    def staged(self) -> Transition | None:
        """The staged transition Execute would start (none once a Cancel has begun)."""
        t = self.current
        if t is None or t.state is not TransitionState.STAGED or t.cancelling is not None:
            return None
        return t

    @property
    def stageable(self) -> StageableKernels:
        """LatestKernel: Stage's checks, cached per file (created on first use)."""
        if self._stageable is None:
            from liveupd.kernel.stageable import StageableKernels

            self._stageable = StageableKernels()
        return self._stageable

    def running_release(self) -> str:
        return self.backends.system.release()

    def kernels(self) -> list[InstalledKernel]:
        from liveupd.kernel.discovery import list_kernels

        return list_kernels(self.config, self.running_release())

    def latest_kernel(self) -> str:
        """The newest installed kernel that Stage would take ("" when none would).

        Blocking (Stage's checks on every kernel not in their cache): the daemon
        calls it through ``self.latest``, in a worker thread.
        """
        latest = self.stageable.latest(self.kernels(), self.config)
        return latest.release if latest is not None else ""

    def kernel_verdicts(self) -> list[tuple[InstalledKernel, Verdict]]:
        """Every installed kernel with whether Stage would take it, and why not.

        UKIs whose release could not be read come first, with release "".
        """
        from liveupd.kernel.discovery import InstalledKernel, Source, scan
        from liveupd.kernel.resolve import Verdict

        found = scan(self.config, self.running_release())
        kernels = found.kernels
        rows = [
            (
                InstalledKernel("", path, None, False, Source.UKI),
                Verdict(next((p for p in found.problems if p.startswith(f"{path}: ")), path)),
            )
            for path in found.unreadable
        ]
        from liveupd.kernel.quarantine import read

        held = read(self.config.state_dir)  # Stage refuses a quarantined kernel
        running = self.running_release()

        def check(k: InstalledKernel) -> Verdict:
            why = held.reason(k.release, running)
            return Verdict(why) if why else self.stageable.verdict(k, kernels, self.config)

        return rows + [(k, check(k)) for k in kernels]

    def quarantine(self) -> Quarantine:
        """The kernels transitions fell back from (``kernel/quarantine.py``)."""
        from liveupd.kernel.quarantine import read

        return read(self.config.state_dir)

    def clear_quarantine(self, release: str) -> Quarantine:
        """Lift the quarantine of ``release`` ("": every kernel); what was lifted.

        Blocking (it writes the state directory): called in a worker thread.
        """
        from liveupd.kernel.quarantine import clear

        cleared = clear(self.config.state_dir, release)
        logs.event(
            LOG,
            "quarantine.cleared",
            release=release or "all",
            cleared=",".join(k.release for k in cleared.kernels) or None,
            unreadable=cleared.problem or None,
        )
        return cleared

    async def refusals(self) -> list[Refusal]:
        """Every named reason a live update is refused here, looked at now: preflight
        (kexec cannot work), and machines that would not come back (``kernel/comeback.py``:
        the LUKS volumes' headers are read by cryptsetup, a subprocess; a scan under way is
        shared).  Never blocks the event loop."""
        from liveupd.kernel.comeback import refusals

        kexec = await asyncio.to_thread(self.backends.kexec.refusals)
        dmi = await asyncio.to_thread(self.backends.system.dmi)
        scan = await asyncio.shield(self._volume_scan())
        comeback = refusals(dmi, scan, self.config)
        self._comeback = comeback
        return kexec + comeback

    def _volume_scan(self) -> asyncio.Task[VolumeScan]:
        if self._scanning is None:
            self._scanning = asyncio.get_running_loop().create_task(self._scan_volumes())
        return self._scanning

    async def _scan_volumes(self) -> VolumeScan:
        try:
            return await self.backends.storage.encrypted_volumes()
        except Exception as e:  # on the safe side: an unknown volume refuses
            logs.event(LOG, "volumes.failed", level=logging.ERROR, error=repr(e))
            return VolumeScan((), (f"looking at them failed ({e!r}; see the daemon's log)",))
        finally:
            self._scanning = None

    def known_refusals(self) -> list[Refusal]:
        """As ``refusals``, with the volumes as last looked at (for property signals):
        reads only small files in /proc and /sys."""
        return self.backends.kexec.refusals() + self._comeback

    def unsupported(self) -> str:
        """Why kexec cannot work here, or the machine would not come back ("" when it can),
        as last looked at (``known_refusals``)."""
        return "; ".join(r.message for r in self.known_refusals())

    def watchdog(self) -> str:
        """What guards the jump against a hang: the watchdog and its timeout, or why none."""
        staged = self.staged
        target = staged.ctx.target if staged is not None else None
        release = target.release if target is not None else None
        from liveupd.devices.watchdog import plan_for

        return plan_for(self.backends.watchdog, self.config, release).note

    def history(self, limit: int = 0) -> list[dict[str, Any]]:
        return history.history(self.config.state_dir, limit)

    def _track(self, t: Transition) -> None:
        self.transitions[t.id] = t
        self.current = t

    # ------------------------------------------------------------ startup --

    async def start(self) -> list[Recovered]:
        """Recover from a previous run's journals; adopt a still-loaded staged kernel."""
        from liveupd.recovery import recover

        adopted, report = await recover(self.engine)
        for r in report:
            logs.event(
                LOG,
                "recovery.result",
                transition=r.id,
                action=r.action,
                state=str(r.state) if r.state else None,
                note=r.note or None,
            )
        if adopted is not None:
            self._track(adopted)
        history.prune(self.config.state_dir, self.config.daemon.history_limit)
        return report

    # ------------------------------------------------------------ actions --

    @property
    def rehearsing(self) -> bool:
        """The dry run is past its simulated jump, simulating the new boot."""
        return (
            self.rehearsal is not None
            and not self.rehearsal.done()
            and self.current is not None
            and self.current.state is TransitionState.EXEC
        )

    def _refuse_if_busy(self) -> None:
        if self.rehearsing:
            assert self.current is not None
            raise Busy(
                f"the dry run is verifying transition {self.current.id} on the simulated new "
                "boot; wait a moment for it to finish (liveupctl status)"
            )
        state = self.state
        if state in (ManagerState.STAGED, ManagerState.RUNNING):
            assert self.current is not None or self._staging is not None
            which = f" ({self.current.id})" if self.current else ""
            raise Busy(
                f"a transition is already {state}{which}; cancel it first "
                "(liveupctl cancel) or wait for it to finish"
            )

    async def stage(self, request: StageRequest) -> Transition:
        self._refuse_if_busy()
        staging = self._staging = asyncio.get_running_loop().create_future()
        try:
            refused = await self.refusals()
            if refused:
                raise Unsupported(
                    "this machine cannot be live-updated: " + "; ".join(r.text() for r in refused)
                )
            # A typo is refused here, before the transition's journal exists.
            from liveupd.kernel.named import refuse_unknown

            await asyncio.to_thread(refuse_unknown, request, self.config, self.running_release())
            t = await self.engine.stage(request)
        finally:
            self._staging = None
            staging.set_result(None)
        self._track(t)
        history.prune(self.config.state_dir, self.config.daemon.history_limit)
        return t

    def executable(self) -> Transition:
        """The staged transition Execute would start; Busy or NotStaged when there is none."""
        if self.state is ManagerState.RUNNING:
            self._refuse_if_busy()
        t = self.staged
        if t is None:
            t = self.current
            if t is not None and t.cancelling is not None and not t.state.terminal:
                raise NotStaged(
                    f"transition {t.id} is being cancelled; stage a kernel again "
                    "(liveupctl stage) once it is"
                )
            raise NotStaged("nothing is staged; stage a kernel first (liveupctl stage)")
        return t

    def execute(
        self, mode: ExecMode, hooks: Sequence[Hook] | None = None, *, caller_pid: int | None = None
    ) -> Transition:
        """Start the staged transition; returns at once (progress comes as events).

        Synchronous: the check and the change to running cannot be interleaved.
        ``hooks``: as Engine.discover_hooks() found them (off the event loop);
        ``caller_pid``: the process that asked, if known (its session is ended last).
        """
        t = self.executable()
        task = self.engine.start_execute(t, mode, hooks, caller_pid=caller_pid)
        if self.rehearse:
            self.rehearsal = asyncio.create_task(self._rehearse(t, task))
        return t

    async def _rehearse(self, t: Transition, run: asyncio.Task[None]) -> None:
        """Dry run: after the simulated jump, the simulated new boot and its verification."""
        await asyncio.wait({run})
        if t.state is not TransitionState.EXEC:
            return  # failed or cancelled before the jump: rolled back as always
        boot = self.backends.simulated_boot
        assert boot is not None
        try:
            await asyncio.to_thread(boot)
            logs.event(
                LOG,
                "rehearsal.new-boot",
                transition=t.id,
                release=self.backends.system.release(),
                boot_id=self.backends.system.boot_id(),
            )
            from liveupd.verify.postboot import verify_after_boot

            state = await verify_after_boot(self.engine, t)
        except Exception as e:  # the rehearsal must end the transition, whatever happens
            logs.event(LOG, "rehearsal.failed", level=logging.ERROR, transition=t.id, error=repr(e))
            self._rehearsal_failed(t, e)
            state = t.state
        logs.event(LOG, "rehearsal.done", transition=t.id, state=str(state))
        self._on_event(Verified(t.id, state is TransitionState.COMPLETED))

    def _rehearsal_failed(self, t: Transition, error: Exception) -> None:
        now = time.time()
        problem = Problem(
            check=Check.KERNEL,
            message=f"the dry run could not simulate the new boot ({error}); see the daemon's log",
        )
        verification = Verification(
            started=now,
            running_release=self.backends.system.release(),
            boot_id=self.backends.system.boot_id(),
            finished=now,
            problems=(problem,),
        )
        self.engine.finish(t, TransitionState.RECOVERY_FAILED, verification=verification)

    async def cancel(self) -> Transition:
        """Cancel what is staged or running; concurrent calls share one rollback."""
        t = self.current
        if t is None or t.state not in (TransitionState.STAGED, TransitionState.RUNNING):
            raise NotStaged("nothing is staged or running, so there is nothing to cancel")
        rollback = self.engine.begin_cancel(t)  # decided here, before any await
        await asyncio.shield(rollback)
        record = t.ctx.journal.record  # (t.state was narrowed before the await)
        if record.state is TransitionState.ROLLBACK_FAILED:
            undo_failures = record.undo_failures
            raise Failed(
                f"transition {t.id} was cancelled, but rolling it back failed: "
                + (clip("; ".join(undo_failures)) if undo_failures else "see its record")
                + f"; the machine is not as it was: see 'liveupctl show {t.id}' "
                "and 'journalctl -u liveupd'"
            )
        return t

    async def shutdown(self) -> None:
        """The daemon is stopping: a running (not yet exec) transition is rolled back.

        A Stage under way is let finish (its transition stays staged, and the next
        daemon adopts it); a Cancel under way is waited for.
        """
        if self._staging is not None:
            await asyncio.shield(self._staging)
        t = self.current
        if t is None:
            return
        if t.cancelling is not None:
            await asyncio.shield(t.cancelling)
        elif t.state is TransitionState.RUNNING and t.task is not None:
            logs.event(LOG, "shutdown.cancel", level=logging.WARNING, transition=t.id)
            try:
                await self.engine.cancel(t)
            except Failed:  # past exec: let it finish
                await asyncio.shield(t.task)
        if self.rehearsal is not None:  # a dry run's simulated new boot: let it end
            await asyncio.shield(self.rehearsal)
