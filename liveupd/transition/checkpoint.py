"""The checkpoint: everything the new kernel needs to verify recovery.

Written atomically and fsync'd into the transition's directory before the
flush step, and pointed to by ``<state-dir>/pending``.  The exec timestamp is
taken as late as possible: just before the filesystem holding the state
directory freezes (or just before the jump when it is not frozen), into its
own small file, ``exec-stamp``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from liveupd.fsio import atomic_write, atomic_write_json, read_json, remove_durably
from liveupd.storage.plan import plan_freeze
from liveupd.transition.context import TransitionContext
from liveupd.transition.phases import Phase
from liveupd.transition.steps import LAST, BuiltinStep, UndoRecord, undo_handler

CHECKPOINT_NAME = "checkpoint.json"
STAMP_NAME = "exec-stamp"
PENDING_NAME = "pending"


def pending_path(state_dir: Path) -> Path:
    return state_dir / PENDING_NAME


def read_pending(state_dir: Path) -> str | None:
    """The id of the transition waiting for verification, if any."""
    try:
        data = read_json(pending_path(state_dir))
    except (FileNotFoundError, ValueError):
        return None
    tid = data.get("id") if isinstance(data, dict) else None
    return tid if isinstance(tid, str) else None


def read_checkpoint(transition_dir: Path) -> dict[str, Any] | None:
    try:
        data = read_json(transition_dir / CHECKPOINT_NAME)
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_exec_stamp(ctx: TransitionContext) -> None:
    """Record CLOCK_REALTIME now, durably, and remember that it was written."""
    now_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
    atomic_write(ctx.dir / STAMP_NAME, f"{now_ns}\n".encode())
    ctx.facts["exec_stamp_ns"] = now_ns


def read_exec_stamp(transition_dir: Path) -> float | None:
    try:
        return int((transition_dir / STAMP_NAME).read_text().strip()) / 1e9
    except (FileNotFoundError, ValueError):
        return None


class CheckpointStep(BuiltinStep):
    kind = "checkpoint"
    name = "checkpoint"
    phase = Phase.CHECKPOINT
    order = LAST  # after the hooks that save their own state

    def prepare(self, ctx: TransitionContext) -> UndoRecord | None:
        return {"kind": "checkpoint"}

    async def apply(self, ctx: TransitionContext) -> None:
        assert ctx.target is not None
        system = ctx.backends.system
        storage = ctx.backends.storage
        plan = plan_freeze(storage.mounts(), ctx.config.storage.freeze, str(ctx.config.state_dir))
        ctx.facts["freeze_plan"] = plan
        hooks_dir = ctx.dir / "hooks"
        hook_dirs = sorted(p.name for p in hooks_dir.iterdir()) if hooks_dir.is_dir() else []
        record = {
            "id": ctx.id,
            "written": time.time(),
            "mode": str(ctx.mode),
            "old": {
                "release": system.release(),
                "boot_id": system.boot_id(),
                "cmdline": system.cmdline(),
            },
            "new": ctx.target.to_json(),
            "bindings": [b.to_json() for b in ctx.facts.get("bindings", ())],
            "freeze": list(plan.freeze),
            "freeze_skipped": [list(s) for s in plan.skipped],
            "hook_state_dirs": {h: str(hooks_dir / h) for h in hook_dirs},
            "dry_run": ctx.backends.dry_run,
        }
        atomic_write_json(ctx.dir / CHECKPOINT_NAME, record, mode=0o600)
        atomic_write_json(pending_path(ctx.config.state_dir), {"id": ctx.id}, mode=0o600)
        ctx.log("checkpoint.written", path=str(ctx.dir / CHECKPOINT_NAME), pid=os.getpid())


@undo_handler("checkpoint")
async def undo_checkpoint(ctx: TransitionContext, record: UndoRecord) -> None:
    """The transition did not happen: nothing is pending verification any more."""
    if read_pending(ctx.config.state_dir) == ctx.id:
        remove_durably(pending_path(ctx.config.state_dir))
    remove_durably(ctx.dir / STAMP_NAME)
