"""The durable record of one transition: what was done, so it can be undone.

One JSON file per transition, ``<state-dir>/transitions/<id>/journal.json``,
rewritten atomically (temp file, fsync, rename, fsync directory) *before* the
steps of a group start, and rewritten again when each ends.  After a crash the
daemon reads it back and undoes exactly the steps it shows as done.

A step's end (done) is written without fsync: the rewrite survives a crash of
the daemon (the page cache has it), and the next durable write (the next
group's start, the checkpoint phase, the final state) carries it to the disk.
Only a power cut in that window loses it, and then the machine has been
through its firmware anyway.  After a daemon crash a built-in step still shown
as started is undone regardless (built-in undos are idempotent).

While the filesystem holding the state directory is frozen nothing may be
written to it; the journal then keeps changes in memory (``hold()``) and
writes them once it is thawed (``release()``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from liveupd.fsio import atomic_write_json, read_json
from liveupd.transition.phases import Phase, StepStatus, TransitionState

JOURNAL_NAME = "journal.json"


def transitions_dir(state_dir: Path) -> Path:
    return state_dir / "transitions"


class Journal:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self._held = False
        self._dirty = False

    # ------------------------------------------------------------ creation --

    @classmethod
    def create(cls, state_dir: Path, transition_id: str, **fields: Any) -> Journal:
        path = transitions_dir(state_dir) / transition_id / JOURNAL_NAME
        data: dict[str, Any] = {
            "id": transition_id,
            "state": TransitionState.STAGED,
            "created": time.time(),
            "steps": [],
            "phases": {},
            "error": None,
        }
        data.update(fields)
        journal = cls(path, data)
        journal.save()
        return journal

    @classmethod
    def load(cls, path: Path) -> Journal:
        return cls(path, read_json(path))

    @classmethod
    def all(cls, state_dir: Path) -> Iterator[Journal]:
        """Every readable journal in the state directory (unordered)."""
        try:
            dirs = list(transitions_dir(state_dir).iterdir())
        except FileNotFoundError:
            return
        for d in dirs:
            path = d / JOURNAL_NAME
            try:
                yield cls.load(path)
            except (OSError, ValueError):
                continue

    # ------------------------------------------------------------- writing --

    def save(self, *, durable: bool = True) -> None:
        if self._held:
            self._dirty = True
            return
        # Compact JSON: the journal is rewritten before and after every step.
        atomic_write_json(self.path, self.data, mode=0o600, compact=True, durable=durable)
        self._dirty = False

    def hold(self) -> None:
        """Keep further changes in memory: the filesystem is about to freeze."""
        self._held = True

    def release(self) -> None:
        """The filesystem is writable again: write what was held."""
        self._held = False
        if self._dirty:
            self.save()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    # --------------------------------------------------------------- state --

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def state(self) -> TransitionState:
        return TransitionState(self.data["state"])

    def set_state(self, state: TransitionState, **fields: Any) -> None:
        self.data["state"] = state
        self.data.update(fields)
        if state.terminal:
            self.data.setdefault("finished", time.time())
        self.save()

    def phase_time(self, phase: Phase, usec: int) -> None:
        self.data["phases"][str(phase)] = self.data["phases"].get(str(phase), 0) + usec

    # --------------------------------------------------------------- steps --

    def _step(self, key: str) -> dict[str, Any]:
        for entry in reversed(self.data["steps"]):
            if entry["key"] == key:
                found: dict[str, Any] = entry
                return found
        raise KeyError(key)

    def step_started(self, key: str, phase: Phase, undo: dict[str, Any] | None) -> None:
        self.steps_started([(key, phase, undo)])

    def steps_started(self, steps: list[tuple[str, Phase, dict[str, Any] | None]]) -> None:
        """Journal steps about to start (a group that runs concurrently): one durable write."""
        now = time.time()
        for key, phase, undo in steps:
            self.data["steps"].append(
                {
                    "key": key,
                    "phase": str(phase),
                    "status": StepStatus.STARTED,
                    "undo": undo,
                    "started": now,
                }
            )
        self.save()

    def step_update(self, key: str, *, durable: bool = True, **fields: Any) -> None:
        self._step(key).update(fields)
        self.save(durable=durable)

    def step_status(
        self, key: str, status: StepStatus, *, durable: bool = True, **fields: Any
    ) -> None:
        self.step_update(key, status=status, durable=durable, **fields)

    def steps(self) -> list[dict[str, Any]]:
        return list(self.data["steps"])

    def to_undo(self, *, after_crash: bool) -> list[dict[str, Any]]:
        """Steps whose undo must run, most recent first.

        Completed steps are undone.  After a crash, a built-in step that had
        started but not finished is undone too (built-in undos are idempotent
        and cope with partial work); a hook that had not finished is not, it
        never completed.  A step already undone is never undone again.
        """
        out = []
        for entry in reversed(self.data["steps"]):
            if entry.get("undo") is None:
                continue
            status = StepStatus(entry["status"])
            if status in (StepStatus.DONE, StepStatus.UNDOING) or (
                after_crash and status is StepStatus.STARTED and entry["undo"]["kind"] != "hook"
            ):
                out.append(entry)
        return out
