"""The durable record of one transition: what was done, so it can be undone.

One file per transition, ``<state-dir>/transitions/<id>/journal.json``: the
first line is the transition's state (``records.TransitionRecord``), every
further line an event that changed it (``records.JournalEvent``), appended
with a single ``write``.  Reading folds the events into the state.  A
finished transition's journal is compacted into its one state line (a plain
JSON object), and so is a journal after a failed write (the rewrite, atomic,
replaces whatever half-written line the failure left).

Changes are applied in memory first, then written: after a failed write the
in-memory state is still the truth, and the next write (a compaction) carries
it to the disk.

Durability: the steps of a group and their undo records are written with one
fsync before any of them starts (without one when no step of the group has an
undo: then nothing of the group is ever undone, and the record only tells a
restarted daemon in this boot what ran); state changes are fsync'd; a step's
end (done) and a hook's process group are not: they survive a crash of the
daemon (the page cache has them) and the next durable write carries them to
the disk.  After a daemon crash a built-in step still shown as started is undone
regardless (built-in undos are idempotent).

A last line without its newline is a write torn by a crash: it is ignored.
Anything else that does not parse or validate makes the journal corrupt
(``JournalCorrupt``): recovery renames it aside (``journal.json.corrupt``)
and history shows it as ``corrupt``, with the reason.

While the filesystem holding the state directory is frozen nothing may be
written to it; the journal then keeps its lines in memory (``hold()``) and
writes them once it is thawed (``release()``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveupd import logs, schema
from liveupd.backends.base import FileBackend
from liveupd.backends.files import DurableFiles
from liveupd.fsio import fsync_dir
from liveupd.transition.failures import describe as describe_error
from liveupd.transition.phases import Phase, StepStatus, TransitionState
from liveupd.transition.records import (
    Changed,
    EventTypes,
    JournalEvent,
    PhaseTimed,
    StepChanged,
    StepEntry,
    StepsStarted,
    StepStart,
    TransitionRecord,
    UnknownStep,
    apply,
)
from liveupd.transition.undo import AnyUndo

LOG = logs.get("journal")
JOURNAL_NAME = "journal.json"
CORRUPT_SUFFIX = ".corrupt"
MAX_BYTES = 64 * 1024 * 1024  # a journal this large is not one liveupd wrote
REASON_CAP = 300
MAX_ERRORS = 20  # failed writes remembered in the journal itself


def transitions_dir(state_dir: Path) -> Path:
    return state_dir / "transitions"


class JournalCorrupt(Exception):
    """A journal that cannot be parsed or does not validate."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def describe(error: schema.Invalid) -> str:
    """What is wrong, by field, without echoing the file's content."""
    parts = []
    for err in error.errors[:3]:
        parts.append(f"{schema.where(err.loc)}: {err.msg}" if err.loc else err.msg)
    more = len(error.errors) - len(parts)
    text = "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
    return text[:REASON_CAP]


def _load_line(cls: Any, line: bytes) -> Any:
    """One line (UTF-8 JSON) as a ``cls``: schema.Invalid when it is not."""
    try:
        text = line.decode()
    except UnicodeDecodeError as e:
        raise schema.Invalid([schema.Error((), "json", f"Invalid JSON: {e}")]) from None
    return schema.load_json(cls, text)


def parse(path: Path, data: bytes) -> TransitionRecord:
    """The state a journal file describes; JournalCorrupt naming the line and field."""
    lines = data.split(b"\n")
    complete = lines[:-1]  # what follows the last newline is a torn write (or nothing)
    if not complete:
        raise JournalCorrupt(path, "empty or truncated: no complete record")
    try:
        record: TransitionRecord = _load_line(TransitionRecord, complete[0])
    except schema.Invalid as e:
        raise JournalCorrupt(path, f"line 1: {describe(e)}") from None
    index = {s.key: s for s in record.steps}
    for number, line in enumerate(complete[1:], 2):
        try:
            # Validated once, here: apply() folds it in as it is.
            apply(record, index, _load_line(JournalEvent, line))
        except schema.Invalid as e:
            raise JournalCorrupt(path, f"line {number}: {describe(e)}") from None
        except UnknownStep as e:
            raise JournalCorrupt(path, f"line {number}: {e}") from None
    return record


