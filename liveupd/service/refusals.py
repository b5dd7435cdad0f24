"""Log refused calls without letting a caller flood the log.

A refusal of root is always logged.  Any other caller (by uid once the bus
told it, else by its bus name) gets at most :data:`LINES_PER_WINDOW` lines
per :data:`WINDOW` seconds; past that its refusals are only counted, and one
``refusals.suppressed`` line with the count follows when the window ends (or
the daemon stops).  What is kept is a few counters per caller, at most
:data:`MAX_CALLERS` of them: nothing per refused call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from liveupd import logs

LOG = logs.get("service")

WINDOW = 60.0  # seconds
LINES_PER_WINDOW = 3
MAX_CALLERS = 256


@dataclass
class _Window:
    started: float
    lines: int = 0
    suppressed: int = 0


class RefusalLog:
    def __init__(
        self,
        *,
        window: float = WINDOW,
        lines: int = LINES_PER_WINDOW,
        max_callers: int = MAX_CALLERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.lines = lines
        self.max_callers = max_callers
        self.clock = clock
        self._callers: dict[str, _Window] = {}
        self._timer: asyncio.TimerHandle | None = None

    def note(
        self,
        who: str,
        privileged: bool,
        event: str,
        *,
        level: int = logging.INFO,
        **fields: object,
    ) -> bool:
        """Log ``event`` for caller ``who`` unless over its budget; True if it was logged."""
        if privileged:
            logs.event(LOG, event, level=level, **fields)
            return True
        now = self.clock()
        self.sweep(now)
        w = self._callers.get(who)
        if w is None:
            if len(self._callers) >= self.max_callers:
                self._end(min(self._callers, key=lambda k: self._callers[k].started))
            w = self._callers[who] = _Window(now)
        if w.lines < self.lines:
            w.lines += 1
            logs.event(LOG, event, level=level, **fields)
            return True
        w.suppressed += 1
        self._arm()
        return False

    def sweep(self, now: float | None = None) -> None:
        """End every window that is over (logging what it suppressed)."""
        now = self.clock() if now is None else now
        for who in [k for k, w in self._callers.items() if now - w.started >= self.window]:
            self._end(who)

    def flush(self) -> None:
        """End every window now (the daemon is stopping)."""
        for who in list(self._callers):
            self._end(who)

    def _end(self, who: str) -> None:
        w = self._callers.pop(who)
        if w.suppressed:
            logs.event(
                LOG,
                "refusals.suppressed",
                level=logging.WARNING,
                caller=who,
                count=w.suppressed,
                seconds=round(self.clock() - w.started),
            )

    def _arm(self) -> None:
        """Make sure a window with suppressed refusals is summed up when it ends."""
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.window, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.sweep()
        if any(w.suppressed for w in self._callers.values()):
            self._arm()

    def callers(self) -> int:
        return len(self._callers)


REFUSALS = RefusalLog()
