"""One object per transition: /org/liveupd/LiveUpdate1/transition/ID.

Its properties come from the live ``Transition`` while this daemon runs it,
otherwise from its journal on disk (a transition being staged, or one found
by crash recovery or post-boot verification).  Changes are published as
PropertiesChanged: state and phase at once, progress coalesced (at most one
signal per ``COALESCE_INTERVAL``), the report (a JSON document that changes
with every step) only invalidated.
"""

# D-Bus members are CamelCase by convention (busctl, systemd, every D-Bus API).
# ruff: noqa: N802

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbus_fast import PropertyAccess
from dbus_fast import introspection as intr
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from liveupd.manager import Manager
from liveupd.service import names
from liveupd.service.dbustypes import Str, UInt32, dbus_property
from liveupd.service.introspection import EMITS_CHANGED, annotate_property
from liveupd.transition import history
from liveupd.transition.journal import JOURNAL_NAME, Journal, JournalCorrupt, transitions_dir

if TYPE_CHECKING:
    from liveupd.transition.engine import Transition

COALESCE_INTERVAL = 0.2  # seconds


class TransitionInterface(ServiceInterface):
    def __init__(self, transition_id: str, registry: TransitionRegistry) -> None:
        super().__init__(names.TRANSITION_INTERFACE)
        self.tid = transition_id
        self.path = names.transition_path(transition_id)
        self.registry = registry
        self.phase = ""  # last phase seen in an event (for transitions not live here)
        self.progress = 0
        self._published: dict[str, Any] = {}
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def describe(cls) -> intr.Interface:
        iface = cls.__new__(cls)
        ServiceInterface.__init__(iface, names.TRANSITION_INTERFACE)
        return iface.introspect()

    # ------------------------------------------------------------ sources --

    def _live(self) -> Transition | None:
        return self.registry.manager.transitions.get(self.tid)

    def _journal(self) -> Journal | None:
        t = self._live()
        return t.ctx.journal if t is not None else self.registry.journal(self.tid)

    def _target(self) -> dict[str, Any]:
        t = self._live()
        if t is not None and t.ctx.target is not None:
            return t.ctx.target.to_json()
        j = self._journal()
        target = j.record.target if j is not None else None
        return target.to_json() if target is not None else {}

    def _state(self) -> str:
        j = self._journal()
        return str(j.state) if j is not None else ""

    def _phase(self) -> str:
        t = self._live()
        if t is not None and t.phase is not None:
            return str(t.phase)
        return self.phase

    def _progress(self) -> int:
        t = self._live()
        return t.progress if t is not None else self.progress

    def report(self) -> str:
        j = self._journal()
        return json.dumps(history.summary(j), sort_keys=True) if j is not None else "{}"

    # --------------------------------------------------------- properties --

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> Str:
        return self.tid

    @dbus_property(access=PropertyAccess.READ)
    def TargetRelease(self) -> Str:
        return str(self._target().get("release") or "")

    @dbus_property(access=PropertyAccess.READ)
    def KernelPath(self) -> Str:
        return str(self._target().get("kernel_path") or "")

    @dbus_property(access=PropertyAccess.READ)
    def InitrdPath(self) -> Str:
        return str(self._target().get("initrd_path") or "")

    @dbus_property(access=PropertyAccess.READ)
    def CommandLine(self) -> Str:
        return str(self._target().get("cmdline") or "")

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> Str:
        return self._state()

    @dbus_property(access=PropertyAccess.READ)
    def Phase(self) -> Str:
        return self._phase()

    @dbus_property(access=PropertyAccess.READ)
    def Progress(self) -> UInt32:
        return max(0, min(100, self._progress()))

    @dbus_property(access=PropertyAccess.READ)
    def Report(self) -> Str:
        return self.report()

    # ---------------------------------------------------------- publish --

    def snapshot(self) -> dict[str, Any]:
        target = self._target()
        return {
            "TargetRelease": str(target.get("release") or ""),
            "KernelPath": str(target.get("kernel_path") or ""),
            "InitrdPath": str(target.get("initrd_path") or ""),
            "CommandLine": str(target.get("cmdline") or ""),
            "State": self._state(),
            "Phase": self._phase(),
            "Progress": max(0, min(100, self._progress())),
        }

    def publish(self, *, coalesce: bool = False) -> None:
        """Signal what changed since the last PropertiesChanged.

        With ``coalesce``, a change of Progress alone is held back for up to
        COALESCE_INTERVAL and merged with whatever follows.
        """
        now = self.snapshot()
        changed = {k: v for k, v in now.items() if self._published.get(k) != v}
        if not changed:
            return
        if coalesce and changed.keys() == {"Progress"}:
            if self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(COALESCE_INTERVAL, self._flush)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._published.update(changed)
        self.emit_properties_changed(changed, ["Report"])

    def _flush(self) -> None:
        self._timer = None
        self.publish()

    def seen(self) -> None:
        """Take the current values as published (the object was just exported)."""
        self._published = self.snapshot()


annotate_property(TransitionInterface.Id, EMITS_CHANGED, "const")
annotate_property(TransitionInterface.Report, EMITS_CHANGED, "invalidates")


class TransitionRegistry:
    """The exported transition objects, created on first sight of an id."""

    def __init__(self, bus: MessageBus, manager: Manager) -> None:
        self.bus = bus
        self.manager = manager
        self.objects: dict[str, TransitionInterface] = {}
        self._journals: dict[str, Journal] = {}

    def get(self, transition_id: str) -> TransitionInterface:
        obj = self.objects.get(transition_id)
        if obj is None:
            obj = TransitionInterface(transition_id, self)
            obj.seen()
            self.bus.export(obj.path, obj)
            self.objects[transition_id] = obj
        return obj

    def journal(self, transition_id: str) -> Journal | None:
        """The journal of a transition not live in this daemon (cached until refreshed)."""
        j = self._journals.get(transition_id)
        if j is None:
            path = transitions_dir(self.manager.config.state_dir) / transition_id / JOURNAL_NAME
            j = _load(path)
            if j is not None:
                self._journals[transition_id] = j
        return j

    def refresh(self, transition_id: str) -> None:
        """Forget the cached journal: the engine has written a newer one."""
        self._journals.pop(transition_id, None)


def _load(path: Path) -> Journal | None:
    try:
        return Journal.load(path)
    except (OSError, JournalCorrupt):
        return None
