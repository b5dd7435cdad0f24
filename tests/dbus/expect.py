"""Reading the recorder's signals: what the tests assert on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.dbus.buses import MANAGER, OBJECT_PATH, TRANSITION

__all__ = [
    "MANAGER",
    "Signal",
    "SignalPredicate",
    "changed",
    "is_member",
    "is_state",
    "manager_signals",
    "manager_states",
    "phases",
    "transition_states",
]

Signal = dict[str, Any]
SignalPredicate = Callable[[Signal], bool]


def changed(signals: list[Signal], path: str, interface: str, prop: str) -> list[Any]:
    """The values ``prop`` took in PropertiesChanged on ``path``, in order."""
    return [
        s["body"][1][prop]
        for s in signals
        if s["member"] == "PropertiesChanged"
        and s["path"] == path
        and s["body"][0] == interface
        and prop in s["body"][1]
    ]


def manager_states(signals: list[Signal]) -> list[str]:
    return changed(signals, OBJECT_PATH, MANAGER, "State")


def transition_states(signals: list[Signal], path: str) -> list[str]:
    return changed(signals, path, TRANSITION, "State")


def manager_signals(signals: list[Signal], member: str, path: str) -> list[list[Any]]:
    """Bodies of Manager signal ``member`` about transition ``path``."""
    return [
        s["body"]
        for s in signals
        if s["path"] == OBJECT_PATH
        and s["interface"] == MANAGER
        and s["member"] == member
        and s["body"][0] == path
    ]


def phases(signals: list[Signal], path: str) -> list[str]:
    return [b[1] for b in manager_signals(signals, "PhaseChanged", path)]


def is_state(path: str, state: str) -> SignalPredicate:
    def match(s: Signal) -> bool:
        return bool(
            s["member"] == "PropertiesChanged"
            and s["path"] == path
            and s["body"][0] == TRANSITION
            and s["body"][1].get("State") == state
        )

    return match


def is_member(member: str, path: str | None = None) -> SignalPredicate:
    def match(s: Signal) -> bool:
        return s["member"] == member and (path is None or s["body"][0] == path)

    return match
