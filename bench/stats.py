"""Small statistics for benchmark samples: median, min, max, and how to print them."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DASH = "\u2013"  # an en dash


@dataclass(frozen=True)
class Summary:
    """Median, min and max of ``n`` samples (``None`` samples are left out and counted)."""

    n: int
    median: float
    min: float
    max: float
    missing: int = 0

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Summary | None:
        """The summary of the values that are not None; None when there is none."""
        given = list(values)
        present = [float(v) for v in given if v is not None]
        if not present:
            return None
        return cls(
            n=len(present),
            median=statistics.median(present),
            min=min(present),
            max=max(present),
            missing=len(given) - len(present),
        )

    def scaled(self, factor: float) -> Summary:
        return Summary(
            self.n, self.median * factor, self.min * factor, self.max * factor, self.missing
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "missing": self.missing,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(
            n=int(data["n"]),
            median=float(data["median"]),
            min=float(data["min"]),
            max=float(data["max"]),
            missing=int(data.get("missing", 0)),
        )


def fmt_num(value: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals; a dash for None."""
    if value is None:
        return DASH
    return f"{value:.{digits}f}"


def fmt_summary(s: Summary | None, digits: int = 2, unit: str = "") -> str:
    """``median (min-max)``; a dash when there were no samples."""
    if s is None:
        return DASH
    text = f"{s.median:.{digits}f}{unit}"
    if s.n > 1:
        text += f" ({s.min:.{digits}f}{DASH}{s.max:.{digits}f})"
    return text


def ratio(value: float | None, floor: float | None) -> float | None:
    if value is None or floor is None or floor <= 0:
        return None
    return value / floor


def fmt_ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}x"


def linear_fit(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares (intercept, slope) of y over x; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    slope = sxy / sxx
    return my - slope * mx, slope
