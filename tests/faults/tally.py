"""What the fault matrices injected and how many returned to the prior state.

The tests add their counts here; ``conftest.py`` prints the totals at the end
of the run (so the line is there without ``-s``).
"""

from __future__ import annotations

COUNTS: dict[str, tuple[int, int]] = {}  # matrix row -> (injected, returned)


def add(row: str, injected: int, returned: int) -> None:
    COUNTS[row] = (injected, returned)


def lines() -> list[str]:
    if not COUNTS:
        return []
    injected = sum(i for i, _ in COUNTS.values())
    returned = sum(r for _, r in COUNTS.values())
    rows = ", ".join(f"{k} {r}/{i}" for k, (i, r) in COUNTS.items())
    return [
        f"fault-injection matrix: {injected} faults injected, {returned} returned to the "
        f"prior state ({returned * 100 // max(injected, 1)}%)",
        f"  by operation (returned/injected): {rows}",
    ]
