"""Where a guest's uptime clock sits on the host's clock.

The guest agent answers ``ping`` with ``/proc/uptime`` (CLOCK_BOOTTIME, printed
with two decimals, i.e. cut to 10 ms).  For one ping sent at host time ``s``
and answered at ``r`` with uptime ``u``, the guest read its clock at some host
time ``t`` in ``[s, r]`` and its true uptime then was in ``[u, u + 0.01)``, so
the host time at which the guest's uptime was zero (its *offset*) lies in
``[s - u - 0.01, r - u]``.  Every ping of one boot narrows the same interval:
the offset is the midpoint of their intersection and the error is half its
width.  Under TCG the guest clock follows the host's clock (no drift to speak
of over a minute), which :func:`offset_interval` checks: an empty
intersection means it did not, and the midpoint of the tightest ping is used.

For a new boot, the offset is the host time at which the new kernel's clock
started: the end of the old kernel, the purgatory or firmware and the early
boot before timekeeping lie before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

UPTIME_RESOLUTION = 0.01  # /proc/uptime has two decimals (truncated)


@dataclass(frozen=True)
class PingSample:
    sent: float  # host time.monotonic() when the request left
    received: float  # host time.monotonic() when the reply arrived
    uptime: float  # the guest's /proc/uptime in the reply

    @property
    def rtt(self) -> float:
        return self.received - self.sent


@dataclass(frozen=True)
class Offset:
    """Host monotonic time at which the guest's uptime was zero, with its error bound."""

    value: float
    error: float  # half the width of the interval it is known to lie in
    samples: int
    consistent: bool  # the per-ping intervals all overlapped
    min_rtt: float

    def host_time(self, uptime: float) -> float:
        """The host time of a guest uptime reading."""
        return self.value + uptime

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "error": self.error,
            "samples": self.samples,
            "consistent": self.consistent,
            "min_rtt": self.min_rtt,
        }


def offset_interval(samples: Sequence[PingSample], resolution: float = UPTIME_RESOLUTION) -> Offset:
    """The guest clock's offset from ``samples`` of one boot (see the module docstring)."""
    if not samples:
        raise ValueError("no ping samples")
    lo = max(s.sent - s.uptime - resolution for s in samples)
    hi = min(s.received - s.uptime for s in samples)
    best = min(samples, key=lambda s: s.rtt)
    if lo <= hi:
        return Offset((lo + hi) / 2, (hi - lo) / 2, len(samples), True, best.rtt)
    # The intervals do not overlap (the guest clock jumped, or drifted): fall back on the
    # tightest single ping.
    lo1 = best.sent - best.uptime - resolution
    hi1 = best.received - best.uptime
    return Offset((lo1 + hi1) / 2, (hi1 - lo1) / 2, len(samples), False, best.rtt)


def sample_pings(
    ping: Callable[[], float], count: int = 25, gap: float = 0.0037
) -> list[PingSample]:
    """``count`` pings (``ping()`` returns the guest uptime), ``gap`` seconds apart.

    The gap is not a multiple of the clock's 10 ms step, so the pings land at
    different phases of it and the intersection narrows below the resolution.
    """
    out: list[PingSample] = []
    for _ in range(count):
        sent = time.monotonic()
        uptime = ping()
        out.append(PingSample(sent, time.monotonic(), uptime))
        time.sleep(gap)
    return out
