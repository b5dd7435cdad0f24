"""Engine events to D-Bus: signals on the Manager, properties on both objects.

Every event is handled synchronously, in the order the engine emits it, so
the signals a client sees for one transition are in the engine's order:

* PhaseChanged: the transition's Phase/Progress properties, then the
  ``PhaseChanged`` signal;
* StepFinished of a hook: ``HookFinished``; its progress is coalesced;
* StateChanged: the transition's State (and everything else that changed),
  then the Manager's State/StagedTransition;
* TransitionFailed: ``TransitionFailed``;
* Verified (the dry run's simulated new boot verified it): ``Recovered``, as
  the daemon of a new boot announces a verified transition.

Progress alone is coalesced (``transition_iface.COALESCE_INTERVAL``); state
and phase changes are never merged away.
"""

from __future__ import annotations

from liveupd import logs
from liveupd.service.manager_iface import ManagerInterface
from liveupd.service.transition_iface import TransitionRegistry
from liveupd.transition.events import (
    Event,
    PhaseChanged,
    StateChanged,
    StepFinished,
    TransitionFailed,
    Verified,
)

LOG = logs.get("signals")


class SignalRouter:
    """An EventSink for ``Manager.subscribe``."""

    def __init__(self, manager_iface: ManagerInterface, registry: TransitionRegistry) -> None:
        self.manager_iface = manager_iface
        self.registry = registry

    def __call__(self, event: Event) -> None:
        obj = self.registry.get(event.transition)
        self.registry.refresh(event.transition)
        path = obj.path
        if isinstance(event, PhaseChanged):
            obj.phase = str(event.phase)
            obj.publish()
            self.manager_iface.PhaseChanged(path, str(event.phase))
        elif isinstance(event, StepFinished):
            if event.kind == "hook":
                self.manager_iface.HookFinished(
                    path, event.name, str(event.phase), event.result, max(0, event.usec)
                )
            obj.publish(coalesce=True)
        elif isinstance(event, StateChanged):
            obj.progress = event.progress
            obj.publish()
        elif isinstance(event, TransitionFailed):
            obj.publish()
            self.manager_iface.TransitionFailed(path, event.error, event.message)
        elif isinstance(event, Verified):
            obj.publish()
            self.manager_iface.Recovered(path, event.ok, obj.report())
        self.manager_iface.publish(full=False)
