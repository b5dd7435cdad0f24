"""``liveupctl status``: the daemon, the running or last transition, what blocks one.

Everything comes from the daemon: its Manager properties, its history (the
newest entry is the running or last transition; a transition still under way
is asked for its live phase and progress), ``CanLiveUpdate`` and
``ListBlockers``, each named reason a live update is refused here
(``Refusals``), the watchdog that guards the jump (``Watchdog``) and the
quarantined kernels (``ListQuarantine``); plus
``/run/reboot-required`` for update managers.  The JSON keys are an interface
(docs/json.md): add new ones, never rename.
"""

from __future__ import annotations

import time
from typing import Any

from liveupd.ctl import render
from liveupd.ctl.client import Client, RemoteError
from liveupd.fleet.reboot_required import reboot_required
from liveupd.service import names

UNDER_WAY = ("staged", "running", "exec")
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"


async def gather(client: Client) -> dict[str, Any]:
    """The data ``status --json`` prints."""
    manager = await client.properties()
    staged: dict[str, Any] | None = None
    path = manager.get("StagedTransition", names.NO_TRANSITION)
    if path != names.NO_TRANSITION:
        staged = await client.transition(path)
    entries = await client.history(0)
    corrupt = sum(1 for e in entries if e.get("state") == "corrupt")
    data = render.status_json(
        manager, staged, await client.can_live_update(), reboot_required(), corrupt
    )
    last = next((e for e in entries if e.get("state") != "corrupt"), None)
    live: dict[str, Any] | None = None
    if last is not None and last.get("state") in UNDER_WAY:
        try:
            live = await client.transition(names.transition_path(str(last["id"])))
        except RemoteError:
            live = None  # it ended (and went) meanwhile: its entry says enough
    data["dry_run"] = bool(manager.get("DryRun", False))
    data["transition"] = transition_json(last, live) if last is not None else None
    data["blockers"] = await blockers(client)
    data["watchdog"] = manager.get("Watchdog")  # None from a daemon that cannot tell (older)
    data["quarantine"] = await quarantine(client)
    return data


async def quarantine(client: Client) -> dict[str, Any] | None:
    """Kernels transitions fell back from; None from a daemon that has no quarantine."""
    try:
        held, problem = await client.quarantine()
    except RemoteError as e:
        if e.name == UNKNOWN_METHOD:
            return None
        raise
    return {"kernels": [q.to_json() for q in held], "problem": problem or None}


async def blockers(client: Client) -> list[dict[str, str]] | None:
    """What blocks a live update now; None from a daemon that cannot tell (older)."""
    try:
        rows = await client.blockers()
    except RemoteError as e:
        if e.name == UNKNOWN_METHOD:
            return None
        raise
    return [{"kind": kind, "message": message} for kind, message in rows]


