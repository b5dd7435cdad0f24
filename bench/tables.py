"""What the report's sections share: method labels, the floor, run filters, Markdown tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.analysis import summary
from bench.stats import DASH, fmt_summary, linear_fit

Run = Mapping[str, Any]

LABELS = {
    "liveupd-direct": "liveupd `direct`",
    "liveupd-systemd": "liveupd `systemd`",
    "kexec-e": "`kexec -e` (floor)",
    "systemctl-kexec": "`systemctl kexec`",
    "reboot": "`systemctl reboot` (SeaBIOS)",
    "kexec-e-nosync": "`kexec -e --no-sync`",
    "ovmf-reboot": "`systemctl reboot` (OVMF UEFI)",
    "ovmf-kexec-e": "`kexec -e` (booted by OVMF)",
}
FLOOR = "kexec-e"


def label(key: str) -> str:
    return LABELS.get(key, key)


def ok_runs(runs: Iterable[Run]) -> list[Run]:
    return [r for r in runs if not r.get("error")]


def fmt_runs(runs: Iterable[Run], field: str, digits: int = 2) -> str:
    return fmt_summary(summary(runs, field), digits)


def median_of(runs: Iterable[Run], field: str) -> float | None:
    s = summary(runs, field)
    return s.median if s else None


def paired_ratios(runs: Sequence[Run], method: str, floor: str = FLOOR) -> list[float]:
    """total_s of ``method`` over the floor's in the same round, for each round having both."""
    floors = {r["round"]: r["total_s"] for r in ok_runs(runs) if r["method"] == floor}
    return [
        r["total_s"] / floors[r["round"]]
        for r in ok_runs(runs)
        if r["method"] == method and r["round"] in floors and floors[r["round"]] > 0
    ]


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def frac(pair: tuple[int, int]) -> str:
    n, total = pair
    return f"{n}/{total}" if total else DASH


def vm_hook_fit(ok: Sequence[Run]) -> tuple[float, float] | None:
    points = [
        (float(r["hooks"]), float(r["own_cost"]["own"]))
        for r in ok
        if not r.get("shared_prefix") and r["own_cost"].get("own") is not None
    ]
    return linear_fit(points)