def read(path: Path) -> TransitionRecord:
    """Read and validate a journal (OSError if it cannot be read, JournalCorrupt if bad)."""
    with path.open("rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise JournalCorrupt(path, f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
    record = parse(path, data)
    if record.id != path.parent.name:
        raise JournalCorrupt(path, "line 1: id: does not match the transition's directory")
    return record


@dataclass(frozen=True)
class CorruptJournal:
    """A transition whose journal is unusable; ``quarantined`` once renamed aside."""

    id: str
    path: Path  # journal.json, or journal.json.corrupt once quarantined
    reason: str
    quarantined: bool

    @property
    def dir(self) -> Path:
        return self.path.parent


@dataclass(frozen=True)
class Scan:
    journals: list[Journal]
    corrupt: list[CorruptJournal]


class Journal:
    def __init__(
        self, path: Path, record: TransitionRecord, files: FileBackend | None = None
    ) -> None:
        self.path = path
        self.record = record
        self.files: FileBackend = files if files is not None else DurableFiles()
        self._index = {s.key: s for s in record.steps}
        self._held = False
        self._pending: list[bytes] = []
        self._compact = False  # the file may not match memory: rewrite it whole

    # ------------------------------------------------------------ creation --

    @classmethod
    def create(
        cls, state_dir: Path, transition_id: str, *, files: FileBackend | None = None, **fields: Any
    ) -> Journal:
        path = transitions_dir(state_dir) / transition_id / JOURNAL_NAME
        record = schema.load(
            TransitionRecord,
            {
                "id": transition_id,
                "state": TransitionState.STAGED,
                "created": time.time(),
                **fields,
            },
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = cls(path, record, files)
        journal._rewrite()
        return journal

    @classmethod
    def load(cls, path: Path, files: FileBackend | None = None) -> Journal:
        return cls(path, read(path), files)

    @staticmethod
    def scan(state_dir: Path, files: FileBackend | None = None) -> Scan:
        """Every transition's journal: the valid ones and the corrupt ones (unordered)."""
        journals: list[Journal] = []
        corrupt: list[CorruptJournal] = []
        try:
            dirs = list(transitions_dir(state_dir).iterdir())
        except FileNotFoundError:
            return Scan(journals, corrupt)
        for d in dirs:
            if not d.is_dir():
                continue  # not a transition
            path = d / JOURNAL_NAME
            try:
                journals.append(Journal.load(path, files))
                continue
            except FileNotFoundError:
                pass
            except JournalCorrupt as e:
                corrupt.append(CorruptJournal(d.name, path, e.reason, quarantined=False))
                continue
            except OSError as e:
                corrupt.append(
                    CorruptJournal(d.name, path, f"unreadable: {e.strerror}", quarantined=False)
                )
                continue
            aside = d / (JOURNAL_NAME + CORRUPT_SUFFIX)
            if aside.exists():
                corrupt.append(CorruptJournal(d.name, aside, _reason(aside), quarantined=True))
        return Scan(journals, corrupt)

    @classmethod
    def all(cls, state_dir: Path) -> Iterator[Journal]:
        """Every valid journal in the state directory (unordered)."""
        yield from cls.scan(state_dir).journals

    # ------------------------------------------------------------- writing --

    def _write(self, event: EventTypes, *, durable: bool) -> None:
        apply(self.record, self._index, event)
        if self.record.state.terminal:
            # A finished transition's journal is one JSON object again.
            if self._held:
                self._compact = True
                return
            self._rewrite()
            return
        line = schema.dump_json(event) + b"\n"
        if self._held:
            self._pending.append(line)
            return
        if self._compact:
            self._rewrite()
            return
        try:
            self.files.append(self.path, line, durable=durable)
        except BaseException as e:
            self._compact = True  # a part of the line may be in the file
            self._failed(_what(event), e)
            raise

    def _rewrite(self) -> None:
        data = schema.dump_json(self.record) + b"\n"
        self._compact = True
        try:
            self.files.replace(self.path, data, durable=True)
        except BaseException as e:
            self._failed("the whole journal", e)
            raise
        self._compact = False
        self._pending.clear()

    def _failed(self, what: str, error: BaseException) -> None:
        """Remember a failed write in the state itself: the next write that works says so."""
        if len(self.record.journal_errors) < MAX_ERRORS:
            self.record.journal_errors.append(f"writing {what}: {describe_error(error)}")

    def flush(self) -> None:
        """Write the whole state now (after a failed write); a no-op while held."""
        if not self._held:
            self._rewrite()

    def hold(self) -> None:
        """Keep further changes in memory: the filesystem is about to freeze."""
        self._held = True

    def release(self) -> None:
        """The filesystem is writable again: write what was held.

        Never raises: the state is in memory; if the write fails it is logged
        and the next write rewrites the whole journal.
        """
        self._held = False
        if not self._pending and not self._compact:
            return
        try:
            if self._compact:
                self._rewrite()
            else:
                try:
                    self.files.append(self.path, b"".join(self._pending), durable=True)
                except BaseException as e:
                    self._failed("what was held while frozen", e)
                    raise
                self._pending.clear()
        except Exception as e:
            self._compact = True
            logs.event(LOG, "journal.write-failed", transition=self.id, error=_strerror(e))

    def update(self, **fields: Any) -> None:
        self._write(schema.load(Changed, fields), durable=True)

    # --------------------------------------------------------------- state --

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def state(self) -> TransitionState:
        return self.record.state

    def set_state(self, state: TransitionState, **fields: Any) -> None:
        if state.terminal and self.record.finished is None:
            fields.setdefault("finished", time.time())
        self._write(schema.load(Changed, {**fields, "state": state}), durable=True)

    def phase_time(self, phase: Phase, usec: int) -> None:
        self._write(PhaseTimed(phase=phase, usec=usec), durable=False)

    def adopt(self, other: Journal) -> None:
        """Take the state another reader found on disk (it is newer than ours)."""
        self.record = other.record
        self._index = {s.key: s for s in self.record.steps}

    # --------------------------------------------------------------- steps --

    def step(self, key: str) -> StepEntry:
        return self._index[key]

    def step_started(self, key: str, phase: Phase, undo: AnyUndo | None) -> None:
        self.steps_started([(key, phase, undo)])

    def steps_started(self, steps: Sequence[tuple[str, Phase, AnyUndo | None]]) -> None:
        """Journal steps about to start (a group that runs concurrently): one write,
        durable when any of them has an undo (it must be on disk before the step runs)."""
        event = StepsStarted(
            at=time.time(), steps=tuple(StepStart(key=k, phase=p, undo=u) for k, p, u in steps)
        )
        self._write(event, durable=any(u is not None for _, _, u in steps))

    def step_update(self, key: str, *, durable: bool = True, **fields: Any) -> None:
        self._write(schema.load(StepChanged, {**fields, "key": key}), durable=durable)

    def step_status(
        self, key: str, status: StepStatus, *, durable: bool = True, **fields: Any
    ) -> None:
        self.step_update(key, status=status, durable=durable, **fields)

    def steps(self) -> list[StepEntry]:
        return list(self.record.steps)

    def to_undo(self, *, after_crash: bool) -> list[StepEntry]:
        """Steps whose undo must run, most recent first.

        Completed steps are undone.  A built-in step is undone too when it failed
        with an error it did not handle (it may have left part of its work done;
        built-in undos are idempotent and cope with partial work) and, after a
        crash, when it had started and not finished.  A built-in step that failed
        with a liveupd error undid its own partial work already; a hook that
        failed or had not finished never completed.  A step already undone is
        never undone again.
        """
        out = []
        for entry in reversed(self.record.steps):
            if entry.undo is None:
                continue
            builtin = entry.undo.kind != "hook"
            if entry.status in (StepStatus.DONE, StepStatus.UNDOING) or (
                builtin
                and (
                    (entry.status is StepStatus.FAILED and entry.partial)
                    or (after_crash and entry.status is StepStatus.STARTED)
                )
            ):
                out.append(entry)
        return out


def _reason(path: Path) -> str:
    """Why a quarantined journal was set aside (parsed again: the reason is not stored)."""
    try:
        read(path)
    except JournalCorrupt as e:
        return e.reason
    except OSError as e:
        return f"unreadable: {e.strerror}"
    return "set aside as corrupt (it reads correctly now; inspect it and remove it)"


def _what(event: EventTypes) -> str:
    if isinstance(event, StepsStarted):
        return "the start of " + ", ".join(s.key for s in event.steps)
    if isinstance(event, StepChanged):
        return f"step {event.key} ({event.status or 'details'})"
    if isinstance(event, PhaseTimed):
        return f"the time of phase {event.phase}"
    return f"state {event.state}" if event.state else "the transition's details"


def _strerror(e: BaseException) -> str:
    return (e.strerror or str(e)) if isinstance(e, OSError) else repr(e)


def quarantine(corrupt: CorruptJournal) -> CorruptJournal:
    """Rename a corrupt journal aside (``journal.json.corrupt``), durably."""
    if corrupt.quarantined:
        return corrupt
    aside = corrupt.path.with_name(corrupt.path.name + CORRUPT_SUFFIX)
    corrupt.path.replace(aside)
    with contextlib.suppress(OSError):
        fsync_dir(aside.parent)
    return CorruptJournal(corrupt.id, aside, corrupt.reason, quarantined=True)
