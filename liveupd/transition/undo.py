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

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from liveupd.backends.base import Binding, WatchdogRecord
from liveupd.transition.phases import Phase
from liveupd.validation import UnitName


class UndoBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HookUndo(UndoBase):
    """Run the hook's ``undo`` program."""

    kind: Literal["hook"] = "hook"
    hook: str
    phase: Phase
    argv: tuple[str, ...]
    timeout: float


class RebindUndo(UndoBase):
    """Bind the devices again (parents first) and bring their links up."""

    kind: Literal["rebind"] = "rebind"
    bindings: tuple[Binding, ...]


class ThawUndo(UndoBase):
    """Thaw the filesystems (most recent first); a thaw of one not frozen is a no-op."""

    kind: Literal["thaw"] = "thaw"
    mountpoints: tuple[str, ...]


class UnloadUndo(UndoBase):
    """Unload the staged kernel."""

    kind: Literal["kexec-unload"] = "kexec-unload"


class CheckpointUndo(UndoBase):
    """Drop the pending pointer and the exec stamp: nothing waits for verification."""

    kind: Literal["checkpoint"] = "checkpoint"


class WatchdogUndo(UndoBase):
    """Stop the watchdog armed for the jump (bind its device again, magic close)."""

    kind: Literal["watchdog"] = "watchdog"
    watchdog: WatchdogRecord


class StartUnitsUndo(UndoBase):
    """Start the remote-login listener units stopped for the transition, in this order."""

    kind: Literal["start-units"] = "start-units"
    units: tuple[UnitName, ...] = Field(max_length=16)


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
UndoRecord = Annotated[AnyUndo, Field(discriminator="kind")]
UNDO_TYPES: tuple[type[UndoBase], ...] = get_args(AnyUndo)
