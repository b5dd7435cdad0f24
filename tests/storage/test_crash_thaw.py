"""A daemon that died with filesystems frozen: the restart thaws before it writes anything."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from liveupd import fsio, schema
from liveupd.assembly import make_engine
from liveupd.backends import files
from liveupd.config import Config
from liveupd.recovery import recover
from liveupd.storage.recover import possibly_frozen
from liveupd.transition.context import TransitionContext
from liveupd.transition.journal import Journal
from liveupd.transition.phases import Phase, StepStatus, TransitionState
from liveupd.transition.records import TransitionRecord
from liveupd.transition.undo import ThawUndo
from tests.devices.fakes import FakeStorage, backends

BOOT = "00000000-0000-4000-8000-000000000001"  # the dry-run machine's boot_id


def crashed_journal(state_dir: Path, tid: str, status: StepStatus, boot_id: str = BOOT) -> Journal:
    journal = Journal.create(state_dir, tid, boot_id=boot_id, old_release="6.1.0-55-cloud-amd64")
    journal.set_state(TransitionState.RUNNING)
    journal.step_started("devices:devices", Phase.UNBIND, None)
    journal.step_status("devices:devices", StepStatus.DONE)
    journal.step_started("storage:storage", Phase.FLUSH, ThawUndo(mountpoints=("/data", "/")))
    if status is not StepStatus.STARTED:
        journal.step_status("storage:storage", status)
    return journal


@pytest.mark.parametrize("status", [StepStatus.STARTED, StepStatus.DONE])
def test_restart_thaws_first_and_never_writes_while_frozen(
    config: Config, monkeypatch: pytest.MonkeyPatch, status: StepStatus
) -> None:
    crashed_journal(config.state_dir, "T1", status)
    storage = FakeStorage()
    storage.frozen = ["/data", "/"]  # as the dead daemon left them

    real_write = fsio.atomic_write
    real_journal_append = files.append
    real_append = TransitionContext._append_log
    writes: list[list[str]] = []

    def write(path: Path, data: bytes, **kw: Any) -> None:
        writes.append(list(storage.frozen))
        real_write(path, data, **kw)

    def journal_append(path: Path, data: bytes, **kw: Any) -> None:
        writes.append(list(storage.frozen))
        real_journal_append(path, data, **kw)

    def append(self: TransitionContext, lines: list[str]) -> None:
        writes.append(list(storage.frozen))
        real_append(self, lines)

    monkeypatch.setattr(fsio, "atomic_write", write)
    monkeypatch.setattr(files, "append", journal_append)
    monkeypatch.setattr(TransitionContext, "_append_log", append)

    engine = make_engine(config, backends(config.state_dir, storage=storage), events=lambda e: None)
    _, report = asyncio.run(recover(engine))

    assert storage.ops[:2] == [("thaw", "/"), ("thaw", "/data")]  # state filesystem first
    assert storage.frozen == []
    assert writes and all(frozen == [] for frozen in writes), writes
    assert [(r.id, r.action, r.state) for r in report] == [
        ("T1", "rolled-back", TransitionState.ABORTED)
    ]


def test_only_this_boot_and_unfinished_transitions_are_considered(config: Config) -> None:
    crashed_journal(config.state_dir, "OTHER_BOOT", StepStatus.DONE, boot_id="another-boot")
    done = crashed_journal(config.state_dir, "FINISHED", StepStatus.DONE)
    done.step_status("storage:storage", StepStatus.UNDONE)
    done.set_state(TransitionState.FAILED)
    storage = FakeStorage()
    from liveupd.storage.recover import thaw_leftovers

    assert asyncio.run(thaw_leftovers(Journal.all(config.state_dir), BOOT, storage)) == []
    assert storage.ops == []


def test_possibly_frozen_reads_the_undo_records() -> None:
    record = schema.load(
        TransitionRecord,
        {
            "id": "x",
            "state": "running",
            "created": 1.0,
            "steps": [
                {
                    "key": "storage:storage",
                    "phase": "flush",
                    "status": "undone",
                    "started": 1.0,
                    "undo": {"kind": "thaw", "mountpoints": ["/a"]},
                },
                {
                    "key": "storage:storage",
                    "phase": "flush",
                    "status": "started",
                    "started": 2.0,
                    "undo": {"kind": "thaw", "mountpoints": ["/b", "/"]},
                },
            ],
        },
    )
    journal = Journal(Path("/nonexistent/journal.json"), record)
    assert possibly_frozen(journal) == ["/", "/b"]
