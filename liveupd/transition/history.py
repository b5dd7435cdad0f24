"""History of transitions: summaries of their journals, newest first.

A transition whose journal is corrupt is listed too, as state ``corrupt``
with the reason (its journal set aside as ``journal.json.corrupt`` by
recovery, or still in place when recovery has not run since).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from liveupd import schema
from liveupd.transition.checkpoint import load_checkpoint, read_exec_stamp
from liveupd.transition.journal import CorruptJournal, Journal
from liveupd.transition.phases import Phase
from liveupd.transition.records import DEVICE_CHECKS, TransitionRecord

CORRUPT = "corrupt"


def _phases(journal: Journal) -> dict[str, int]:
    """Per-phase durations.  The flush phase ends with filesystems frozen, so its
    duration never reaches the journal: derive it from the flush step's start and
    the exec timestamp, written just before the last freeze."""
    phases = dict(journal.record.phases)
    if "flush" not in phases:
        stamp = read_exec_stamp(journal.dir)
        started = [s.started for s in journal.record.steps if s.phase is Phase.FLUSH]
        if stamp is not None and started:
            phases["flush"] = max(0, int((stamp - min(started)) * 1e6))
    return phases


def _devices_and_filesystems(journal: Journal) -> tuple[list[dict[str, Any]], list[str]]:
    """What the transition unbound and froze (from its checkpoint), and what came back."""
    checkpoint = load_checkpoint(journal.dir)
    if checkpoint is None:
        return [], []
    verification = journal.record.verification
    verified = verification is not None and verification.finished is not None
    not_back = {
        p.sys_path
        for p in (verification.problems if verification is not None else ())
        if p.check in DEVICE_CHECKS
    }
    devices = [
        {
            "sys_path": b.sys_path,
            "driver": b.driver,
            "interfaces": [f"{n.ifname} {n.mac}" for n in b.net],
            # None until the new kernel verified it.
            "bound_again": (b.sys_path not in not_back) if verified else None,
        }
        for b in checkpoint.bindings
    ]
    frozen = list(checkpoint.freeze) if checkpoint.mode == "direct" else []
    return devices, frozen


def summary(journal: Journal) -> dict[str, Any]:
    """What a user wants to know about one transition (the history entry / report)."""
    r: TransitionRecord = journal.record
    target = r.target
    hooks = [
        {
            "hook": s.key.split(":", 1)[1],
            "phase": str(s.phase),
            "status": str(s.status),
            "usec": s.usec,
        }
        for s in r.steps
        if s.key.startswith("hook:")
    ]
    devices, frozen = _devices_and_filesystems(journal)
    return {
        "id": r.id,
        "state": str(r.state),
        "created": r.created,
        "execute_requested": r.execute_requested,
        "finished": r.finished,
        "mode": str(r.mode) if r.mode is not None else None,
        "dry_run": r.dry_run,
        "old_release": r.old_release or None,
        "new_release": target.release if target else None,
        "kernel": target.kernel_path if target else None,
        "initrd": target.initrd_path if target else None,
        "cmdline": target.cmdline if target else None,
        "phases_usec": _phases(journal),
        "hooks": hooks,
        "devices": devices,
        "frozen": frozen,
        "error": schema.dump(r.error) if r.error else None,
        "undone": list(r.undone),
        "undo_failures": list(r.undo_failures),
        "verification": (
            schema.dump(r.verification, exclude_none=True) if r.verification else None
        ),
        "rollback_of": r.rollback_of,
        # Remote login sessions ended before the network went down (liveupd/sessions/).
        "sessions_ended": [schema.dump(s) for s in r.sessions_ended],
        # The remote-login listeners stopped before that (started again on rollback).
        "units_stopped": list(r.units_stopped),
        # [preserve] units: their CRIU dump and restore (liveupd/preserve/).
        "preserved": [schema.dump(p) for p in r.preserved],
    }


def corrupt_summary(corrupt: CorruptJournal) -> dict[str, Any]:
    """A transition whose journal cannot be used: its id, where it is and why."""
    where = str(corrupt.path)
    return {
        "id": corrupt.id,
        "state": CORRUPT,
        "created": _mtime(corrupt.path),
        "finished": None,
        "corrupt": corrupt.reason,
        "journal": where,
        "error": {
            "kind": "Corrupt",
            "message": f"its journal is corrupt ({corrupt.reason}); inspect {where} by hand, "
            "then remove the transition's directory",
        },
        "hooks": [],
        "devices": [],
        "frozen": [],
        "undone": [],
        "undo_failures": [],
        "sessions_ended": [],
        "units_stopped": [],
        "preserved": [],
    }


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def history(state_dir: Path, limit: int = 0) -> list[dict[str, Any]]:
    scan = Journal.scan(state_dir)
    entries = [summary(j) for j in scan.journals] + [corrupt_summary(c) for c in scan.corrupt]
    entries.sort(key=lambda e: float(e.get("created") or 0), reverse=True)
    if limit > 0:
        entries = entries[:limit]
    return entries


def prune(state_dir: Path, keep: int) -> list[str]:
    """Remove the oldest finished transitions beyond ``keep``; returns their ids.

    Corrupt ones are kept (and not counted): they wait for someone to look.
    """
    finished = sorted(
        (j for j in Journal.all(state_dir) if j.state.terminal),
        key=lambda j: j.record.created,
        reverse=True,
    )
    removed = []
    for j in finished[keep:]:
        shutil.rmtree(j.dir, ignore_errors=True)
        removed.append(j.id)
    return removed
