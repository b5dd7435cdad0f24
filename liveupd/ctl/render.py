"""Human-readable output of liveupctl (``--json`` prints the data as it is)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from liveupd.fleet.reboot_required import RebootRequired, newer_kernel
from liveupd.service import names


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def duration(usec: int | float | None) -> str:
    if usec is None:
        return "-"
    if usec < 1000:
        return f"{int(usec)} us"
    if usec < 1_000_000:
        return f"{usec / 1000:.0f} ms"
    return f"{usec / 1e6:.1f} s"


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


# ---------------------------------------------------------------- status ----


def status_json(
    manager: dict[str, Any],
    staged: dict[str, Any] | None,
    can: str,
    flag: RebootRequired | None = None,
    corrupt_journals: int = 0,
) -> dict[str, Any]:
    """liveupctl status --json.  Keys are an interface: add new ones, never rename."""
    return {
        "state": manager.get("State"),
        "staged_transition": None
        if manager.get("StagedTransition") in (None, names.NO_TRANSITION)
        else manager.get("StagedTransition"),
        "staged": transition_json(staged) if staged else None,
        "running_kernel": manager.get("RunningKernel"),
        "latest_kernel": manager.get("LatestKernel"),
        "unsupported": manager.get("Unsupported") or None,
        "can_live_update": can,
        "version": manager.get("Version"),
        # For update managers: a newer kernel than the running one is installed
        # (its release, else null), and a package asked for a reboot.
        "newer_kernel": newer_kernel(manager.get("RunningKernel"), manager.get("LatestKernel")),
        "reboot_required": flag is not None,
        "reboot_required_file": flag.file if flag else None,
        "reboot_required_packages": list(flag.packages) if flag else [],
        # Transitions whose journal was found corrupt (set aside; someone should look).
        "corrupt_journals": corrupt_journals,
    }


def transition_json(props: dict[str, Any]) -> dict[str, Any]:
    report = props.get("Report")
    return {
        "id": props.get("Id"),
        "state": props.get("State"),
        "phase": props.get("Phase") or None,
        "progress": props.get("Progress"),
        "target_release": props.get("TargetRelease") or None,
        "kernel": props.get("KernelPath") or None,
        "initrd": props.get("InitrdPath") or None,
        "cmdline": props.get("CommandLine") or None,
        "report": json.loads(report) if isinstance(report, str) and report else None,
    }


def status_text(data: dict[str, Any]) -> str:
    lines = [f"State:          {data['state']}"]
    staged = data.get("staged")
    if staged:
        lines.append(f"Staged:         {staged['target_release']} (transition {staged['id']})")
        lines.append(f"  kernel:       {staged['kernel']}")
        lines.append(f"  initrd:       {staged['initrd'] or '-'}")
        lines.append(f"  command line: {staged['cmdline']}")
    lines.append(f"Running kernel: {data['running_kernel']}")
    latest = data["latest_kernel"] or "-"
    if latest == data["running_kernel"]:
        latest += " (running)"
    elif data.get("newer_kernel"):
        is_staged = staged and staged["target_release"] == data["newer_kernel"]
        latest += " (newer than the running kernel" + ("; staged)" if is_staged else ")")
    lines.append(f"Latest kernel:  {latest}")
    lines.append(f"Reboot needed:  {reboot_needed_text(data)}")
    if data.get("unsupported"):
        lines.append(f"Live update:    not possible here: {data['unsupported']}")
    else:
        can = data["can_live_update"]
        lines.append(f"Live update:    {ANSWERS.get(can, can)}")
    corrupt = data.get("corrupt_journals") or 0
    if corrupt:
        lines.append(
            f"Journals:       {corrupt} corrupt, set aside (liveupctl history shows which and why)"
        )
    lines.append(f"Version:        {data['version']}")
    return "\n".join(lines)


def reboot_needed_text(data: dict[str, Any]) -> str:
    reasons = []
    if data.get("newer_kernel"):
        reasons.append(f"{data['newer_kernel']} is installed")
    if data.get("reboot_required"):
        packages = data.get("reboot_required_packages") or []
        why = f"{data['reboot_required_file']} exists"
        reasons.append(why + (f" (packages: {', '.join(packages)})" if packages else ""))
    if not reasons:
        return "no"
    how = "reboot normally" if data.get("unsupported") else "run 'liveupctl reboot'"
    return "yes: " + "; ".join(reasons) + f" ({how})"


ANSWERS = {
    "yes": "possible, and you may start it",
    "challenge": "possible, after authentication",
    "no": "possible, but you may not start it",
    "na": "not possible here",
}

# --------------------------------------------------------------- kernels ----


def _initrd_column(k: dict[str, Any]) -> str:
    if k["initrd"]:
        return str(k["initrd"])
    return "(its own)" if k.get("source") == "uki" else "-"


def kernels_text(kernels: Sequence[dict[str, Any]]) -> str:
    """A table of kernels; under each, why Stage would refuse it, and what a UKI leaves out."""
    if not kernels:
        return "no kernels installed in the allowed directories"
    lines: list[str] = []
    rows = []
    for k in kernels:
        mark = "*" if k["running"] else (">" if k.get("latest") else " ")
        if not k.get("stageable", True):
            mark = "!"
        rows.append(
            [
                f"{mark} {k['release'] or '?'}",
                k.get("source") or "-",
                k["kernel"],
                _initrd_column(k),
            ]
        )
    table_lines = table(["  RELEASE", "SOURCE", "KERNEL", "INITRD"], rows).splitlines()
    lines.append(table_lines[0])
    for k, line in zip(kernels, table_lines[1:], strict=True):
        lines.append(line)
        if k.get("profiles"):
            lines.append(f"      profiles: {', '.join(k['profiles'])}")
        if k.get("problem"):
            lines.append(f"      refused: {k['problem']}")
        lines.extend(f"      {w}" for w in k.get("warnings") or ())
    legend = "* running   > latest (what 'liveupctl stage' takes)   ! Stage would refuse it"
    return "\n".join(lines) + "\n\n" + legend


# --------------------------------------------------------------- history ----


def history_text(entries: Sequence[dict[str, Any]]) -> str:
    if not entries:
        return "no transitions yet"
    rows = []
    for e in entries:
        error = e.get("error") or {}
        note = error.get("message", "") if isinstance(error, dict) else ""
        if e.get("dry_run"):
            note = ("dry run; " + note).rstrip("; ")
        rows.append(
            [
                e.get("id", "?"),
                when(e.get("created")),
                str(e.get("state", "?")),
                f"{e.get('old_release') or '?'} -> {e.get('new_release') or '?'}",
                str(e.get("mode") or "-"),
                note[:80],
            ]
        )
    return table(["ID", "CREATED", "STATE", "KERNEL", "MODE", "NOTE"], rows)


# ----------------------------------------------------------------- hooks ----


def hooks_text(entries: Sequence[dict[str, Any]]) -> str:
    if not entries:
        return "no hooks installed"
    rows = []
    for e in entries:
        source = e["path"]
        if e["overrides"]:
            source += " (overrides " + ", ".join(e["overrides"]) + ")"
        rows.append(
            [
                e["name"],
                e["phase"] or "-",
                "-" if e["order"] is None else f"{e['order']:02d}",
                e["status"],
                source,
            ]
        )
    text = table(["HOOK", "PHASE", "ORDER", "STATUS", "SOURCE"], rows)
    problems = [p for e in entries for p in e["problems"]]
    if problems:
        text += "\n\nproblems:\n" + "\n".join(f"  {p}" for p in problems)
    return text
