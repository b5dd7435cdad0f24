"""LatestKernel is searched for in a worker thread: a slow search blocks no other call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from liveupd.kernel.latest import LatestKernel

DEADLOCK_GUARD = 10.0  # seconds: only reached if the search ran on the event loop


def test_a_slow_search_does_not_block_other_reads() -> None:
    """The search waits until another read was served: on the event loop it could not be
    (the other read would wait for the search), in a thread it is."""
    started, served = threading.Event(), threading.Event()
    order: list[str] = []

    def search() -> str:
        started.set()
        served.wait(DEADLOCK_GUARD)
        order.append("search finished")
        return "6.1.0-56-cloud-amd64"

    async def scenario() -> str:
        latest = LatestKernel(search)
        reading = asyncio.create_task(latest.get())
        await asyncio.to_thread(started.wait, DEADLOCK_GUARD)  # the search is under way
        order.append("other read served")  # e.g. Get State, on the event loop
        served.set()
        return await reading

    assert asyncio.run(scenario()) == "6.1.0-56-cloud-amd64"
    assert order == ["other read served", "search finished"]


def test_reads_during_a_search_share_it() -> None:
    go = threading.Event()
    calls: list[int] = []

    def search() -> str:
        calls.append(1)
        go.wait(DEADLOCK_GUARD)
        return "B"

    async def scenario() -> list[str]:
        latest = LatestKernel(search)
        readers = [asyncio.create_task(latest.get()) for _ in range(5)]
        await asyncio.sleep(0)
        go.set()
        return list(await asyncio.gather(*readers))

    assert asyncio.run(scenario()) == ["B"] * 5
    assert len(calls) == 1


def test_known_and_changes() -> None:
    values = iter(["A", "A", "B"])
    changes: list[tuple[str | None, str]] = []

    async def scenario(latest: LatestKernel) -> None:
        assert latest.known() is None  # never searched: nothing to signal
        assert await latest.get() == "A"
        assert latest.known() == "A"
        await latest.get()  # the same value again: no change
        latest.refresh()
        await _until(lambda: latest.searches == 3)
        assert latest.known() == "B"

    latest = LatestKernel(lambda: next(values))
    latest.on_change = lambda before, now: changes.append((before, now))
    asyncio.run(scenario(latest))
    assert changes == [(None, "A"), ("A", "B")]


def test_a_failing_search_reads_as_no_kernel_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def search() -> str:
        raise OSError(5, "Input/output error")

    latest = LatestKernel(search)
    assert asyncio.run(latest.get()) == ""
    [record] = [r for r in caplog.records if r.getMessage() == "property.failed"]
    assert record.fields["name"] == "LatestKernel"  # type: ignore[attr-defined]
    assert "Input/output error" in str(record.fields["error"])  # type: ignore[attr-defined]


async def _until(done: Callable[[], bool]) -> None:
    for _ in range(1000):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached")
