"""History of transitions: summaries of their journals, newest first."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from liveupd.transition.journal import Journal


def summary(journal: Journal) -> dict[str, Any]:
    """What a user wants to know about one transition (the history entry / report)."""
    d = journal.data
    target = d.get("target") or {}
    hooks = [
        {
            "hook": s["key"].split(":", 1)[1],
            "phase": s["phase"],
            "status": s["status"],
            "usec": s.get("usec"),
        }
        for s in d.get("steps", [])
        if s["key"].startswith("hook:")
    ]
    return {
        "id": d["id"],
        "state": d["state"],
        "created": d.get("created"),
        "finished": d.get("finished"),
        "mode": d.get("mode"),
        "dry_run": d.get("dry_run", False),
        "old_release": d.get("old_release"),
        "new_release": target.get("release"),
        "kernel": target.get("kernel_path"),
        "initrd": target.get("initrd_path"),
        "cmdline": target.get("cmdline"),
        "phases_usec": d.get("phases", {}),
        "hooks": hooks,
        "error": d.get("error"),
        "undone": d.get("undone", []),
        "undo_failures": d.get("undo_failures", []),
        "verification": d.get("verification"),
        "rollback_of": d.get("rollback_of"),
    }


def history(state_dir: Path, limit: int = 0) -> list[dict[str, Any]]:
    journals = sorted(
        Journal.all(state_dir), key=lambda j: float(j.data.get("created", 0)), reverse=True
    )
    if limit > 0:
        journals = journals[:limit]
    return [summary(j) for j in journals]


def prune(state_dir: Path, keep: int) -> list[str]:
    """Remove the oldest finished transitions beyond ``keep``; returns their ids."""
    finished = sorted(
        (j for j in Journal.all(state_dir) if j.state.terminal),
        key=lambda j: float(j.data.get("created", 0)),
        reverse=True,
    )
    removed = []
    for j in finished[keep:]:
        shutil.rmtree(j.dir, ignore_errors=True)
        removed.append(j.id)
    return removed
