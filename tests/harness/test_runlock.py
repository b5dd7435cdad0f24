"""The host's VM run lock: at most LIVEUPD_VM_SLOTS processes run VMs at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm import runlock

ROOT = Path(__file__).resolve().parents[2]
# A process that takes the run lock, says so on stdout, and holds it until stdin closes.
HOLDER = (
    "import sys; from tests.vm import runlock; runlock.acquire(); "
    "print('held', flush=True); sys.stdin.read()"
)


def _holder(cache: Path, slots: int) -> subprocess.Popen[str]:
    env = dict(os.environ, LIVEUPD_VM_CACHE=str(cache), LIVEUPD_VM_SLOTS=str(slots))
    env.pop("LIVEUPD_VM_NO_RUN_LOCK", None)
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _held(proc: subprocess.Popen[str]) -> bool:
    assert proc.stdout is not None
    return proc.stdout.readline().strip() == "held"


def _end(proc: subprocess.Popen[str]) -> str:
    _, err = proc.communicate(timeout=60)
    return err


def test_as_many_processes_as_slots_run_vms_at_once_and_the_next_waits(tmp_path: Path) -> None:
    first = _holder(tmp_path, 2)
    second = None
    try:
        assert _held(first)  # the first slot, vm-run.lock
        second = _holder(tmp_path, 2)
        assert _held(second)  # at the same time: the second slot, vm-run.1.lock
        third = _holder(tmp_path, 2)
        try:
            assert third.stderr is not None
            # It says it waits (stderr) before it blocks; it holds nothing yet.
            assert "waiting for" in third.stderr.readline()
            assert sorted(p.name for p in tmp_path.glob("vm-run*.lock")) == [
                "vm-run.1.lock",
                "vm-run.lock",
            ]
            holders = (first, second)  # of vm-run.lock and vm-run.1.lock
            _end(holders[runlock.waiting_slot(third.pid, 2)])  # free the slot it waits for
            assert _held(third)
        finally:
            _end(third)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                _end(proc)


def test_one_slot_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runlock.SLOTS_ENV, raising=False)
    assert runlock.slots() == 1
    monkeypatch.setenv(runlock.SLOTS_ENV, "0")
    assert runlock.slots() == 1


def test_a_bad_slot_count_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runlock.SLOTS_ENV, "two")
    with pytest.raises(ValueError, match="LIVEUPD_VM_SLOTS='two': expected a whole number"):
        runlock.slots()
