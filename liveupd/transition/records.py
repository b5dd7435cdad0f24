"""Typed records of one transition: what its journal holds, validated when read.

``TransitionRecord`` is the whole state of a transition.  On disk the journal
is that state (the first line) followed by the events that changed it since
(``JournalEvent``, one per line), folded into the state on read: a step's end
appends one small line instead of re-encoding the whole journal
(``journal.py``).  Every record is a dataclass validated by ``liveupd.schema``
when read; anything that does not validate makes the journal corrupt (it is
quarantined, never half-used).  Building one in code does not validate it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Annotated, Any, Literal

from liveupd import schema
from liveupd.schema import Rule, Tagged
from liveupd.transition.phases import ExecMode, Phase, StepStatus, TransitionState
from liveupd.transition.undo import UndoRecord
from liveupd.validation import UnitName

# ------------------------------------------------------------ the request --


@dataclass(frozen=True)
class StageRequest:
    """What a caller asked to stage; empty strings mean 'choose for me'."""

    kernel: str = ""  # a path, a release, or "" for the latest installed
    initrd: str = ""  # "" pairs automatically
    cmdline: str = ""  # "" reuses the running command line
    append: str = ""
    sha256: str = ""
    profile: str = ""  # a unified kernel image's profile ("" = its default, @0)

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class Target:
    """The kernel a transition goes to, resolved and validated.

    Journal lines are written without their None fields, so every optional field
    has a default here: a UKI staged without an initrd reads back as it was written.
    """

    release: str
    kernel_path: str
    cmdline: str
    sha256: str
    initrd_path: str | None = None
    # A unified kernel image: the profile it boots ("@N", "" without profiles) and
    # whether its own .ucode + .initrd are used (False: staged with initrd "none").
    profile: str = ""
    uki_initrd: bool = True
    # The words liveupd added to ``cmdline`` itself (panic=, the watchdog's): the next
    # update, built from this boot's /proc/cmdline, drops exactly these.
    added: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "added": list(self.added)}  # as JSON reads it back

    @classmethod
    def from_json(cls, data: Any) -> Target:
        """A target as ``to_json`` wrote it (a checkpoint's); ``schema.Invalid`` (a
        ValueError) naming each field that is wrong."""
        return schema.load(cls, data)


@dataclass(frozen=True, kw_only=True)
class Record:
    """A journaled record: frozen, validated by ``liveupd.schema`` when read."""


# ------------------------------------------------------------- failures --


@dataclass(frozen=True, kw_only=True)
class Failure(Record):
    """Why a transition did not go through: the error, and the step it came from."""

    kind: str  # the short error kind (Failed, HookFailed, Cancelled, ...)
    dbus_name: str
    message: str
    step: str | None = None  # the step's key (``hook:10-db``, ``devices:devices``)


# ------------------------------------------------------------- sessions --


@dataclass(frozen=True, kw_only=True)
class EndedSession(Record):
    """A remote login session the transition ended before the network went down."""

    id: str
    user: str
    uid: int
    service: str  # the PAM service (sshd)
    remote_host: str = ""
    leader: int = 0
    caller: bool = False  # the session the update was started from (ended last)
    gone: bool = True  # False: still there when liveupd stopped waiting
    error: str | None = None  # logind refused to end it


# ------------------------------------------------------------- preserve --


class PreserveOutcome(StrEnum):
    DUMPED = "dumped"  # dumped on the old kernel; the new one has not checked it yet
    RESTORED = "restored"  # the same process came back with its memory
    STARTED_FRESH = "started-fresh"  # its state was lost: started the ordinary way


@dataclass(frozen=True, kw_only=True)
class PreservedService(Record):
    """A ``[preserve] units`` service: its CRIU dump on the old kernel (set by the
    preserve step) and its restore on the new one (set by verification)."""

    unit: Annotated[str, Rule(pattern=r"^[A-Za-z0-9:_.\\@-]{1,256}$")]
    dump_usec: Annotated[int, Rule(ge=0)]
    image_bytes: Annotated[int, Rule(ge=0)]
    outcome: PreserveOutcome = PreserveOutcome.DUMPED
    restore_usec: Annotated[int, Rule(ge=0)] | None = None  # restored only


# --------------------------------------------------------- verification --


class Check(StrEnum):
    KERNEL = "kernel"  # the running kernel is the target
    BOOT_ID = "boot-id"  # the boot changed
    CHECKPOINT = "checkpoint"  # the transition's record is readable
    SETTLE = "udev-settle"  # udev settled within verify.settle-timeout
    DEVICE = "device"  # each recorded device is bound to its driver again
    INTERFACE = "interface"  # each recorded network interface is back
    MAC = "mac"  # ... with the same MAC address
    HOOK = "hook"  # the verify and restore hooks succeeded
    WATCHDOG = "watchdog"  # the watchdog armed for the jump was taken over


DEVICE_CHECKS = (Check.DEVICE, Check.INTERFACE, Check.MAC)


@dataclass(frozen=True, kw_only=True)
class Problem(Record):
    """One thing verification found wrong.  ``sys_path`` and ``step`` say what it is
    about, so nothing is ever decided by reading the message."""

    check: Check
    message: str
    sys_path: str | None = None  # the recorded device (device, interface, mac)
    step: str | None = None  # the hook (hook)


@dataclass(frozen=True, kw_only=True)
class DowntimeRecord(Record):
    exec_stamp: float
    exec_stamp_source: str  # "exec-stamp" or "checkpoint" (an estimate)
    kernel_started: float
    verified: float
    uptime_at_verified: float
    downtime_s: float
    exec_to_kernel_s: float
    kernel_to_verified_s: float


@dataclass(frozen=True, kw_only=True)
class RollbackResult(Record):
    """``verify.on-failure = "rollback"``: what was done about a failed verification."""

    requested: float | None = None  # set before anything is staged: never twice
    transition: str | None = None  # the transition back
    mode: ExecMode | None = None
    state: TransitionState | None = None
    error: str | None = None
    skipped: str | None = None  # why there was no rollback


@dataclass(frozen=True, kw_only=True)
class Verification(Record):
    started: float
    running_release: str
    boot_id: str
    target_release: str | None = None
    superseded: str | None = None
    fell_back: str | None = None  # why the machine came back on the old kernel
    finished: float | None = None
    problems: tuple[Problem, ...] = ()
    # What did not fail verification but needs a look: what went wrong after the
    # point of no return on the old kernel (the system-shutdown helper's failures,
    # transition/late_failures.py), a watchdog that could not be released.
    warnings: tuple[str, ...] = ()
    watchdog: str | None = None  # what became of the watchdog armed for the jump
    downtime: DowntimeRecord | None = None
    policy: str | None = None
    rollback: RollbackResult | None = None


# ----------------------------------------------------------- the journal --


@dataclass(kw_only=True)
class StepEntry:
    """One step as journaled.  Mutable: the journal updates it in place."""

    key: str
    phase: Phase
    status: StepStatus
    undo: UndoRecord | None = None
    started: float
    usec: int | None = None
    error: str | None = None
    undo_error: str | None = None
    pgid: int | None = None  # a hook's process group (its leader's pid) ...
    leader_started: float | None = None  # ... and when that leader started (psutil)
    warnings: list[str] = field(default_factory=list)  # problems that did not fail it
    # Failed with an error the step did not handle itself: it may have left part of
    # its work done, so its (idempotent) undo runs.  A step that raises a liveupd
    # error has undone its own partial work first.
    partial: bool | None = None


@dataclass(kw_only=True)
class TransitionRecord:
    """The whole state of one transition."""

    id: Annotated[str, Rule(pattern=r"^[A-Za-z0-9_]{1,64}$")]  # a D-Bus path element
    state: TransitionState
    created: float
    boot_id: str = ""
    old_release: str = ""
    request: StageRequest | None = None
    dry_run: bool = False
    target: Target | None = None
    mode: ExecMode | None = None
    execute_requested: float | None = None
    steps: list[StepEntry] = field(default_factory=list)
    phases: dict[str, int] = field(default_factory=dict)  # phase -> microseconds
    error: Failure | None = None
    undone: list[str] = field(default_factory=list)
    undo_failures: list[str] = field(default_factory=list)
    finished: float | None = None
    verification: Verification | None = None
    rollback_of: str | None = None
    sessions_ended: list[EndedSession] = field(default_factory=list)
    # The remote-login listeners stopped before the sessions were ended (started
    # again if the transition rolled back).
    units_stopped: list[UnitName] = field(default_factory=list)
    preserved: list[PreservedService] = field(default_factory=list)  # [preserve] units
    # Writes of this journal that failed (what, why): the state is what was in memory.
    journal_errors: list[str] = field(default_factory=list)


# ------------------------------------------------------ journal events --


@dataclass(frozen=True, kw_only=True)
class StepStart(Record):
    key: str
    phase: Phase
    undo: UndoRecord | None = None


@dataclass(frozen=True, kw_only=True)
class StepsStarted(Record):
    """A group is about to start: its steps and their undo records, in one write."""

    event: Literal["started"] = "started"
    at: float
    steps: tuple[StepStart, ...]


@dataclass(frozen=True, kw_only=True)
class StepChanged(Record):
    """A step's status or details changed (only the fields given)."""

    event: Literal["step"] = "step"
    key: str
    status: StepStatus | None = None
    usec: int | None = None
    error: str | None = None
    undo_error: str | None = None
    pgid: int | None = None
    leader_started: float | None = None
    warning: str | None = None  # added to the step's warnings
    partial: bool | None = None
    # The undo record of a step that learns what it will do only as it runs (the
    # listeners that are active): journaled, durably, before it does it.
    undo: UndoRecord | None = None


