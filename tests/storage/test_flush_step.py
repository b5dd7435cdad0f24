"""The flush step: sync, skip what cannot be frozen, root/state last, thaw on failure."""

from __future__ import annotations

import asyncio
import errno
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from liveupd import fsio
from liveupd.config import Config
from liveupd.errors import Failed
from liveupd.storage.steps import FlushStep, StorageCheckStep, undo_thaw
from liveupd.transition.checkpoint import EXEC_STAMP_NS, STAMP_NAME
from liveupd.transition.context import TransitionContext, read_log
from liveupd.transition.phases import ExecMode
from liveupd.transition.undo import AnyUndo, ThawUndo
from tests.devices.fakes import FakeStorage, context, prepare

FREEZE_ALL = '[storage]\nfreeze = ["/", "/data", "/srv/cache", "/run"]\n'


@pytest.fixture
def no_write_while_frozen(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeStorage], None]:
    """Make any daemon write to the state directory fail while its filesystem ("/") is frozen."""

    def arm(storage: FakeStorage) -> None:
        real_write = fsio.atomic_write
        real_append = TransitionContext._append_log

        def check() -> None:
            assert "/" not in storage.frozen, "the daemon wrote to a frozen filesystem"

        def write(path: Path, data: bytes, **kw: Any) -> None:
            check()
            real_write(path, data, **kw)

        def append(self: TransitionContext, lines: list[str]) -> None:
            check()
            real_append(self, lines)

        monkeypatch.setattr(fsio, "atomic_write", write)
        monkeypatch.setattr(TransitionContext, "_append_log", append)

    return arm


def apply(ctx: TransitionContext) -> AnyUndo | None:
    record = prepare(FlushStep(), ctx)
    asyncio.run(FlushStep().apply(ctx))
    return record


def test_syncs_then_freezes_in_order_skipping_what_cannot_be_frozen(
    write_config: Callable[[str], Config], no_write_while_frozen: Callable[[FakeStorage], None]
) -> None:
    storage = FakeStorage(fail={("freeze", "/srv/cache"): errno.EOPNOTSUPP})
    no_write_while_frozen(storage)
    ctx = context(write_config(FREEZE_ALL), storage=storage)
    record = apply(ctx)

    # Deeper mount points first, the state directory's filesystem ("/") last.
    assert record == ThawUndo(mountpoints=("/srv/cache", "/data", "/"))
    ops = storage.ops
    assert ops[0] == ("sync", "")
    assert {mp for op, mp in ops if op == "syncfs"} == {"/", "/data", "/srv/cache"}
    assert [mp for op, mp in ops if op == "freeze"] == ["/srv/cache", "/data", "/"]
    assert storage.frozen == ["/data", "/"]  # /srv/cache refused: skipped, not failed
    # Once "/" (the state directory's filesystem) is frozen the log is held in memory,
    # until it is thawed.
    with pytest.raises(AssertionError, match="wrote to a frozen filesystem"):
        ctx.release_writes()
    storage.frozen.clear()
    ctx.release_writes()
    skipped = [e for e in read_log(ctx.dir) if e["event"] == "storage.skipped"]
    # What cannot be frozen by its type, all in one line; a refusal, when it comes.
    assert [e.get("mountpoints") or e["mountpoint"] for e in skipped] == [
        "/run (tmpfs cannot be frozen)",
        "/srv/cache",
    ]
    assert skipped[1]["reason"].startswith("cannot be frozen")


def test_exec_stamp_is_written_just_before_the_state_filesystem_freezes(
    write_config: Callable[[str], Config],
) -> None:
    storage = FakeStorage()
    ctx = context(write_config(FREEZE_ALL), storage=storage)
    seen: list[bool] = []
    real_freeze = storage.freeze

    def freeze(mountpoint: str) -> None:
        seen.append((ctx.dir / STAMP_NAME).exists())
        real_freeze(mountpoint)

    storage.freeze = freeze  # type: ignore[method-assign]
    apply(ctx)
    assert seen == [False, False, True]  # /srv/cache, /data, then "/" with the stamp
    assert int((ctx.dir / STAMP_NAME).read_text()) == ctx.facts.get(EXEC_STAMP_NS)
    assert stat.S_IMODE((ctx.dir / STAMP_NAME).stat().st_mode) == 0o600


