"""The preserved services' dump and restore in the transition's report (issue 16, item 5).

The preserve step writes each service's dump (duration, image size) to the
journal, verification its restore; the history entry exports them as
``preserved`` and ``liveupctl show`` prints them.  A bad entry makes the
journal corrupt (reported, never half-used); a journal written before the
field existed reads as having preserved nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from liveupd import schema
from liveupd.ctl import show
from liveupd.transition.history import history
from liveupd.transition.journal import Journal
from liveupd.transition.records import PreservedService, PreserveOutcome

KV = PreservedService(unit="kv-kept.service", dump_usec=1_150_000, image_bytes=4_928_307)


def test_the_services_read_back_as_written_and_reach_the_report(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "T1", boot_id="b1", old_release="r")
    journal.update(preserved=(KV,))
    restored = replace(KV, outcome=PreserveOutcome.RESTORED, restore_usec=7_700_000)
    fresh = PreservedService(
        unit="w@1.service", dump_usec=2, image_bytes=3, outcome=PreserveOutcome.STARTED_FRESH
    )
    journal.update(preserved=(restored, fresh))
    assert Journal.load(journal.path).record.preserved == [restored, fresh]
    [entry] = history(tmp_path)
    assert entry["preserved"] == [
        {
            "unit": "kv-kept.service",
            "dump_usec": 1_150_000,
            "image_bytes": 4_928_307,
            "outcome": "restored",
            "restore_usec": 7_700_000,
        },
        {
            "unit": "w@1.service",
            "dump_usec": 2,
            "image_bytes": 3,
            "outcome": "started-fresh",
            "restore_usec": None,
        },
    ]


def test_a_journal_from_before_the_field_has_no_preserved_services(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "T1", boot_id="b1", old_release="r")
    first = json.loads(journal.path.read_text().splitlines()[0])
    del first["preserved"]
    journal.path.write_text(json.dumps(first) + "\n")
    assert Journal.load(journal.path).record.preserved == []
    assert history(tmp_path)[0]["preserved"] == []


@pytest.mark.parametrize(
    "bad",
    [
        {"unit": "kv.service; rm -rf /", "dump_usec": 1, "image_bytes": 1},
        {"unit": "", "dump_usec": 1, "image_bytes": 1},
        {"unit": "kv.service", "dump_usec": -1, "image_bytes": 1},
        {"unit": "kv.service", "dump_usec": 1, "image_bytes": "big"},
        {"unit": "kv.service", "dump_usec": 1, "image_bytes": 1, "outcome": "maybe"},
        {"unit": "kv.service", "dump_usec": 1, "image_bytes": 1, "restore_usec": -5},
        {"unit": "kv.service", "dump_usec": 1, "image_bytes": 1, "extra": 1},
        {"unit": "kv.service", "image_bytes": 1},
    ],
)
def test_a_bad_entry_is_refused_and_makes_the_journal_corrupt(
    tmp_path: Path, bad: dict[str, Any]
) -> None:
    with pytest.raises(schema.Invalid):
        schema.load(PreservedService, bad)
    journal = Journal.create(tmp_path, "T1", boot_id="b1", old_release="r")
    with journal.path.open("a") as f:
        f.write(json.dumps({"event": "set", "preserved": [bad]}) + "\n")
    scan = Journal.scan(tmp_path)
    assert scan.journals == []
    [corrupt] = scan.corrupt
    assert corrupt.reason.startswith("line 2: ") and "preserved" in corrupt.reason, corrupt.reason
    assert history(tmp_path)[0]["state"] == "corrupt"


def report(state: str, *preserved: PreservedService) -> str:
    entry = {
        "id": "T1",
        "state": state,
        "preserved": [schema.dump(p) for p in preserved],
    }
    return show.text(entry)


def test_show_prints_each_dump_and_what_became_of_it() -> None:
    restored = replace(KV, outcome=PreserveOutcome.RESTORED, restore_usec=7_700_000)
    fresh = PreservedService(
        unit="w@1.service",
        dump_usec=400_000,
        image_bytes=512 << 10,
        outcome=PreserveOutcome.STARTED_FRESH,
    )
    text = report("completed", restored, fresh) + "\n"
    assert (
        "\nPreserved services:\n"
        "  kv-kept.service: dumped in 1.15 s (4.7 MiB), restored in 7.70 s\n"
        "  w@1.service: dumped in 0.40 s (512.0 KiB), state lost: started fresh\n"
    ) in text
    assert "dumped in 1.15 s (4.7 MiB), to be restored on the new kernel" in report("exec", KV)
    assert "resumed by the rollback (no jump)" in report("failed", KV)
    assert "its restore was not checked" in report("fell-back", KV)
    assert "Preserved services" not in report("completed")
