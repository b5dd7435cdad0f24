"""Every failure rolls back, and the Manager is never left busy (issue 12, cases 1 and 2).

In-process, on the dry-run machine, through the Manager (what the D-Bus layer
calls): an OSError where liveupd expects none, a journal that cannot be
written (once, or from some point on), a failed write after the jump, and
Cancel racing Execute and other Cancels.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from liveupd.backends import dryrun
from liveupd.backends.base import Backends
from liveupd.backends.faults import Fault
from liveupd.backends.files import DurableFiles
from liveupd.config import Config
from liveupd.errors import Failed, LiveUpdError, NotStaged
from liveupd.manager import Manager, ManagerState
from liveupd.transition.context import StageRequest
from liveupd.transition.events import Event, StateChanged, TransitionFailed
from liveupd.transition.journal import read
from liveupd.transition.phases import ExecMode, StepStatus, TransitionState
from tests.conftest import HookFactory
from tests.faults.plan import machine_problems

TARGET = "6.1.0-56-cloud-amd64"


def sim(config: Config, tmp_path: Path, faults: list[Fault] | None = None) -> Backends:
    machine = tmp_path / "machine.json"
    machine.write_text(
        json.dumps({**dryrun.DEFAULT_MACHINE, "faults": [f.to_json() for f in faults or []]})
    )
    return dryrun.make(config.state_dir, machine)


def logged_hooks(make_hook: HookFactory, log: Path) -> None:
    make_hook("10-quiesce", "quiesce", f"echo run 10-quiesce >> {log}", f"echo undo >> {log}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def execute(manager: Manager) -> TransitionState:
    t = await manager.stage(StageRequest(kernel=TARGET))
    manager.execute(ExecMode.DIRECT)
    assert t.task is not None
    await t.task
    return t.state


class FailingFiles(DurableFiles):
    """The journal's disk, failing the writes ``when`` picks (ENOSPC, or EIO)."""

    def __init__(self, when: Callable[[bytes], bool], code: int = errno.ENOSPC) -> None:
        self.when = when
        self.code = code
        self.failed = 0

    def _check(self, data: bytes) -> None:
        if self.when(data):
            self.failed += 1
            raise OSError(self.code, os.strerror(self.code))

    def append(self, path: Path, data: bytes, *, durable: bool) -> None:
        self._check(data)
        super().append(path, data, durable=durable)

    def replace(self, path: Path, data: bytes, *, durable: bool) -> None:
        self._check(data)
        super().replace(path, data, durable=durable)


# ------------------------------------------------------------- case 1 --


