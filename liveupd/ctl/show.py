"""``liveupctl show [ID]``: one transition's report, from the daemon's data.

The data is the transition's history entry (``GetHistory``, the same JSON as
its object's ``Report`` property); a transition still under way adds its live
phase and progress.  ``--json`` prints the entry as it is.  Without an ID the
newest transition is shown; an ID may be shortened to any unique prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from liveupd.ctl import render
from liveupd.ctl.client import Client, RemoteError
from liveupd.ctl.status import UNDER_WAY, seconds, step_text
from liveupd.errors import ExitCode
from liveupd.service import names
from liveupd.transition.phases import NEW_KERNEL_PHASES, OLD_KERNEL_PHASES


class NotFound(Exception):
    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def pick(entries: Sequence[dict[str, Any]], wanted: str) -> dict[str, Any]:
    """The entry ``wanted`` names (an id or a unique prefix; "" the newest)."""
    if not entries:
        raise NotFound("no transitions yet; 'liveupctl stage' starts one", ExitCode.NOTHING_TO_DO)
    if not wanted:
        return entries[0]
    exact = [e for e in entries if e.get("id") == wanted]
    if exact:
        return exact[0]
    found = [e for e in entries if str(e.get("id", "")).startswith(wanted)]
    shown = wanted if len(wanted) <= 80 else wanted[:80] + "..."
    if not found:
        raise NotFound(f"no transition {shown!r}; 'liveupctl history' lists them")
    if len(found) > 1:
        ids = ", ".join(str(e["id"]) for e in found[:5])
        raise NotFound(f"{shown!r} names {len(found)} transitions ({ids}); give more of the id")
    return found[0]


async def fetch(client: Client, wanted: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The entry, and the live properties of a transition still under way."""
    entry = pick(await client.history(0), wanted)
    live = None
    if entry.get("state") in UNDER_WAY:
        try:
            live = await client.transition(names.transition_path(str(entry["id"])))
        except RemoteError:
            live = None
    return entry, live


def _ms(usec: float | int | None) -> str:
    return "-" if usec is None else f"{usec / 1000:8.1f} ms"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:6.2f} s"


def text(r: dict[str, Any], live: dict[str, Any] | None = None) -> str:
    """The transition report, as a person reads it."""
    if r.get("state") == "corrupt":
        return "\n".join(
            [
                f"Transition {r['id']}: corrupt",
                f"  journal    {r.get('journal')}",
                f"  reason     {r.get('corrupt')}",
                f"  {(r.get('error') or {}).get('message', '')}",
            ]
        )
    state = str((live or {}).get("State") or r["state"])
    dry = " (dry run: a simulated machine)" if r.get("dry_run") else ""
    lines = [
        f"Transition {r['id']}: {state}{dry}",
        f"  kernel     {r.get('old_release') or '?'} -> {r.get('new_release') or '?'}"
        + (f" ({r['mode']} mode)" if r.get("mode") else ""),
        f"  command    {r.get('cmdline') or '-'}",
        f"  created    {render.when(r.get('created'))}"
        + (f", finished {render.when(r.get('finished'))}" if r.get("finished") else ""),
    ]
    if live is not None and state in UNDER_WAY:
        lines.append(f"  now        {live.get('Phase') or state}, {live.get('Progress', 0)}% done")
    if r.get("rollback_of"):
        lines.append(f"  rolls back {r['rollback_of']} (its verification failed)")
    phases = r.get("phases_usec") or {}
    for title, names_ in (
        ("Phases on the old kernel (check and load: at Stage, before Execute):", OLD_KERNEL_PHASES),
        ("Phases on the new kernel:", NEW_KERNEL_PHASES),
    ):
        shown = [f"  {p:<11} {_ms(phases[p])}" for p in names_ if p in phases]
        if shown:
            lines += ["", title, *shown]
    lines += ["", "Hooks:"]
    hooks = r.get("hooks") or []
    lines += [
        f"  {h['hook']:<22} {h['phase']:<10} {h['status']:<8} {_ms(h.get('usec'))}" for h in hooks
    ] or ["  (none)"]
    lines += ["", "Devices unbound before the jump:"]
    back = {True: "bound again", False: "NOT bound again", None: "not verified"}
    for d in r.get("devices") or []:
        ifaces = ", ".join(d.get("interfaces") or []) or "-"
        lines.append(
            f"  {d['sys_path']}\n    driver {d['driver']}, interfaces {ifaces}: "
            f"{back[d.get('bound_again')]}"
        )
    if not r.get("devices"):
        lines.append("  (none)")
    lines += ["", "Filesystems frozen (in order): " + (", ".join(r.get("frozen") or []) or "-")]
    lines += _listeners(r.get("units_stopped") or [])
    lines += _sessions(r.get("sessions_ended") or [])
    lines += _preserved(r.get("preserved") or [], state)
    lines += _outcome(r, state)
    return "\n".join(lines)


