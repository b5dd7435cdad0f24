"""Downtime figures of a transition, from the exec stamp to verification.

    exec stamp ----------- new kernel starts ----------- verification finished
         |<-- exec_to_kernel -->|<----- kernel_to_verified ----->|
         |<----------------------- downtime ------------------->|

The exec stamp is CLOCK_REALTIME taken just before the jump (or, if that file
is missing, the checkpoint's write time: an estimate, and said so).  When the
new kernel started is derived from /proc/uptime read together with the clock
at the end of verification.
"""

from __future__ import annotations

from dataclasses import dataclass

from liveupd.transition.records import DowntimeRecord


@dataclass(frozen=True)
class Downtime:
    exec_stamp: float  # CLOCK_REALTIME, seconds
    exec_stamp_source: str  # "exec-stamp" or "checkpoint" (estimate)
    kernel_started: float  # CLOCK_REALTIME when the new kernel began (now - uptime)
    verified: float  # CLOCK_REALTIME when verification finished
    uptime: float  # /proc/uptime when verification finished

    @property
    def downtime(self) -> float:
        return self.verified - self.exec_stamp

    @property
    def exec_to_kernel(self) -> float:
        return self.kernel_started - self.exec_stamp

    @property
    def kernel_to_verified(self) -> float:
        return self.uptime

    def to_record(self) -> DowntimeRecord:
        return DowntimeRecord(
            exec_stamp=round(self.exec_stamp, 6),
            exec_stamp_source=self.exec_stamp_source,
            kernel_started=round(self.kernel_started, 6),
            verified=round(self.verified, 6),
            uptime_at_verified=round(self.uptime, 3),
            downtime_s=round(self.downtime, 3),
            exec_to_kernel_s=round(self.exec_to_kernel, 3),
            kernel_to_verified_s=round(self.kernel_to_verified, 3),
        )


def measure(exec_stamp: float | None, written: float, uptime: float, now: float) -> Downtime:
    """Figures from the stamp (or the checkpoint time), /proc/uptime and the clock now."""
    source = "exec-stamp" if exec_stamp is not None else "checkpoint"
    start = exec_stamp if exec_stamp is not None else written
    return Downtime(
        exec_stamp=start,
        exec_stamp_source=source,
        kernel_started=now - uptime,
        verified=now,
        uptime=uptime,
    )