@dataclass(frozen=True, kw_only=True)
class Changed(Record):
    """Fields of the transition changed (only the fields given)."""

    event: Literal["set"] = "set"
    state: TransitionState | None = None
    target: Target | None = None
    mode: ExecMode | None = None
    execute_requested: float | None = None
    error: Failure | None = None
    undone: tuple[str, ...] | None = None
    undo_failures: tuple[str, ...] | None = None
    finished: float | None = None
    verification: Verification | None = None
    rollback_of: str | None = None
    sessions_ended: tuple[EndedSession, ...] | None = None
    units_stopped: tuple[UnitName, ...] | None = None
    preserved: tuple[PreservedService, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class PhaseTimed(Record):
    """Time spent in a phase (added to what was there)."""

    event: Literal["phase"] = "phase"
    phase: Phase
    usec: int


JournalEvent = Annotated[StepsStarted | StepChanged | Changed | PhaseTimed, Tagged("event")]
EventTypes = StepsStarted | StepChanged | Changed | PhaseTimed

_STEP_FIELDS = (
    "status", "usec", "error", "undo_error", "pgid", "leader_started", "partial", "undo",
)  # fmt: skip
_SET_FIELDS = tuple(f.name for f in fields(Changed) if f.name != "event")


class UnknownStep(ValueError):
    pass


def apply(record: TransitionRecord, index: dict[str, StepEntry], event: EventTypes) -> None:
    """Fold one event into the state (``index``: the latest step entry of each key)."""
    if isinstance(event, StepsStarted):
        for s in event.steps:
            entry = StepEntry(
                key=s.key, phase=s.phase, status=StepStatus.STARTED, undo=s.undo, started=event.at
            )
            record.steps.append(entry)
            index[s.key] = entry
    elif isinstance(event, StepChanged):
        found = index.get(event.key)
        if found is None:
            raise UnknownStep(f"step {event.key[:80]!r} changed but was never started")
        for name in _STEP_FIELDS:
            value = getattr(event, name)
            if value is not None:
                setattr(found, name, value)
        if event.warning is not None:
            found.warnings.append(event.warning)
    elif isinstance(event, Changed):
        for name in _SET_FIELDS:
            value = getattr(event, name)
            if value is not None:
                setattr(record, name, list(value) if isinstance(value, tuple | list) else value)
    else:
        key = str(event.phase)
        record.phases[key] = record.phases.get(key, 0) + event.usec
