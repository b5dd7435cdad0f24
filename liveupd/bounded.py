"""Run blocking file I/O off the event loop, with a bound on time.

A file on a hung network filesystem (or anything else that blocks in the
kernel) must not freeze the daemon: the work runs in a thread of its own, and
the caller stops waiting after ``timeout`` seconds.  The thread is a daemon
thread outside the loop's executor, so one that never returns neither takes a
worker from other calls nor holds up the daemon's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class TimedOut(Exception):
    """The work did not finish within its time bound (it may still be running)."""


async def run_bounded(fn: Callable[[], T], *, timeout: float, what: str) -> T:
    """``fn()`` in a thread; its result or exception, or TimedOut after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as e:
            error = e
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=f"liveupd-{what}", daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError:
        raise TimedOut(f"{what} did not finish within {timeout:g} s") from None
