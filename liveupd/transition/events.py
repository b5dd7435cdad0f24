"""Progress events of a transition, for the D-Bus layer to turn into signals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from liveupd.transition.phases import Phase, TransitionState


@dataclass(frozen=True)
class PhaseChanged:
    transition: str
    phase: Phase


@dataclass(frozen=True)
class StepFinished:
    """A hook (``kind == "hook"``) or built-in step ran or was undone."""

    transition: str
    kind: str
    name: str
    phase: Phase
    result: str  # success, failed, timeout, error, cancelled, undone, undo-failed
    usec: int
    action: str = "run"  # run | undo


@dataclass(frozen=True)
class StateChanged:
    transition: str
    state: TransitionState
    progress: int


@dataclass(frozen=True)
class TransitionFailed:
    transition: str
    error: str  # the D-Bus error name
    message: str


@dataclass(frozen=True)
class Verified:
    """The dry run's simulated new boot verified the transition (``ok``: completed)."""

    transition: str
    ok: bool


Event = PhaseChanged | StepFinished | StateChanged | TransitionFailed | Verified
EventSink = Callable[[Event], None]


def discard(_event: Event) -> None:
    """An event sink that drops everything."""