def transition_json(entry: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    """The running or last transition, from its history entry and its live object."""
    state = str((live or {}).get("State") or entry.get("state"))
    started = entry.get("execute_requested") or entry.get("created")
    ended = entry.get("finished") if state not in UNDER_WAY else None
    elapsed = None
    if isinstance(started, int | float):
        end = ended if isinstance(ended, int | float) else time.time()
        elapsed = round(max(0.0, end - started), 3)
    error = entry.get("error")
    return {
        "id": entry.get("id"),
        "state": state,
        "dry_run": bool(entry.get("dry_run")),
        "old_release": entry.get("old_release"),
        "new_release": entry.get("new_release"),
        "mode": entry.get("mode"),
        "phase": (live.get("Phase") or None) if live is not None else None,
        "progress": live.get("Progress") if live is not None else None,
        "created": entry.get("created"),
        "execute_requested": entry.get("execute_requested"),
        "finished": entry.get("finished"),
        "elapsed_s": elapsed,
        "error": {
            "kind": error.get("kind"),
            "step": error.get("step"),
            "message": error.get("message"),
        }
        if isinstance(error, dict)
        else None,
        "undo_failures": list(entry.get("undo_failures") or []),
    }


# ------------------------------------------------------------------- text --


def step_text(step: str | None) -> str:
    """``hook:10-db`` -> ``hook 10-db``; ``devices:devices`` -> ``devices``."""
    if not step:
        return "-"
    kind, _, name = step.partition(":")
    if not name or name == kind:
        return kind
    return f"{kind} {name}"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


def transition_lines(t: dict[str, Any], *, staging: bool = False) -> list[str]:
    """``staging``: the daemon is still checking and loading it (its journal says staged)."""
    dry = " (dry run)" if t["dry_run"] else ""
    shown = "being staged" if staging else t["state"]
    lines = [f"Transition:     {t['id']}: {shown}{dry}"]
    old, new = t.get("old_release") or "?", t.get("new_release") or "?"
    mode = f" ({t['mode']} mode)" if t.get("mode") else ""
    lines.append(f"  kernel:       {old} -> {new}{mode}")
    state = t["state"]
    if state in UNDER_WAY:
        phase = t.get("phase") or ("staged" if state == "staged" else "starting")
        progress = t.get("progress")
        done = f", {progress}% done" if isinstance(progress, int) and state != "staged" else ""
        if staging:
            phase = t.get("phase") or "check"
        lines.append(f"  phase:        {phase}{done}, for {seconds(t.get('elapsed_s'))}")
    else:
        lines.append(
            f"  ended:        {render.when(t.get('finished'))} (took {seconds(t.get('elapsed_s'))})"
        )
    error = t.get("error")
    if error and state not in ("completed",):
        if state != "cancelled":
            lines.append(f"  failed at:    {step_text(error.get('step'))}")
        elif error.get("step"):  # a cancel of a staged transition stopped no step
            lines.append(f"  cancelled at: {step_text(error['step'])}")
        lines.append(f"  reason:       {error.get('message') or '-'}")
    for failure in t.get("undo_failures") or []:
        lines.append(f"  NOT UNDONE:   {failure}")
    if state not in UNDER_WAY:
        lines.append(f"  details:      liveupctl show {t['id']}")
    return lines


def text(data: dict[str, Any]) -> str:
    """The human-readable status."""
    state = str(data["state"])
    if data.get("dry_run"):
        state += " (dry run: a simulated machine)"
    lines = [f"State:          {state}"]
    staged = data.get("staged")
    if staged:
        lines.append(f"Staged:         {staged['target_release']} (transition {staged['id']})")
        lines.append(f"  kernel:       {staged['kernel']}")
        lines.append(f"  initrd:       {staged['initrd'] or '-'}")
        lines.append(f"  command line: {staged['cmdline']}")
    t = data.get("transition")
    if t and not (staged and staged["id"] == t["id"]):
        staging = data["state"] == "running" and not staged and t["state"] == "staged"
        lines += transition_lines(t, staging=staging)
    lines.append(f"Running kernel: {data['running_kernel']}")
    latest = data["latest_kernel"] or "-"
    if latest == data["running_kernel"]:
        latest += " (running)"
    elif data.get("newer_kernel"):
        is_staged = staged and staged["target_release"] == data["newer_kernel"]
        latest += " (newer than the running kernel" + ("; staged)" if is_staged else ")")
    lines.append(f"Latest kernel:  {latest}")
    lines.append(f"Reboot needed:  {render.reboot_needed_text(data)}")
    lines += live_update_lines(data)
    if data.get("watchdog"):
        lines.append(f"Watchdog:       {data['watchdog']}")
    lines += quarantine_lines(data.get("quarantine"))
    corrupt = data.get("corrupt_journals") or 0
    if corrupt:
        lines.append(
            f"Journals:       {corrupt} corrupt, set aside (liveupctl history shows which and why)"
        )
    lines.append(f"Version:        {data['version']}")
    return "\n".join(lines)


def quarantine_lines(held: dict[str, Any] | None) -> list[str]:
    """The kernels no live update goes to until cleared (none: no line)."""
    if not held:
        return []
    found = [
        f"{q['release']} (transition {q['transition']} fell back: {q['reason']}; "
        f"'liveupctl unquarantine {q['release']}' clears it)"
        for q in held["kernels"]
    ]
    if held.get("problem"):
        found.insert(0, f"unreadable list ({held['problem']}): every kernel but the running one")
    if not found:
        return []
    return [f"Quarantined:    {found[0]}", *(f"                {f}" for f in found[1:])]


def live_update_lines(data: dict[str, Any]) -> list[str]:
    blockers = [b for b in data.get("blockers") or [] if b["kind"] != "unsupported"]
    refusals = data.get("refusals")
    if refusals:
        first = "Live update:    not possible here:"
        lines = [first] + [f"                {r['reason']}: {r['message']}" for r in refusals]
        if blockers:
            lines.append("Blocked by:     " + blockers[0]["message"])
            lines += [f"                {b['message']}" for b in blockers[1:]]
        return lines
    if data.get("unsupported"):
        first = f"Live update:    not possible here: {data['unsupported']}"
    else:
        can = data["can_live_update"]
        first = f"Live update:    {render.ANSWERS.get(can, can)}"
    lines = [first]
    if blockers:
        lines.append("Blocked by:     " + blockers[0]["message"])
        lines += [f"                {b['message']}" for b in blockers[1:]]
    return lines
