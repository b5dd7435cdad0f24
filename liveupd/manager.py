"""The daemon's one stateful object: at most one transition at a time.

The D-Bus layer calls these methods after it has checked authorization; this
is where Busy / NotStaged are decided, where the daemon-wide state (idle,
staged, running, exec, failed) comes from, and where history is read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

from liveupd import logs
from liveupd.backends.base import Backends
from liveupd.config import Config
from liveupd.errors import Busy, Failed, NotStaged, Unsupported
from liveupd.hooks.manifest import Hook
from liveupd.kernel.discovery import InstalledKernel, list_kernels
from liveupd.transition import history
from liveupd.transition.context import StageRequest
from liveupd.transition.engine import Engine, Transition
from liveupd.transition.events import Event, EventSink
from liveupd.transition.phases import ExecMode, TransitionState
from liveupd.transition.recovery import Recovered, recover

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
    def __init__(self, config: Config, backends: Backends) -> None:
        self.config = config
        self.backends = backends
        self.engine = Engine(config, backends, events=self._on_event)
        self.current: Transition | None = None
        self.transitions: dict[str, Transition] = {}  # every transition seen by this process
        self._listeners: list[EventSink] = []
        self._staging = False

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
        if self._staging:
            return ManagerState.RUNNING
        if self.current is None:
            return ManagerState.IDLE
        return _STATE_OF.get(self.current.state, ManagerState.IDLE)

    @property
    def staging(self) -> bool:
        """A Stage is in progress (its transition is not ``current`` until it is staged)."""
        return self._staging

    @property
    def staged(self) -> Transition | None:
        t = self.current
        return t if t is not None and t.state is TransitionState.STAGED else None

    def running_release(self) -> str:
        return self.backends.system.release()

    def kernels(self) -> list[InstalledKernel]:
        return list_kernels(self.config, self.running_release())

    def latest_kernel(self) -> str:
        kernels = self.kernels()
        return kernels[-1].release if kernels else ""

    def unsupported(self) -> str:
        """Why kexec cannot work here ("" when it can)."""
        return "; ".join(self.backends.kexec.preflight())

    def history(self, limit: int = 0) -> list[dict[str, Any]]:
        return history.history(self.config.state_dir, limit)

    def _track(self, t: Transition) -> None:
        self.transitions[t.id] = t
        self.current = t

    # ------------------------------------------------------------ startup --

    async def start(self) -> list[Recovered]:
        """Recover from a previous run's journals; adopt a still-loaded staged kernel."""
        adopted, report = await recover(self.engine)
        for r in report:
            logs.event(LOG, "recovery.result", transition=r.id, action=r.action, state=str(r.state))
        if adopted is not None:
            self._track(adopted)
        history.prune(self.config.state_dir, self.config.daemon.history_limit)
        return report

    # ------------------------------------------------------------ actions --

    def _refuse_if_busy(self) -> None:
        state = self.state
        if state in (ManagerState.STAGED, ManagerState.RUNNING):
            assert self.current is not None or self._staging
            which = f" ({self.current.id})" if self.current else ""
            raise Busy(
                f"a transition is already {state}{which}; cancel it first "
                "(liveupctl cancel) or wait for it to finish"
            )

    async def stage(self, request: StageRequest) -> Transition:
        self._refuse_if_busy()
        problems = self.unsupported()
        if problems:
            raise Unsupported(f"kexec cannot work on this machine: {problems}")
        self._staging = True
        try:
            t = await self.engine.stage(request)
        finally:
            self._staging = False
        self._track(t)
        history.prune(self.config.state_dir, self.config.daemon.history_limit)
        return t

    def executable(self) -> Transition:
        """The staged transition Execute would start; Busy or NotStaged when there is none."""
        if self.state is ManagerState.RUNNING:
            self._refuse_if_busy()
        t = self.staged
        if t is None:
            raise NotStaged("nothing is staged; stage a kernel first (liveupctl stage)")
        return t

    def execute(self, mode: ExecMode, hooks: Sequence[Hook] | None = None) -> Transition:
        """Start the staged transition; returns at once (progress comes as events)."""
        t = self.executable()
        self.engine.start_execute(t, mode, hooks)
        return t

    async def cancel(self) -> Transition:
        t = self.current
        if t is None or t.state not in (TransitionState.STAGED, TransitionState.RUNNING):
            raise NotStaged("nothing is staged or running, so there is nothing to cancel")
        await self.engine.cancel(t)
        return t

    async def shutdown(self) -> None:
        """The daemon is stopping: a running (not yet exec) transition is rolled back."""
        t = self.current
        if t is not None and t.state is TransitionState.RUNNING and t.task is not None:
            logs.event(LOG, "shutdown.cancel", level=logging.WARNING, transition=t.id)
            try:
                await self.engine.cancel(t)
            except Failed:
                await asyncio.shield(t.task)
