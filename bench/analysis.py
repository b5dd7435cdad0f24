"""Pure helpers: liveupd's own cost from a transition journal, per-method summaries.

Everything here works on plain JSON (a transition's ``journal.json``, the
benchmark's result records), so the report can be regenerated from saved
results and tested without a VM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.stats import Summary

EXECUTE_PHASES = ("quiesce", "unbind", "checkpoint", "flush", "exec")


def hook_prefix(name: str) -> str:
    """The NN of an ``NN-name`` hook (hooks of one phase sharing it run concurrently)."""
    return name.split("-", 1)[0]


def hooks_seconds(steps: Iterable[Mapping[str, Any]], phases: Sequence[str]) -> float:
    """Time inside hooks: sequential groups add up, a concurrent group costs its longest."""
    groups: dict[tuple[str, str], float] = {}
    for s in steps:
        key = str(s.get("key", ""))
        if not key.startswith("hook:") or s.get("phase") not in phases:
            continue
        usec = s.get("usec")
        if usec is None:
            continue
        group = (str(s["phase"]), hook_prefix(key.split(":", 1)[1]))
        groups[group] = max(groups.get(group, 0.0), float(usec) / 1e6)
    return sum(groups.values())


def own_cost(journal: Mapping[str, Any], exec_stamp: float | None) -> dict[str, Any]:
    """liveupd's own cost of one Execute, from its journal and exec stamp (seconds).

    ``execute_to_stamp``: from Execute (``execute_requested``) to the exec
    stamp, the last durable moment before the jump (direct mode: just before
    the state directory's filesystem freezes; systemd mode: just before
    kexec.target is started).  ``hooks``: time inside hooks of the execute
    phases.  ``own``: the difference, i.e. planning, journaling, the built-in
    steps (unbind, checkpoint, sync) and process handling.  ``steps``: each
    step's duration as journaled (steps that ended after the freeze are not
    journaled).
    """
    requested = journal.get("execute_requested")
    steps = [s for s in journal.get("steps", []) if s.get("phase") in EXECUTE_PHASES]
    hooks = hooks_seconds(steps, EXECUTE_PHASES)
    out: dict[str, Any] = {
        "hooks": hooks,
        "hook_count": sum(1 for s in steps if str(s.get("key", "")).startswith("hook:")),
        "execute_to_stamp": None,
        "own": None,
        "steps": {
            str(s["key"]): float(s["usec"]) / 1e6 for s in steps if s.get("usec") is not None
        },
    }
    if isinstance(requested, int | float) and exec_stamp is not None:
        total = exec_stamp - float(requested)
        out["execute_to_stamp"] = total
        out["own"] = total - hooks
    storage = next((s for s in steps if s.get("key") == "storage:storage"), None)
    if storage is not None and exec_stamp is not None and storage.get("started"):
        out["steps"].setdefault("storage:storage (to the stamp)", exec_stamp - storage["started"])
    if out["execute_to_stamp"] is not None:
        assert isinstance(requested, int | float) and exec_stamp is not None
        out["between_steps"] = out["execute_to_stamp"] - covered(
            steps, float(requested), exec_stamp
        )
    return out


def covered(steps: Iterable[Mapping[str, Any]], start: float, end: float) -> float:
    """Seconds of [start, end] inside at least one step (a step without a duration runs to end).

    What is left of Execute outside every step is the engine's own bookkeeping:
    journal writes before and after each step, events, planning.
    """
    spans = []
    for s in steps:
        began = s.get("started")
        if not isinstance(began, int | float):
            continue
        usec = s.get("usec")
        finish = began + usec / 1e6 if usec is not None else end
        lo, hi = max(start, float(began)), min(end, float(finish))
        if hi > lo:
            spans.append((lo, hi))
    total = 0.0
    cur_lo: float | None = None
    cur_hi = 0.0
    for lo, hi in sorted(spans):
        if cur_lo is None or lo > cur_hi:
            if cur_lo is not None:
                total += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    if cur_lo is not None:
        total += cur_hi - cur_lo
    return total


def by_method(runs: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Runs grouped by method, in the order the methods first appear."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        out.setdefault(str(r["method"]), []).append(r)
    return out


def summary(runs: Iterable[Mapping[str, Any]], field: str) -> Summary | None:
    """Median/min/max of ``field`` over the runs that completed (no error)."""
    return Summary.of(r.get(field) for r in runs if not r.get("error") and r.get(field) is not None)


def count(runs: Iterable[Mapping[str, Any]], predicate: str) -> tuple[int, int]:
    """(runs where ``predicate`` is true, runs where it is known) among completed runs."""
    known = [r for r in runs if not r.get("error") and r.get(predicate) is not None]
    return sum(1 for r in known if r[predicate]), len(known)


def phase_breakdown(timeline: Sequence[Sequence[Any]]) -> dict[str, float]:
    """Execute's time by phase, from a run's timeline (seconds after Execute).

    ``[t, "log phase.started NAME"]`` entries delimit the phases; the unbind phase is
    split at ``start devices:devices`` into planning the unbind (the step's prepare:
    enumerating devices, journaling the undo) and the step itself; the last phase ends
    at the exec stamp.
    """
    events = [(float(t), str(what)) for t, what in timeline]
    starts = [(t, w.split()[-1]) for t, w in events if w.startswith("log phase.started ")]
    stamp = next((t for t, w in events if w == "exec stamp"), None)
    out: dict[str, float] = {}
    if starts:
        out["before the first phase"] = starts[0][0]
    for i, (t, name) in enumerate(starts):
        if name in ("verify", "restore"):
            break
        end = starts[i + 1][0] if i + 1 < len(starts) else stamp
        if end is None or (stamp is not None and t >= stamp):
            break
        end = min(end, stamp) if stamp is not None else end
        if name == "unbind":
            step = next((x for x, w in events if w == "start devices:devices" and x >= t), None)
            if step is not None and step <= end:
                out["unbind: planning (prepare)"] = step - t
                out["unbind: the step"] = end - step
                continue
        out[name] = end - t
    return out


def sequential_noop_case(
    case: Mapping[str, Any], *, tmpfs: bool = False, undo: bool = False
) -> bool:
    """Whether an orchestration case (bench/orchestration.py) is no-op hooks with their own
    prefixes (sequential), with the state directory where and the undo as asked."""
    return (
        not case["shared_prefix"]
        and bool(case["tmpfs"]) is tmpfs
        and bool(case.get("undo")) is undo
        and case["program"] == ["/bin/true"]
    )


def orchestration_own_ms(
    cases: Iterable[Mapping[str, Any]], hooks: int, *, tmpfs: bool = False, undo: bool = False
) -> float | None:
    """The median own cost (ms) of the sequential no-op case with ``hooks`` hooks, if run."""
    for c in cases:
        if c["hooks"] == hooks and sequential_noop_case(c, tmpfs=tmpfs, undo=undo):
            return float(c["own_cost_ms"]["median"])
    return None
