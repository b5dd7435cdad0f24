"""Undo records: what the journal keeps so that a step can be reversed.

Before a step with side effects starts, the engine journals its undo record
(one of the types below, told apart by ``kind``).  Rollback and crash recovery
both undo by handing the journaled record to its handler, so what a crashed
daemon undoes is exactly what a live one would have undone.  Which function
handles which kind is an explicit table (``UndoTable``) built where the
built-in steps are assembled (``liveupd.assembly``); it must cover every kind.

The records are data only: this module knows their shapes, not the devices,
storage or kernel code that undoes them (``rollback.py`` runs them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from liveupd.backends.base import Binding, WatchdogRecord
from liveupd.schema import Rule, Tagged
from liveupd.transition.phases import Phase
from liveupd.validation import UnitName


@dataclass(frozen=True, kw_only=True)
class UndoBase:
    """What every undo record is (validated by ``liveupd.schema``, told apart by ``kind``)."""


@dataclass(frozen=True, kw_only=True)
class HookUndo(UndoBase):
    """Run the hook's ``undo`` program."""

    kind: Literal["hook"] = "hook"
    hook: str
    phase: Phase
    argv: tuple[str, ...]
    timeout: float


@dataclass(frozen=True, kw_only=True)
class RebindUndo(UndoBase):
    """Bind the devices again (parents first) and bring their links up."""

    kind: Literal["rebind"] = "rebind"
    bindings: tuple[Binding, ...]


@dataclass(frozen=True, kw_only=True)
class ThawUndo(UndoBase):
    """Thaw the filesystems (most recent first); a thaw of one not frozen is a no-op."""

    kind: Literal["thaw"] = "thaw"
    mountpoints: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class UnloadUndo(UndoBase):
    """Unload the staged kernel."""

    kind: Literal["kexec-unload"] = "kexec-unload"


@dataclass(frozen=True, kw_only=True)
class CheckpointUndo(UndoBase):
    """Drop the pending pointer and the exec stamp: nothing waits for verification."""

    kind: Literal["checkpoint"] = "checkpoint"


@dataclass(frozen=True, kw_only=True)
class WatchdogUndo(UndoBase):
    """Stop the watchdog armed for the jump (bind its device again, magic close)."""

    kind: Literal["watchdog"] = "watchdog"
    watchdog: WatchdogRecord


@dataclass(frozen=True, kw_only=True)
class StartUnitsUndo(UndoBase):
    """Start the remote-login listener units stopped for the transition, in this order."""

    kind: Literal["start-units"] = "start-units"
    units: Annotated[tuple[UnitName, ...], Rule(max_length=16)]


@dataclass(frozen=True, kw_only=True)
class PreserveUndo(UndoBase):
    """Resume the services dumped with --leave-stopped (SIGCONT) and remove their images."""

    kind: Literal["preserve"] = "preserve"
    units: tuple[str, ...]


AnyUndo = (
    HookUndo
    | RebindUndo
    | ThawUndo
    | UnloadUndo
    | CheckpointUndo
    | WatchdogUndo
    | StartUnitsUndo
    | PreserveUndo
)
UndoRecord = Annotated[AnyUndo, Tagged("kind")]
UNDO_TYPES: tuple[type[UndoBase], ...] = get_args(AnyUndo)
