"""Give back memory a hostile caller or a big file made the daemon take.

Two things would otherwise keep it:

* **glibc's malloc** raises its mmap threshold to the size of any large block
  freed (up to 32 MiB), after which blocks of that size come from the heap and
  stay with the process once freed: a staged 14 MB kernel, or ten 10 MB
  messages, would stay in the daemon's RSS.  :func:`fixed_mmap_threshold`
  fixes the threshold at 128 KiB (``mallopt``), so every large block is its own
  mapping and goes back to the kernel when freed.
* **reference cycles**: dbus-fast keeps each async method call's message in a
  cycle (its reply callback and the call's frame) that only the garbage
  collector frees, and it runs by object counts, not bytes: a flood of 10 MB
  calls adds few objects and much memory.  :func:`collect_soon` runs a full
  collection shortly after a refused oversized call, at most one per 0.2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 128 * 1024
COLLECT_DELAY = 0.2  # seconds after a refusal: the reply is out, the call's objects are garbage


def fixed_mmap_threshold() -> bool:
    """Fix malloc's mmap and trim thresholds (glibc); False where there is no mallopt."""
    try:
        import cffi  # type: ignore[import-untyped, unused-ignore]

        ffi = cffi.FFI()
        ffi.cdef("int mallopt(int param, int value);")
        lib: Any = ffi.dlopen(None)
        return bool(lib.mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(
            lib.mallopt(M_TRIM_THRESHOLD, THRESHOLD)
        )
    except (ImportError, OSError, AttributeError):
        return False


class _Pending:
    handle: asyncio.TimerHandle | None = None
    asked_again = False  # a refusal came after the pending collection was scheduled


def collect_soon(delay: float = COLLECT_DELAY) -> None:
    """A full garbage collection ``delay`` seconds from now, at most one per ``delay``.

    A refused call's objects become garbage once its reply is out, hence the
    delay.  Refusals arriving meanwhile do not schedule more (a flood costs one
    collection per ``delay``, and holds at most that long's worth of calls), but
    one more collection follows the last of them.
    """
    with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule on
        if _Pending.handle is None:
            _Pending.asked_again = False
            _Pending.handle = asyncio.get_running_loop().call_later(delay, _collect, delay)
        else:
            _Pending.asked_again = True


def _collect(delay: float) -> None:
    _Pending.handle = None
    gc.collect()
    if _Pending.asked_again:
        collect_soon(delay)
