"""History of transitions: summaries of their journals, newest first."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from liveupd.transition.checkpoint import load_checkpoint, read_exec_stamp
from liveupd.transition.journal import Journal

DEVICE_CHECKS = ("device", "interface", "mac")


def _phases(journal: Journal) -> dict[str, int]:
    """Per-phase durations.  The flush phase ends with filesystems frozen, so its
    duration never reaches the journal: derive it from the flush step's start and
    the exec timestamp, written just before the last freeze."""
    phases = dict(journal.data.get("phases", {}))
    if "flush" not in phases:
        stamp = read_exec_stamp(journal.dir)
        started = [
            float(s["started"])
            for s in journal.data.get("steps", [])
            if s.get("phase") == "flush" and "started" in s
        ]
        if stamp is not None and started:
            phases["flush"] = max(0, int((stamp - min(started)) * 1e6))
    return phases


def _devices_and_filesystems(journal: Journal) -> tuple[list[dict[str, Any]], list[str]]:
    """What the transition unbound and froze (from its checkpoint), and what came back."""
    checkpoint = load_checkpoint(journal.dir)
    if checkpoint is None:
        return [], []
    verification = journal.data.get("verification") or {}
    verified = "finished" in verification
    problems = [
        p.get("message", "")
        for p in verification.get("problems", [])
        if p.get("check") in DEVICE_CHECKS
    ]
    devices = [
        {
            "sys_path": b.sys_path,
            "driver": b.driver,
            "interfaces": [f"{n.ifname} {n.mac}" for n in b.net],
            # None until the new kernel verified it.
            "bound_again": (
                not any(b.sys_path in m or b.name in m for m in problems) if verified else None
            ),
        }
        for b in checkpoint.bindings
    ]
    frozen = list(checkpoint.freeze) if checkpoint.mode == "direct" else []
    return devices, frozen


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
    devices, frozen = _devices_and_filesystems(journal)
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
        "phases_usec": _phases(journal),
        "hooks": hooks,
        "devices": devices,
        "frozen": frozen,
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