def test_failure_thaws_what_was_frozen_most_recent_first(
    write_config: Callable[[str], Config], no_write_while_frozen: Callable[[FakeStorage], None]
) -> None:
    storage = FakeStorage(fail={("freeze", "/"): errno.EIO})
    no_write_while_frozen(storage)
    ctx = context(write_config(FREEZE_ALL), storage=storage)
    prepare(FlushStep(), ctx)
    with pytest.raises(Failed) as e:
        asyncio.run(FlushStep().apply(ctx))
    assert "freezing / failed" in e.value.message and "thawed" in e.value.message
    thawed = [mp for op, mp in storage.ops if op == "thaw"]
    assert thawed == ["/data", "/srv/cache"]
    assert storage.frozen == []
    # Writes resumed after the thaw: the log says so.
    assert "storage.thawed" in [e["event"] for e in read_log(ctx.dir)]


def test_undo_thaws_everything_planned_and_is_idempotent(
    write_config: Callable[[str], Config],
) -> None:
    storage = FakeStorage()
    ctx = context(write_config(FREEZE_ALL), storage=storage)
    record = apply(ctx)
    assert isinstance(record, ThawUndo)
    storage.ops.clear()
    asyncio.run(undo_thaw(ctx, record))
    assert storage.ops == [("thaw", "/"), ("thaw", "/data"), ("thaw", "/srv/cache")]
    assert storage.frozen == []
    asyncio.run(undo_thaw(ctx, record))  # thawing a thawed filesystem is no error
    assert storage.frozen == []


def test_a_failed_thaw_is_reported_with_the_fix(write_config: Callable[[str], Config]) -> None:
    storage = FakeStorage(fail={("thaw", "/data"): errno.EPERM})
    ctx = context(write_config(FREEZE_ALL), storage=storage, dry_run=False)
    with pytest.raises(Failed) as e:
        asyncio.run(undo_thaw(ctx, ThawUndo(mountpoints=("/data", "/"))))
    assert "/data" in e.value.message and "fsfreeze -u" in e.value.message
    assert ("thaw", "/") in storage.ops  # the others are still thawed


def test_a_simulated_machine_gets_no_advice_for_a_real_one(
    write_config: Callable[[str], Config], tmp_path: Path
) -> None:
    """Issue 18, case 6: no fsfreeze for a dry run; the configuration file in use."""
    config = write_config(FREEZE_ALL)
    storage = FakeStorage(fail={("thaw", "/data"): errno.EPERM})
    ctx = context(config, storage=storage)
    with pytest.raises(Failed) as e:
        asyncio.run(undo_thaw(ctx, ThawUndo(mountpoints=("/data", "/"))))
    assert "fsfreeze" not in e.value.message
    assert "the machine is simulated (liveupd --dry-run)" in e.value.message
    busy = FakeStorage(fail={("freeze", "/data"): errno.EIO})
    ctx = context(config, storage=busy, transition_id="T2")
    with pytest.raises(Failed) as e:
        apply(ctx)
    assert "fsfreeze" not in e.value.message
    assert f"[storage] freeze in {tmp_path / 'liveupd.conf'}" in e.value.message
    assert "/etc/liveupd" not in e.value.message


def test_systemd_mode_syncs_but_freezes_nothing(write_config: Callable[[str], Config]) -> None:
    storage = FakeStorage()
    ctx = context(write_config(FREEZE_ALL), storage=storage, mode=ExecMode.SYSTEMD)
    assert apply(ctx) is None
    assert ("sync", "") in storage.ops and ("syncfs", "/") in storage.ops
    assert not [op for op, _ in storage.ops if op == "freeze"]


def test_stage_refuses_a_filesystem_that_is_not_mounted(
    write_config: Callable[[str], Config],
) -> None:
    from liveupd.errors import InvalidArgument

    storage = FakeStorage()
    ctx = context(write_config('[storage]\nfreeze = ["/", "/nope"]\n'), storage=storage)
    with pytest.raises(InvalidArgument, match="/nope"):
        asyncio.run(StorageCheckStep().apply(ctx))
    assert storage.ops == []
