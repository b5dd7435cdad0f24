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


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, legend: bool = True) -> str:
    """Columns padded to their widest cell; ``legend=False`` (--no-legend): no header."""
    widths = [len(h) if legend else 0 for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [header, *rows] if legend else list(rows)
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
        # Each reason a live update is refused here, named (docs/dbus-api.md, Refusals);
        # None from a daemon that cannot tell (older).
        "refusals": None
        if manager.get("Refusals") is None
        else [{"reason": str(r), "message": str(m)} for r, m in manager["Refusals"]],
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


def kernels_text(kernels: Sequence[dict[str, Any]], *, legend: bool = True) -> str:
    """A table of kernels; under each, why Stage would refuse it, and what a UKI leaves out.

    ``legend=False`` (--no-legend): no header line and no key to the marks.
    """
    if not kernels:
        return "no kernels installed in the allowed directories" if legend else ""
    lines: list[str] = []
    rows = []
    for k in kernels:
        mark = "*" if k["running"] else (">" if k.get("latest") else " ")
        if not k.get("stageable", True):
            mark = "!"
        if k.get("quarantined"):
            mark = "Q"
        rows.append(
            [
                f"{mark} {k['release'] or '?'}",
                k.get("source") or "-",
                k["kernel"],
                _initrd_column(k),
            ]
        )
    table_lines = table(
        ["  RELEASE", "SOURCE", "KERNEL", "INITRD"], rows, legend=legend
    ).splitlines()
    if legend:
        lines.append(table_lines.pop(0))
    for k, line in zip(kernels, table_lines, strict=True):
        lines.append(line)
        if k.get("profiles"):
            lines.append(f"      profiles: {', '.join(k['profiles'])}")
        if k.get("quarantined"):
            lines.append(
                f"      quarantined: transition {k.get('quarantine_transition') or '?'} fell "
                f"back from it ({k['quarantined']}); 'liveupctl unquarantine "
                f"{k['release']}' clears it"
            )
        elif k.get("problem"):
            lines.append(f"      refused: {k['problem']}")
        lines.extend(f"      {w}" for w in k.get("warnings") or ())
    if not legend:
        return "\n".join(lines)
    key = (
        "* running   > latest (what 'liveupctl stage' takes)   ! Stage would refuse it   "
        "Q quarantined"
    )
    return "\n".join(lines) + "\n\n" + key


# --------------------------------------------------------------- history ----


def history_text(entries: Sequence[dict[str, Any]], *, legend: bool = True) -> str:
    if not entries:
        return "no transitions yet" if legend else ""
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
    return table(["ID", "CREATED", "STATE", "KERNEL", "MODE", "NOTE"], rows, legend=legend)


# ----------------------------------------------------------------- hooks ----


def hooks_text(entries: Sequence[dict[str, Any]], *, legend: bool = True) -> str:
    if not entries:
        return "no hooks installed" if legend else ""
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
    text = table(["HOOK", "PHASE", "ORDER", "STATUS", "SOURCE"], rows, legend=legend)
    problems = [p for e in entries for p in e["problems"]]
    if problems:
        text += "\n\nproblems:\n" + "\n".join(f"  {p}" for p in problems)
    return text
