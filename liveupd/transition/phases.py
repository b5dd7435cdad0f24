"""Phases of a transition and the states it passes through."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    CHECK = "check"
    LOAD = "load"
    QUIESCE = "quiesce"
    UNBIND = "unbind"
    CHECKPOINT = "checkpoint"
    FLUSH = "flush"
    EXEC = "exec"
    VERIFY = "verify"
    RESTORE = "restore"
    ROLLBACK = "rollback"  # not a step phase: the transition is undoing what it did


# Staging runs these (Stage on D-Bus) ...
STAGE_PHASES = (Phase.CHECK, Phase.LOAD)
# ... Execute runs these on the old kernel ...
EXECUTE_PHASES = (Phase.QUIESCE, Phase.UNBIND, Phase.CHECKPOINT, Phase.FLUSH, Phase.EXEC)
OLD_KERNEL_PHASES = STAGE_PHASES + EXECUTE_PHASES
# ... and verification runs these on the new kernel.
NEW_KERNEL_PHASES = (Phase.VERIFY, Phase.RESTORE)
# Phases a hook manifest may name.
HOOK_PHASES = (
    Phase.QUIESCE,
    Phase.UNBIND,
    Phase.CHECKPOINT,
    Phase.FLUSH,
    Phase.VERIFY,
    Phase.RESTORE,
)


class ExecMode(StrEnum):
    DIRECT = "direct"  # the daemon freezes storage and fires reboot(KEXEC) itself
    SYSTEMD = "systemd"  # the daemon starts kexec.target; the shutdown helper finishes


class TransitionState(StrEnum):
    """Where one transition stands.  Terminal states never change again."""

    STAGED = "staged"  # kernel loaded, waiting for Execute
    RUNNING = "running"  # Execute in progress, still undoable
    EXEC = "exec"  # past the point of no return: the jump was requested
    FAILED = "failed"  # a step failed before exec; everything done was undone
    CANCELLED = "cancelled"  # cancelled on request; everything done was undone
    ROLLBACK_FAILED = "rollback-failed"  # a step failed and an undo failed too
    COMPLETED = "completed"  # verified on the new kernel
    RECOVERY_FAILED = "recovery-failed"  # the new kernel came up, verification failed
    SUPERSEDED = "superseded"  # the machine booted some other way
    FELL_BACK = "fell-back"  # the jump was made, and the machine came back on the old kernel
    ABORTED = "aborted"  # the daemon died mid-transition; its journal was rolled back

    @property
    def terminal(self) -> bool:
        return self not in (TransitionState.STAGED, TransitionState.RUNNING, TransitionState.EXEC)


class StepStatus(StrEnum):
    """A step's status in the journal."""

    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    UNDOING = "undoing"
    UNDONE = "undone"
    UNDO_FAILED = "undo-failed"
