"""bench/service_back.py's pure parts: a run's fields from the probe, and the rendered section.

Host only: no VM.  The measurement itself is ``python -m bench.run --service-back``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bench import run as bench_run
from bench.report import render
from bench.service_back import HEADER, UNIT, outcome, rows, section
from bench.stats import DASH


def shifted(uptime: float) -> float:
    return uptime + 1000.0  # the new boot's clock placed on the host's


def test_the_pre_update_value_means_state_kept() -> None:
    probe = {"answered": 20.5, "value": "abc", "pid": 300001, "started": 3.0, "attempts": 40}
    rec = outcome(("abc", 300001), probe, shifted, 1004.0)
    assert rec["service_back_s"] == pytest.approx(16.5)
    assert rec["service_state"] == "kept" and rec["service_same_pid"] is True
    assert rec["service_probe_started_s"] == pytest.approx(-1.0)
    assert rec["service_attempts"] == 40


def test_a_fresh_value_means_state_lost() -> None:
    probe = {"answered": 9.0, "value": "fff", "pid": 412, "started": 3.0, "attempts": 1}
    rec = outcome(("abc", 300001), probe, shifted, 1000.0)
    assert rec["service_state"] == "lost" and rec["service_same_pid"] is False
    assert rec["service_back_s"] == pytest.approx(9.0)


def test_no_answer_is_an_error_not_a_figure() -> None:
    rec = outcome(("abc", 1), {"error": "no answer in 900 s", "attempts": 9}, shifted, 0.0)
    assert rec == {"service_error": "no answer in 900 s"}
    assert "service_back_s" not in outcome(("abc", 1), {}, shifted, 0.0)


def run(method: str, rnd: int, back: float, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "method": method,
        "round": rnd,
        "total_s": back - 1.0,
        "service_back_s": back,
        "service_state": state,
        "service_attempts": 30,
        "from_release": "A",
        "to_release": "B",
        **extra,
    }


def preserved(dump: int, restore: int) -> list[dict[str, Any]]:
    return [
        {"unit": UNIT, "dump_usec": dump, "image_bytes": 5, "restore_usec": restore},
        {"unit": "other.service", "dump_usec": 9_000_000, "image_bytes": 5},
    ]


RUNS = [
    run("liveupd-direct", 0, 30.0, "kept", preserved=preserved(100_000, 400_000)),
    run("systemctl-kexec", 0, 40.0, "lost"),
    run("kexec-e", 0, 33.0, "lost", service_attempts=1),
    run("liveupd-direct", 1, 28.0, "kept", preserved=preserved(300_000, 200_000)),
    run("systemctl-kexec", 1, 42.0, "lost"),
    {"method": "kexec-e", "round": 1, "error": "RunFailed: came back on A"},
    run("liveupd-direct", 2, 35.0, "lost", preserved=preserved(200_000, 0)),
]


def test_rows_min_median_max_state_and_criu_durations() -> None:
    by = {r[0]: r for r in rows(RUNS)}
    assert list(by) == ["liveupd `direct`", "`systemctl kexec`", "`kexec -e` (floor)"]
    direct = dict(zip(HEADER, by["liveupd `direct`"], strict=True))
    assert direct["runs ok"] == "3/3" and direct["jump"] == "A \u2192 B"
    assert direct["state on the new kernel"] == "state kept (2/3), state lost (1/3)"
    assert direct[HEADER[4]] == "28.00 / **30.00** / 35.00"
    assert direct[HEADER[5]] == "27.00 / **29.00** / 34.00"
    assert direct["CRIU dump s"].startswith("0.20 (0.10")  # other.service is not counted
    assert direct["CRIU restore s"].startswith("0.20 (0.00")
    raw = dict(zip(HEADER, by["`kexec -e` (floor)"], strict=True))
    assert raw["runs ok"] == "1/2" and raw["state on the new kernel"] == "state lost (1/1)"
    assert raw[HEADER[4]] == "33.00 / **33.00** / 33.00"
    assert raw["CRIU dump s"] == DASH
    assert raw["answered at the probe's first try"] == "1"


SERVICE_BACK: dict[str, Any] = {
    "meta": {
        "date_utc": "2026-12-01 01:40",
        "commit": "0123456789abcdef",
        "commit_subject": "x",
        "rounds": 3,
        "methods": ["liveupd-direct", "systemctl-kexec", "kexec-e"],
        "duration_s": 900.0,
    },
    "vm": {
        "runs": RUNS,
        "guest": {"systemd": "systemd 257 (257.13-1~deb13u1)", "kexec_tools": "kexec-tools 2.0.29"},
        "kernels": [
            {"release": "6.12.118+deb13-cloud-amd64"},
            {"release": "7.3.4+deb13-cloud-amd64"},
        ],
    },
}


def test_the_page_has_the_row_and_says_which_run_it_is_from() -> None:
    text = section(SERVICE_BACK)
    assert "2026-12-01 01:40" in text and "`0123456789ab`" in text
    assert "systemd 257 (257.13-1~deb13u1)" in text  # its own guest, not the page's older one
    assert "kernels 6.12.118+deb13-cloud-amd64 and 7.3.4+deb13-cloud-amd64" in text
    assert "**service back with its state**" in text and "state kept (2/3)" in text
    assert "- `kexec -e` (floor), round 1: RunFailed: came back on A" in text
    page = render({"meta": {"date_utc": "2026-11-30 11:46"}, "service_back": SERVICE_BACK})
    assert "## Service back with its state" in page
    assert "from a run of its own (2026-12-01 01:40 UTC" in page
    assert "## Service back with its state" not in render({"meta": {}})


def test_a_service_back_run_merges_without_touching_the_other_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = {"meta": {"date_utc": "2026-11-30 11:46", "commit": "f0f6"}, "vm": {"runs": []}}
    results, doc = tmp_path / "results.json", tmp_path / "benchmarks.md"
    results.write_text(json.dumps(saved))
    calls: list[dict[str, Any]] = []

    def fake_run_vm(rounds: int, methods: Any, hooks: Any, src: Path, log: Any, **kw: Any) -> Any:
        calls.append({"rounds": rounds, "methods": [m.key for m in methods], "hooks": hooks, **kw})
        return copy.deepcopy(SERVICE_BACK["vm"])

    import bench.vm
    from tests.vm import runlock

    monkeypatch.setattr(bench.vm, "run_vm", fake_run_vm)
    monkeypatch.setattr(runlock, "acquire", lambda: True)
    monkeypatch.setattr(runlock, "release", lambda: None)
    argv = ["--service-back", "--source", "worktree", "--results", str(results), "--doc", str(doc)]
    assert bench_run.main(argv) == 0
    assert calls == [
        {
            "rounds": 3,
            "methods": ["liveupd-direct", "systemctl-kexec", "kexec-e"],
            "hooks": (),
            "with_daemon": False,
            "service": True,
        }
    ]
    merged = json.loads(results.read_text())
    assert merged["meta"] == saved["meta"] and merged["vm"] == saved["vm"]
    assert merged["service_back"]["vm"]["runs"] == RUNS
    assert merged["service_back"]["meta"]["methods"] == calls[0]["methods"]
    assert "## Service back with its state" in doc.read_text()
