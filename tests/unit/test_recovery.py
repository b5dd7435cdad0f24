"""Crash recovery: SIGKILL the engine mid-transition, restart, undo exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from liveupd.backends import dryrun
from liveupd.config import Config
from tests.conftest import HookFactory
from tests.unit.test_hooks import process_ends

ROOT = Path(__file__).resolve().parents[2]


def wait_for(path: Path, deadline: float = 30) -> None:
    end = time.monotonic() + deadline
    while not path.exists():
        assert time.monotonic() < end, f"{path} did not appear within {deadline}s"
        time.sleep(0.02)


def runner(config_file: Path, action: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.unit.engine_runner", str(config_file), action],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_sigkill_during_slow_hook_then_restart_undoes_each_step_once(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    log = tmp_path / "undo.log"
    started = tmp_path / "slow.started"
    pidfile = tmp_path / "slow.pid"
    make_hook("10-a", "quiesce", "true", f"echo a >> {log}")
    make_hook("10-b", "quiesce", "true", f"echo b >> {log}")
    make_hook("20-c", "unbind", "true", f"echo c >> {log}")
    # The slow hook never completes, so its undo must not run.
    make_hook(
        "10-slow",
        "checkpoint",
        f"echo $$ > {pidfile}; touch {started}; exec sleep 300",
        f"echo slow >> {log}",
    )
    conf = tmp_path / "liveupd.conf"

    proc = runner(conf, "transition")
    wait_for(started)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    hook_pid = int(pidfile.read_text())
    assert psutil.pid_exists(hook_pid), "the hook should outlive the killed engine"
    machine = dryrun.SimMachine(config.state_dir)
    assert machine.state()["loaded"] is not None and machine.state()["unbound"]

    out = subprocess.run(
        [sys.executable, "-m", "tests.unit.engine_runner", str(conf), "recover"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout)
    assert [r["action"] for r in report] == ["rolled-back"]
    assert report[0]["state"] == "aborted"
    assert sorted(log.read_text().split()) == ["a", "b", "c"]
    assert log.read_text().split()[0] == "c"  # most recent first
    state = machine.state()
    assert state["loaded"] is None and state["unbound"] == {} and state["links_down"] == []
    # The orphaned hook's process group was killed.
    assert process_ends(hook_pid)

    # A second restart finds nothing left to do: no undo runs twice.
    again = subprocess.run(
        [sys.executable, "-m", "tests.unit.engine_runner", str(conf), "recover"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(again.stdout) == []
    assert sorted(log.read_text().split()) == ["a", "b", "c"]
