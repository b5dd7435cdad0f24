"""Corrupt journals are quarantined, reported and counted; the daemon always starts (case 4).

A journal of the wrong shape used to make every start fail with a traceback;
a truncated or garbage one was skipped silently, nothing of its transition
undone, and a new Stage accepted over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from liveupd.backends import dryrun
from liveupd.config import Config
from liveupd.manager import Manager
from liveupd.recovery import Action
from liveupd.transition.context import StageRequest
from liveupd.transition.history import history
from liveupd.transition.journal import JOURNAL_NAME, transitions_dir
from tests.conftest import HookFactory
from tests.unit.test_recovery import ROOT, wait_for

VALID = {"id": "T1", "state": "running", "created": 1.0}
CORRUPT = {
    "a list": (b"[]\n", "line 1: Input should be an object"),
    "an empty object": (b"{}\n", "line 1: id: required key is missing"),
    "an unknown state": (
        json.dumps({**VALID, "state": "sideways"}).encode() + b"\n",
        "line 1: state: Input should be",
    ),
    "steps not a list": (
        json.dumps({**VALID, "steps": {"a": 1}}).encode() + b"\n",
        "line 1: steps: Input should be a valid list",
    ),
    "created not a number": (
        json.dumps({**VALID, "created": "yesterday"}).encode() + b"\n",
        "line 1: created: Input should be a valid number",
    ),
    "truncated": (json.dumps(VALID).encode()[:20], "empty or truncated"),
    "garbage": (b"\x00\xffgarbage\n", "line 1: Invalid JSON"),
    "an empty file": (b"", "empty or truncated"),
    "a bad event": (
        json.dumps(VALID).encode() + b'\n{"event": "step", "key": "nope", "status": "done"}\n',
        "line 2: step 'nope' changed but was never started",
    ),
}


def write_journal(config: Config, tid: str, data: bytes) -> Path:
    path = transitions_dir(config.state_dir) / tid / JOURNAL_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("what", list(CORRUPT))
def test_a_corrupt_journal_is_quarantined_reported_and_the_daemon_starts(
    config: Config, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    data, reason = CORRUPT[what]
    path = write_journal(config, "T1", data)
    manager = Manager(config, dryrun.make(config.state_dir))

    async def go() -> None:
        report = await manager.start()
        ((r),) = report
        assert (r.id, r.action, r.state) == ("T1", Action.QUARANTINED, None)
        assert reason in r.note
        await manager.stage(StageRequest(kernel="6.1.0-56-cloud-amd64"))  # accepted

    with caplog.at_level(logging.ERROR, logger="liveupd"):
        asyncio.run(go())
    assert not path.exists()
    assert path.with_name("journal.json.corrupt").read_bytes() == data  # kept for a person
    assert any(r.getMessage() == "journal.corrupt" for r in caplog.records)
    (corrupt,) = [e for e in history(config.state_dir) if e["state"] == "corrupt"]
    assert corrupt["id"] == "T1" and reason in corrupt["corrupt"]
    assert reason in corrupt["error"]["message"]


def test_reasons_never_echo_the_file(config: Config) -> None:
    secret = "x" * 5000
    write_journal(config, "T1", json.dumps({**VALID, "state": secret}).encode() + b"\n")
    (entry,) = history(config.state_dir)
    assert entry["state"] == "corrupt"
    assert secret[:50] not in json.dumps(entry)
    assert len(entry["corrupt"]) <= 300


def test_an_unfinished_transition_with_a_corrupt_journal_is_undone_as_far_as_possible(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    """The daemon died during the flush phase (device unbound, link down, kernel loaded),
    and its journal is unreadable: recovery binds again what the checkpoint lists,
    unloads the kernel, and says that someone must look at the rest."""
    started = tmp_path / "slow.started"
    pidfile = tmp_path / "slow.pid"
    make_hook("10-slow", "flush", f"echo $$ > {pidfile}; touch {started}; exec sleep 300")
    conf = str(tmp_path / "liveupd.conf")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.engine_runner", conf, "transition"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(started)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        machine = dryrun.SimMachine(config.state_dir)
        assert machine.state()["loaded"] and machine.state()["unbound"]
        assert machine.state()["links_down"] == ["eth0"]
        (tdir,) = transitions_dir(config.state_dir).iterdir()
        (tdir / JOURNAL_NAME).write_bytes(b"\x00garbage")  # the disk mangled it

        manager = Manager(config, dryrun.make(config.state_dir))
        ((r),) = asyncio.run(manager.start())
        assert r.action == Action.QUARANTINED
        assert "bound again /sys/devices/pci0000:00/0000:00:03.0/virtio0" in r.note
        assert "unloaded the staged kernel" in r.note
        assert "Manual inspection is needed" in r.note
        state = machine.state()
        assert state["loaded"] is None and state["unbound"] == {} and state["links_down"] == []
        (entry,) = history(config.state_dir)
        assert entry["state"] == "corrupt"
    finally:
        if pidfile.exists():  # the hook runs in its own session: not left behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pidfile.read_text()), signal.SIGKILL)
