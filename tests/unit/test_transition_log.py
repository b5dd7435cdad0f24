"""A transition's own log (``log.jsonl``): every line, in order; never fails the transition."""

from __future__ import annotations

import logging
import shutil

import pytest

from liveupd.backends import dryrun
from liveupd.config import Config
from liveupd.transition.context import LOG_NAME, TransitionContext, read_log
from liveupd.transition.journal import Journal


def context(config: Config) -> TransitionContext:
    journal = Journal.create(config.state_dir, "T1", boot_id="b1", old_release="r")
    return TransitionContext(
        transition_id="T1",
        config=config,
        backends=dryrun.make(config.state_dir),
        journal=journal,
        events=lambda e: None,
    )


def test_lines_are_appended_in_order_and_held_ones_land_at_release(config: Config) -> None:
    ctx = context(config)
    ctx.log("one", n=1)
    ctx.hold_writes()
    ctx.log("two", n=2)
    assert [r["event"] for r in read_log(ctx.dir)] == ["one"]  # frozen: kept in memory
    ctx.release_writes()
    ctx.log("three", n=3)
    assert [(r["event"], r["n"]) for r in read_log(ctx.dir)] == [
        ("one", 1),
        ("two", 2),
        ("three", 3),
    ]


def test_a_vanished_transition_directory_is_made_again(config: Config) -> None:
    ctx = context(config)
    shutil.rmtree(ctx.dir)
    ctx.log("after", n=1)
    assert [r["event"] for r in read_log(ctx.dir)] == ["after"]


def test_an_unwritable_log_is_reported_once_and_fails_nothing(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = context(config)
    (ctx.dir / LOG_NAME).mkdir()  # open() fails: EISDIR
    with caplog.at_level(logging.ERROR, logger="liveupd"):
        ctx.log("one")
        ctx.log("two")
    failed = [r for r in caplog.records if r.getMessage() == "transition-log.write-failed"]
    assert len(failed) == 1
    assert failed[0].fields == {"transition": "T1", "error": "Is a directory"}  # type: ignore[attr-defined]