def test_an_oserror_from_device_enumeration_during_execute_rolls_everything_back(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    """A device vanishing while the unbind step enumerates (hotplug): not a liveupd
    error, raised from the step's prepare.  It used to kill the task and leave the
    transition running and the Manager Busy."""
    log = tmp_path / "hooks.log"
    logged_hooks(make_hook, log)
    # Enumeration 1 is the stage's check; 2 is the unbind step planning at Execute.
    manager = Manager(config, sim(config, tmp_path, [Fault("enumerate", 2, "ENODEV")]))
    events: list[Event] = []
    manager.subscribe(events.append)

    async def go() -> TransitionState:
        await manager.start()
        state = await execute(manager)
        assert manager.state is ManagerState.FAILED  # not Busy
        await manager.stage(StageRequest(kernel=TARGET))  # a new Stage is accepted
        await manager.cancel()
        return state

    assert asyncio.run(go()) is TransitionState.FAILED
    assert lines(log) == ["run 10-quiesce", "undo"]  # the quiesce hook's undo ran
    assert machine_problems(config.state_dir) == []  # the kernel was unloaded
    failed = [e for e in events if isinstance(e, TransitionFailed)]
    assert "No such device" in failed[0].message and "(ENODEV)" in failed[0].message
    (first, _) = sorted(
        (read(p / "journal.json") for p in (config.state_dir / "transitions").iterdir()),
        key=lambda r: r.created,
    )
    assert first.state is TransitionState.FAILED
    assert first.error is not None and first.error.step == "devices:devices"
    assert "preparing step devices:devices failed: No such device" in first.error.message


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_journal_write_that_fails_to_record_a_step_as_done_rolls_back(
    config: Config, make_hook: HookFactory, tmp_path: Path, code: int
) -> None:
    log = tmp_path / "hooks.log"
    logged_hooks(make_hook, log)
    files = FailingFiles(lambda d: b'"key":"hook:10-quiesce","status":"done"' in d, code)
    manager = Manager(config, dataclasses.replace(sim(config, tmp_path), files=files))

    async def go() -> TransitionState:
        await manager.start()
        return await execute(manager)

    assert asyncio.run(go()) is TransitionState.FAILED
    assert files.failed == 1
    assert manager.state is ManagerState.FAILED
    # The hook ran to its end: its undo runs, though its end never reached the disk.
    assert lines(log) == ["run 10-quiesce", "undo"]
    assert machine_problems(config.state_dir) == []
    t = manager.current
    assert t is not None and t.error is not None
    assert t.error.message == (
        f"recording the end of step hook:10-quiesce failed: {os.strerror(code)} "
        f"({errno.errorcode[code]})"
    )
    record = read(t.ctx.journal.path)  # rewritten whole after the failed append
    assert record.state is TransitionState.FAILED
    assert record.error is not None and record.error.step == "hook:10-quiesce"
    assert record.journal_errors and errno.errorcode[code] in record.journal_errors[0]


def test_a_journal_that_cannot_be_written_any_more_still_ends_the_rollback(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    """The disk fills up in the middle of Execute and stays full: the rollback still
    undoes everything, the transition still ends (in memory), the Manager is not
    left Busy; a Stage is refused with the reason until there is room again."""
    log = tmp_path / "hooks.log"
    logged_hooks(make_hook, log)
    full = {"now": False}

    def when(data: bytes) -> bool:
        if b'"key":"hook:10-quiesce","status":"done"' in data:
            full["now"] = True
        return full["now"]

    files = FailingFiles(when)
    manager = Manager(config, dataclasses.replace(sim(config, tmp_path), files=files))

    async def go() -> None:
        await manager.start()
        assert await execute(manager) is TransitionState.FAILED
        assert manager.state is ManagerState.FAILED
        with pytest.raises(Failed, match=r"cannot create the journal .* No space left"):
            await manager.stage(StageRequest(kernel=TARGET))
        assert manager.state is ManagerState.FAILED
        full["now"] = False  # space was freed
        await manager.stage(StageRequest(kernel=TARGET))
        await manager.cancel()

    asyncio.run(go())
    assert files.failed > 3
    assert lines(log) == ["run 10-quiesce", "undo"]
    assert machine_problems(config.state_dir) == []


def test_a_failed_write_after_the_jump_does_not_roll_back(config: Config, tmp_path: Path) -> None:
    """Past the jump nothing may be undone: the state is exec in memory, and logged."""
    files = FailingFiles(lambda d: b'"state":"exec"' in d, errno.EIO)
    manager = Manager(config, dataclasses.replace(sim(config, tmp_path), files=files))
    events: list[Event] = []
    manager.subscribe(events.append)

    async def go() -> TransitionState:
        await manager.start()
        return await execute(manager)

    assert asyncio.run(go()) is TransitionState.EXEC
    assert manager.state is ManagerState.EXEC
    assert files.failed == 2  # the final write, and the one more try
    assert "kexec_unload" not in [c["op"] for c in dryrun.SimMachine(config.state_dir).calls()]
    assert [e.state for e in events if isinstance(e, StateChanged)][-1] is TransitionState.EXEC


def test_a_step_that_raises_anything_is_a_named_failure(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only OSError: a bug (here a KeyError) in a step rolls back and says where."""
    from liveupd.storage.steps import FlushStep

    async def broken(self: FlushStep, ctx: object) -> None:
        raise KeyError("frozen")

    monkeypatch.setattr(FlushStep, "apply", broken)
    manager = Manager(config, sim(config, tmp_path))

    async def go() -> TransitionState:
        await manager.start()
        return await execute(manager)

    assert asyncio.run(go()) is TransitionState.FAILED
    t = manager.current
    assert t is not None and t.error is not None
    assert t.error.message == "step storage:storage failed: KeyError: 'frozen'"
    assert machine_problems(config.state_dir) == []
    step = t.ctx.journal.step("storage:storage")
    # A built-in step that failed, whatever the reason, is undone: thaw is idempotent.
    assert step.status is StepStatus.UNDONE


# ------------------------------------------------------------- case 2 --


def test_execute_after_a_cancel_has_begun_is_not_staged_and_cancels_share_one_rollback(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    log = tmp_path / "hooks.log"
    logged_hooks(make_hook, log)
    manager = Manager(config, sim(config, tmp_path))

    async def go() -> list[object]:
        await manager.start()
        t = await manager.stage(StageRequest(kernel=TARGET))
        first = asyncio.create_task(manager.cancel())
        await asyncio.sleep(0)  # the Cancel has begun: it waits for its rollback
        assert t.cancelling is not None and t.state is TransitionState.STAGED
        with pytest.raises(NotStaged, match="is being cancelled"):
            manager.execute(ExecMode.DIRECT)
        others = [asyncio.create_task(manager.cancel()) for _ in range(3)]
        return [await first, *await asyncio.gather(*others, return_exceptions=True)]

    results = asyncio.run(go())
    t = manager.current
    assert t is not None and all(r is t for r in results), results  # all told its outcome
    assert t.state is TransitionState.CANCELLED
    ops = [c["op"] for c in dryrun.SimMachine(config.state_dir).calls()]
    assert ops.count("kexec_unload") == 1  # one rollback, not three
    assert not {"unbind", "set_link", "freeze", "jump"} & set(ops)
    assert lines(log) == []  # no hook ran after the Cancel
    assert manager.state is ManagerState.IDLE


def test_cancels_during_execute_share_the_run_and_its_rollback(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    make_hook("10-slow", "quiesce", f"touch {started}; sleep 60")
    manager = Manager(config, sim(config, tmp_path))

    async def go() -> list[object]:
        await manager.start()
        await manager.stage(StageRequest(kernel=TARGET))
        manager.execute(ExecMode.DIRECT)
        async with asyncio.timeout(20):
            while not started.exists():
                await asyncio.sleep(0.02)
        return list(
            await asyncio.gather(*(manager.cancel() for _ in range(3)), return_exceptions=True)
        )

    results = asyncio.run(go())
    t = manager.current
    assert t is not None and results == [t, t, t]
    assert t.state is TransitionState.CANCELLED
    ops = [c["op"] for c in dryrun.SimMachine(config.state_dir).calls()]
    assert ops.count("kexec_unload") == 1


def test_a_cancel_whose_rollback_fails_says_so_to_every_caller(
    config: Config, tmp_path: Path
) -> None:
    # The kernel cannot be unloaded (the undo and its retry both fail): the machine
    # is not as it was, so no Cancel may be told it was cancelled.
    faults = [Fault("kexec-unload", 1, "EBUSY"), Fault("kexec-unload", 2, "EBUSY")]
    manager = Manager(config, sim(config, tmp_path, faults))

    async def go() -> list[object]:
        await manager.start()
        await manager.stage(StageRequest(kernel=TARGET))
        return list(
            await asyncio.gather(*(manager.cancel() for _ in range(2)), return_exceptions=True)
        )

    results = asyncio.run(go())
    t = manager.current
    assert t is not None and t.state is TransitionState.ROLLBACK_FAILED
    for r in results:
        assert isinstance(r, Failed), results
        assert f"transition {t.id} was cancelled, but rolling it back failed: " in r.message
        assert "kexec" in r.message and f"liveupctl show {t.id}" in r.message
    assert dryrun.SimMachine(config.state_dir).state()["loaded"] is not None


def test_shutdown_waits_for_a_cancel_under_way(config: Config, tmp_path: Path) -> None:
    manager = Manager(config, sim(config, tmp_path))

    async def go() -> TransitionState:
        await manager.start()
        t = await manager.stage(StageRequest(kernel=TARGET))
        cancel = asyncio.create_task(manager.cancel())
        await asyncio.sleep(0)
        await manager.shutdown()
        state = t.state
        await cancel
        return state

    assert asyncio.run(go()) is TransitionState.CANCELLED


def test_a_bug_in_the_rollback_itself_still_ends_the_transition(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line of defence: whatever happens, a run never stays ``running``."""
    from liveupd.transition.engine import Engine

    async def broken(self: Engine, *args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    manager = Manager(config, sim(config, tmp_path, [Fault("jump", 1, "EIO")]))

    async def go() -> TransitionState:
        await manager.start()
        t = await manager.stage(StageRequest(kernel=TARGET))
        monkeypatch.setattr(Engine, "rollback", broken)
        manager.execute(ExecMode.DIRECT)
        assert t.task is not None
        with pytest.raises((RuntimeError, LiveUpdError)):
            await t.task
        return t.state

    assert asyncio.run(go()) is TransitionState.ROLLBACK_FAILED
    assert manager.state is ManagerState.FAILED
