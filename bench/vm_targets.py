"""Issue 19's VM targets, judged from the downtime runs of the same ``make bench``.

Each target is (what, measured, verdict); a target whose runs are missing is
"not measured". Medians over the runs that completed; ratios are of medians, with
the median of each round's own ratio beside where the methods share rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.analysis import by_method
from bench.stats import DASH, Summary, fmt_summary
from bench.tables import FLOOR, Run, median_of, ok_runs, paired_ratios

DIRECT = "liveupd-direct"
SYSTEMCTL = "systemctl-kexec"
RECOVERED_AFTER_MARKER_S = 1.0
NEW_SIDE_RATIO = 1.05
OWN_COST_S = 0.5
DOWNTIME_RATIO = 1.05


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def _ratio_row(
    what: str, runs: Sequence[Run], field: str, other: str, limit: float
) -> tuple[str, str, str]:
    groups = by_method(runs)
    mine = median_of(ok_runs(groups.get(DIRECT, [])), field)
    theirs = median_of(ok_runs(groups.get(other, [])), field)
    if mine is None or theirs is None or theirs <= 0:
        return (what, DASH, "not measured")
    ratio = mine / theirs
    paired = Summary.of(paired_ratios(runs, DIRECT, other)) if field == "total_s" else None
    same_round = f"; same round {paired.median:.2f}x" if paired else ""
    return (
        what,
        f"{mine:.2f} vs {theirs:.2f} s (medians): {ratio:.2f}x{same_round}",
        _verdict(ratio <= limit),
    )


def _limit_row(
    what: str, seconds: Summary | None, suffix: str, limit: float
) -> tuple[str, str, str]:
    """A target on a median in seconds: met when it is at most ``limit``."""
    if seconds is None:
        return (what, DASH, "not measured")
    return (what, f"{fmt_summary(seconds, 2)} s{suffix}", _verdict(seconds.median <= limit))


def vm_targets(res: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    runs: Sequence[Run] = (res.get("vm") or {}).get("runs") or []
    direct = ok_runs(by_method(runs).get(DIRECT, []))
    out: list[tuple[str, str, str]] = []
    late = Summary.of(
        r["recovered_s"] - r["total_s"]
        for r in direct
        if r.get("recovered_s") is not None and r.get("total_s") is not None
    )
    out.append(
        _limit_row(
            "recovery reported <= 1.0 s after the boot marker (`direct`, median)",
            late,
            " after it",
            RECOVERED_AFTER_MARKER_S,
        )
    )
    out.append(
        _ratio_row(
            "new side <= 1.05x `systemctl kexec`'s", runs, "new_side_s", SYSTEMCTL, NEW_SIDE_RATIO
        )
    )
    own = Summary.of((r.get("own_cost") or {}).get("own") for r in direct)
    out.append(
        _limit_row("old side: liveupd's own cost <= 0.5 s (`direct`, TCG)", own, "", OWN_COST_S)
    )
    out.append(
        _ratio_row(
            "`direct` downtime <= 1.05x raw `kexec -e`", runs, "total_s", FLOOR, DOWNTIME_RATIO
        )
    )
    out.append(
        _ratio_row(
            "`direct` downtime no more than `systemctl kexec`'s", runs, "total_s", SYSTEMCTL, 1.0
        )
    )
    return out