def _listeners(units: list[str]) -> list[str]:
    """The remote-login listeners stopped before the sessions were ended."""
    if not units:
        return []
    return ["", "Remote-login listeners stopped (no new logins): " + ", ".join(units)]


def _sessions(ended: list[dict[str, Any]]) -> list[str]:
    """The remote login sessions the transition ended before the network went down."""
    if not ended:
        return []
    lines = ["", "Remote sessions ended before the network went down:"]
    for s in ended:
        who = f"{s.get('user')} ({s.get('service') or '?'}"
        who += f" from {s['remote_host']})" if s.get("remote_host") else ")"
        notes = ["the update's own, ended last"] if s.get("caller") else []
        if s.get("error"):
            notes.append(f"NOT ended: {s['error']}")
        elif not s.get("gone", True):
            notes.append("still there when liveupd stopped waiting")
        lines.append(f"  session {s.get('id')}: {who}" + (f", {'; '.join(notes)}" if notes else ""))
    return lines


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def _usec(value: Any) -> str:
    return f"{value / 1e6:.2f} s" if isinstance(value, int | float) else "?"


def _preserved(services: list[dict[str, Any]], state: str) -> list[str]:
    """The ``[preserve] units``: their CRIU dump on the old kernel, their restore on the new."""
    if not services:
        return []
    lines = ["", "Preserved services:"]
    for p in services:
        line = f"  {p.get('unit')}: dumped in {_usec(p.get('dump_usec'))}"
        line += f" ({_size(int(p.get('image_bytes') or 0))})"
        outcome = p.get("outcome")
        if outcome == "restored":
            line += f", restored in {_usec(p.get('restore_usec'))}"
        elif outcome == "started-fresh":
            line += ", state lost: started fresh"
        elif state in UNDER_WAY:
            line += ", to be restored on the new kernel"
        elif state in ("failed", "cancelled"):
            line += ", resumed by the rollback (no jump)"
        else:
            line += ", its restore was not checked"
        lines.append(line)
    return lines


def _outcome(r: dict[str, Any], state: str) -> list[str]:
    lines: list[str] = []
    error = r.get("error")
    if isinstance(error, dict) and state != "completed":
        lines += [
            "",
            f"Failed at: {step_text(error.get('step'))} ({error.get('kind')})",
            f"  {error.get('message')}",
        ]
    if r.get("undone"):
        lines += ["Undone (most recent first): " + ", ".join(r["undone"])]
    for failure in r.get("undo_failures") or []:
        lines.append(f"NOT UNDONE: {failure}")
    verification = r.get("verification")
    if not verification:
        if state in UNDER_WAY:
            lines += ["", "Verification on the new kernel: not yet"]
        return lines
    if verification.get("superseded"):
        return [*lines, "", f"Superseded: {verification['superseded']}"]
    if verification.get("fell_back"):
        return [*lines, "", f"Fell back to the old kernel: {verification['fell_back']}"]
    problems = verification.get("problems") or []
    verdict = "passed" if not problems else "FAILED"
    where = " (simulated)" if r.get("dry_run") else ""
    lines += ["", f"Verification on the new kernel{where}: {verdict}"]
    lines += [f"  {p['message']}" for p in problems]
    if verification.get("watchdog"):
        lines.append(f"  watchdog: {verification['watchdog']}")
    lines += [f"  warning: {w}" for w in verification.get("warnings") or ()]
    rollback = verification.get("rollback") or {}
    if rollback.get("transition"):
        lines.append(f"  rolled back to the previous kernel: transition {rollback['transition']}")
    elif rollback.get("skipped"):
        lines.append(f"  no rollback: {rollback['skipped']}")
    downtime = verification.get("downtime") or {}
    if downtime:
        lines += [
            "Downtime:",
            f"  exec to new kernel       {_s(downtime.get('exec_to_kernel_s'))}",
            f"  new kernel to verified   {_s(downtime.get('kernel_to_verified_s'))}",
            f"  total (liveupd's clock)  {_s(downtime.get('downtime_s'))}",
        ]
    created, finished = r.get("created"), r.get("finished")
    if isinstance(created, int | float) and isinstance(finished, int | float):
        lines.append(f"Stage to verified: {seconds(finished - created)}")
    return lines
