"""The latest kernel for the daemon's LatestKernel property, found off the event loop.

Finding it runs Stage's checks (reading, hashing and parsing each kernel and
initrd: ``stageable.py``) on every kernel not in their cache, which takes
seconds for a new kernel; on the event loop that would hold up every other
D-Bus call meanwhile.  Here the search always runs in a worker thread:

* ``get`` (a read of the property) waits for a search: the one under way, or
  a new one; the event loop serves other calls meanwhile;
* ``known`` is the last value found (None before the first search), for
  property-change signals, which never search themselves;
* ``refresh`` starts a search in the background (after a Stage, an Execute or
  a Cancel), and ``on_change`` is told when the value found differs from the
  one before it.

A search that fails is logged and reads as "" (no kernel Stage would take):
the property errs on the safe side and a status display never fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from liveupd import logs

LOG = logs.get("latest-kernel")

OnChange = Callable[[str | None, str], object]  # (the value before, or None; the new one)


class LatestKernel:
    def __init__(self, search: Callable[[], str]) -> None:
        self._search = search  # blocking: runs in a worker thread
        self._known: str | None = None
        self._task: asyncio.Task[str] | None = None
        self.on_change: OnChange | None = None
        self.searches = 0  # how many searches finished (for tests)

    def known(self) -> str | None:
        """The last value found; None when it was never searched for."""
        return self._known

    async def get(self) -> str:
        """The latest kernel: the search under way, or a new one, run in a thread."""
        # Shielded: a reader that goes away does not cancel the others' search.
        return await asyncio.shield(self._start())

    def refresh(self) -> None:
        """Search again in the background (nothing happens twice: one search at a time)."""
        self._start()

    def _start(self) -> asyncio.Task[str]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self._task

    async def _run(self) -> str:
        try:
            value = await asyncio.to_thread(self._search)
        except Exception as e:
            logs.event(
                LOG, "property.failed", level=logging.WARNING, name="LatestKernel", error=repr(e)
            )
            value = ""
        finally:
            self._task = None
        self.searches += 1
        before, self._known = self._known, value
        if before != value and self.on_change is not None:
            self.on_change(before, value)
        return value
