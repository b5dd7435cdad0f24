"""Which journal writes are fsync'd: a step's undo is on disk before the step runs.

The group's start is the one write per group before its steps run; it is
durable exactly when some step of the group has an undo record (issue 19: a
group of hooks without undo no longer pays an fsync). Whatever the durability,
the record reads back the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from liveupd.backends.files import DurableFiles
from liveupd.transition.journal import Journal
from liveupd.transition.phases import Phase, StepStatus
from liveupd.transition.undo import AnyUndo, HookUndo


class RecordingFiles(DurableFiles):
    def __init__(self) -> None:
        self.appends: list[bool] = []

    def append(self, path: Path, data: bytes, *, durable: bool) -> None:
        self.appends.append(durable)
        super().append(path, data, durable=durable)


def undo(name: str) -> HookUndo:
    return HookUndo(hook=name, phase=Phase.QUIESCE, argv=("/bin/true",), timeout=5.0)


@pytest.mark.parametrize(
    ("undos", "durable"),
    [
        ((None,), False),
        ((None, None, None), False),
        ((undo("10-a"),), True),
        ((None, undo("10-b"), None), True),
    ],
)
def test_a_group_start_is_fsynced_exactly_when_a_step_has_an_undo(
    tmp_path: Path, undos: tuple[AnyUndo | None, ...], durable: bool
) -> None:
    files = RecordingFiles()
    journal = Journal.create(tmp_path, "T1", files=files, boot_id="b1", old_release="r")
    steps = [(f"hook:10-{i}", Phase.QUIESCE, u) for i, u in enumerate(undos)]
    journal.steps_started(steps)
    assert files.appends == [durable]
    loaded = Journal.load(journal.path)
    assert [(s.key, s.status, s.undo) for s in loaded.record.steps] == [
        (key, StepStatus.STARTED, u) for key, _, u in steps
    ]
