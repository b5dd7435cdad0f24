"""The checkpoint: everything the new kernel needs to verify recovery.

Written atomically (temp file, fsync, rename, fsync of the directory) into
the transition's directory before the flush step, and pointed to by
``<state-dir>/pending``.  A crash between the write and the rename leaves the
previous record in place; a record that does not parse or lacks a field is
treated as absent, never half-used.

The exec timestamp (CLOCK_REALTIME) is taken as late as possible, into its
own small file, ``exec-stamp``: just before the filesystem holding the state
directory freezes, or, when it is not frozen, just before the jump.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from liveupd.backends.base import Binding, WatchdogRecord
from liveupd.fsio import atomic_write, atomic_write_json, read_json, remove_durably
from liveupd.transition.context import Fact, Target, TransitionContext
from liveupd.transition.undo import CheckpointUndo

CHECKPOINT_NAME = "checkpoint.json"
STAMP_NAME = "exec-stamp"
PENDING_NAME = "pending"
VERSION = 1

EXEC_STAMP_NS: Fact[int] = Fact("exec-stamp-ns")  # written: CLOCK_REALTIME in ns


class InvalidCheckpoint(ValueError):
    pass


@dataclass(frozen=True)
class OldKernel:
    """The kernel the transition leaves: what a rollback goes back to."""

    release: str
    boot_id: str
    cmdline: str
    kernel_path: str | None = None  # None when it is not in kernel.allowed-dirs
    initrd_path: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    id: str
    written: float  # CLOCK_REALTIME when the record was written
    mode: str
    old: OldKernel
    new: Target
    bindings: tuple[Binding, ...] = ()
    freeze: tuple[str, ...] = ()  # mount points, in freeze order
    freeze_skipped: tuple[tuple[str, str], ...] = ()
    hook_state_dirs: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False
    # The watchdog armed for the jump (the new kernel takes it over), if any.
    watchdog: WatchdogRecord | None = None
    # /sys/kernel/kexec_crash_loaded on the old kernel (None: it has no crash kexec):
    # the new kernel's verification loads a crash kernel again when it was loaded.
    crash_loaded: bool | None = None
    version: int = VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "id": self.id,
            "written": self.written,
            "mode": self.mode,
            "old": asdict(self.old),
            "new": self.new.to_json(),
            "bindings": [b.to_json() for b in self.bindings],
            "freeze": list(self.freeze),
            "freeze_skipped": [list(s) for s in self.freeze_skipped],
            "hook_state_dirs": dict(self.hook_state_dirs),
            "dry_run": self.dry_run,
            "watchdog": self.watchdog.to_json() if self.watchdog else None,
            "crash_loaded": self.crash_loaded,
        }

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        """Parse and check a record; InvalidCheckpoint naming the bad field."""
        if not isinstance(data, dict):
            raise InvalidCheckpoint("expected a JSON object")
        if data.get("version") != VERSION:
            raise InvalidCheckpoint(f"version: expected {VERSION}, got {data.get('version')!r}")
        try:
            old = OldKernel(**data["old"])
            new = Target.from_json(data["new"])
            bindings = tuple(Binding.from_json(b) for b in data["bindings"])
            watchdog = data.get("watchdog")
            crash_loaded = data.get("crash_loaded")
            if crash_loaded is not None and not isinstance(crash_loaded, bool):
                raise InvalidCheckpoint(
                    f"crash_loaded: expected true, false or null, got {str(crash_loaded)[:40]!r}"
                )
            record = cls(
                id=str(data["id"]),
                written=float(data["written"]),
                mode=str(data["mode"]),
                old=old,
                new=new,
                bindings=bindings,
                freeze=tuple(str(m) for m in data["freeze"]),
                freeze_skipped=tuple((str(a), str(b)) for a, b in data["freeze_skipped"]),
                hook_state_dirs={str(k): str(v) for k, v in data["hook_state_dirs"].items()},
                dry_run=bool(data.get("dry_run", False)),
                watchdog=WatchdogRecord.from_json(watchdog) if watchdog is not None else None,
                crash_loaded=crash_loaded,
            )
        except KeyError as e:
            raise InvalidCheckpoint(f"{e.args[0]}: required field is missing") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise InvalidCheckpoint(f"malformed record: {e}") from None
        return record


def pending_path(state_dir: Path) -> Path:
    return state_dir / PENDING_NAME


def read_pending(state_dir: Path) -> str | None:
    """The id of the transition waiting for verification, if any."""
    try:
        data = read_json(pending_path(state_dir))
    except (OSError, ValueError):
        return None
    tid = data.get("id") if isinstance(data, dict) else None
    return tid if isinstance(tid, str) else None


def load_checkpoint(transition_dir: Path) -> Checkpoint | None:
    """The transition's checkpoint; None if absent, unreadable or invalid."""
    try:
        data = read_json(transition_dir / CHECKPOINT_NAME)
    except (OSError, ValueError):
        return None
    try:
        record = Checkpoint.from_json(data)
    except InvalidCheckpoint:
        return None
    return record if record.id == transition_dir.name else None


def read_checkpoint(transition_dir: Path) -> dict[str, Any] | None:
    """The checkpoint as JSON (validated); None if absent or invalid."""
    record = load_checkpoint(transition_dir)
    return record.to_json() if record else None


def write_checkpoint(transition_dir: Path, record: Checkpoint) -> None:
    atomic_write_json(transition_dir / CHECKPOINT_NAME, record.to_json(), mode=0o600)


def write_exec_stamp(ctx: TransitionContext) -> None:
    """Record CLOCK_REALTIME now, durably, and remember that it was written."""
    now_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
    atomic_write(ctx.dir / STAMP_NAME, f"{now_ns}\n".encode(), mode=0o600)
    ctx.facts.set(EXEC_STAMP_NS, now_ns)


def read_exec_stamp(transition_dir: Path) -> float | None:
    try:
        return int((transition_dir / STAMP_NAME).read_text().strip()) / 1e9
    except (OSError, ValueError):
        return None


def write_pending(state_dir: Path, transition_id: str) -> None:
    atomic_write_json(pending_path(state_dir), {"id": transition_id}, mode=0o600)


async def undo_checkpoint(ctx: TransitionContext, record: CheckpointUndo) -> None:
    """The transition did not happen: nothing is pending verification any more."""
    if read_pending(ctx.config.state_dir) == ctx.id:
        remove_durably(pending_path(ctx.config.state_dir))
    remove_durably(ctx.dir / STAMP_NAME)
