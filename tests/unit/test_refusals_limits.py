"""The service's cheap guards: size limits, the rate-limited refusal log, polkit's reply type."""

from __future__ import annotations

import logging

import pytest
from dbus_fast import Variant

from liveupd.errors import InvalidArgument
from liveupd.quoting import clip, quote
from liveupd.service import limits
from liveupd.service.polkit import PolkitBadReply, Verdict, parse_reply
from liveupd.service.refusals import RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_few_lines_per_caller_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = RefusalLog(window=60, lines=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="liveupd"):
        logged = [log.note("uid 65534", False, "auth.denied", uid=65534) for _ in range(50)]
        assert logged == [True] * 3 + [False] * 47
        assert log.note("uid 0", True, "auth.denied", uid=0)  # root: always
        assert log.note("uid 1000", False, "auth.denied", uid=1000)  # another caller
        clock.now += 61
        assert log.note("uid 65534", False, "auth.denied", uid=65534)  # a new window
    summaries = [r for r in caplog.records if r.getMessage() == "refusals.suppressed"]
    assert len(summaries) == 1
    fields = summaries[0].fields  # type: ignore[attr-defined]
    assert fields["caller"] == "uid 65534" and fields["count"] == 47


def test_what_is_kept_is_bounded_by_callers_not_calls() -> None:
    log = RefusalLog(window=60, lines=1, max_callers=8, clock=Clock())
    for n in range(1000):
        log.note(f":1.{n}", False, "method.refused")
    assert log.callers() == 8


def test_sizes_are_measured_without_walking_everything() -> None:
    assert limits.size_of(Variant("s", "x" * 10), 100) == 10
    assert limits.size_of(Variant("ay", b"x" * 10), 100) == 10
    huge = Variant("ai", list(range(1_000_000)))
    assert 100 < limits.size_of(huge, 100) < 200
    with pytest.raises(InvalidArgument) as e:
        limits.check_options("Stage", {"append": Variant("s", "x" * 10_000_000)})
    assert e.value.message == (
        "Stage: the value of option 1 is over 16384 characters long; at most 4096 are accepted"
    )
    with pytest.raises(InvalidArgument, match="17 options given"):
        limits.check_options("Stage", {str(n): Variant("b", True) for n in range(17)})
    assert limits.peek_bool({"interactive": Variant("b", True)}, "interactive")
    assert not limits.peek_bool({"interactive": Variant("s", "true")}, "interactive")


def test_quoting_escapes_and_cuts() -> None:
    assert quote("a'b\n\x1b\u202e") == "'a\\'b\\n\\x1b\\u202e'"
    assert quote("x" * 300) == "'" + "x" * 200 + "'... (300 characters)"
    assert clip("/boot/vmlinuz") == "/boot/vmlinuz"


@pytest.mark.parametrize(
    ("signature", "body"),
    [
        ("(sss)", [["false", "false", ""]]),
        ("(iia{ss})", [[1, 0, {}]]),
        ("bba{ss}", [True, False, {}]),
        ("", []),
    ],
)
def test_a_polkit_reply_of_another_type_is_not_an_answer(
    signature: str, body: list[object]
) -> None:
    with pytest.raises(PolkitBadReply, match="not \\(bba\\{ss\\}\\)"):
        parse_reply(signature, body)


def test_a_well_typed_polkit_reply() -> None:
    assert parse_reply("(bba{ss})", [[False, True, {"k": "v"}]]) == Verdict(False, True, {"k": "v"})


def test_large_blocks_go_back_to_the_kernel_when_freed() -> None:
    from liveupd import memory

    assert memory.fixed_mmap_threshold()  # glibc: mallopt took both thresholds


def test_a_burst_of_refusals_costs_two_collections_not_one_per_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import gc

    from liveupd import memory

    collections: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(len(collections)))

    async def idle() -> None:
        while memory._Pending.handle is not None:
            await asyncio.sleep(0.005)

    async def go() -> list[int]:
        for _ in range(100):  # a burst of refusals: one collection pending ...
            memory.collect_soon(0.01)
        await idle()  # ... then one more after the last of them
        counts = [len(collections)]
        memory.collect_soon(0.01)  # a lone refusal: one collection
        await idle()
        return [*counts, len(collections)]

    assert asyncio.run(go()) == [2, 3]
