"""Crash recovery: SIGKILL the engine mid-transition, restart, undo exactly once."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from liveupd.assembly import make_engine
from liveupd.backends import dryrun
from liveupd.config import Config
from liveupd.hooks.runner import hook_environment, run_program
from liveupd.recovery import kill_leftover_hooks, recover
from liveupd.transition.journal import Journal
from liveupd.transition.phases import Phase, TransitionState
from liveupd.transition.undo import UnloadUndo
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


# ------------------------------------------------- leftover hooks (case 3) --


def leftover_journal(config: Config, pgid: int, leader_started: float | None) -> Journal:
    """A journal a dead daemon left: a hook running in process group ``pgid``."""
    journal = Journal.create(config.state_dir, "T1", boot_id="b", old_release="r")
    journal.set_state(TransitionState.RUNNING)
    journal.step_started("hook:10-slow", Phase.QUIESCE, None)
    journal.step_update("hook:10-slow", pgid=pgid, leader_started=leader_started)
    return journal


def session_leader(procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    procs.append(proc)
    return proc


def test_a_recycled_pid_is_never_killed(config: Config) -> None:
    """The journal says a hook's group leader had pid P and started at T.  A process
    with pid P that started at another time is someone else's (the pid was reused):
    it is left alone.  So is one the journal has no start time for."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        other = session_leader(procs)
        started = psutil.Process(other.pid).create_time()
        # Recorded: a leader with this pid that started 5 s earlier (the hook's, gone).
        assert kill_leftover_hooks(leftover_journal(config, other.pid, started - 5)) == []
        shutil.rmtree(config.state_dir)
        assert kill_leftover_hooks(leftover_journal(config, other.pid, None)) == []
        assert other.poll() is None, "an unrelated process group was killed"
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_the_hooks_own_group_is_killed_when_pid_and_start_time_match(config: Config) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        hook = session_leader(procs)
        started = psutil.Process(hook.pid).create_time()
        assert kill_leftover_hooks(leftover_journal(config, hook.pid, started)) == [hook.pid]
        assert hook.wait(timeout=10) == -signal.SIGKILL
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_the_runner_records_the_leaders_start_time() -> None:
    """What the journal holds for a hook is what kill_leftover_hooks compares."""
    seen: list[tuple[int, float | None]] = []

    def on_start(pgid: int, started: float | None) -> None:
        seen.append((pgid, started))
        assert started is not None
        assert abs(psutil.Process(pgid).create_time() - started) < 0.01

    asyncio.run(
        run_program(["sleep", "0.2"], env=hook_environment({}), timeout=10, on_start=on_start)
    )
    assert len(seen) == 1


def test_a_failing_on_start_kills_the_program_and_raises() -> None:
    """Recording the pgid fails (the journal's disk is full): the program must not run on
    unwatched."""
    pids: list[int] = []

    def on_start(pgid: int, started: float | None) -> None:
        pids.append(pgid)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        asyncio.run(
            run_program(["sleep", "60"], env=hook_environment({}), timeout=60, on_start=on_start)
        )
    assert process_ends(pids[0])


def test_a_staged_transition_whose_stage_did_not_finish_is_not_adopted(config: Config) -> None:
    """Killed after the kernel was loaded but before the stage finished: rolled back."""
    journal = Journal.create(
        config.state_dir, "T1", boot_id="00000000-0000-4000-8000-000000000001", old_release="r"
    )
    journal.step_started("kernel-load:kernel-load", Phase.LOAD, UnloadUndo())
    machine = dryrun.SimMachine(config.state_dir)
    machine.update("kexec_file_load", {"loaded": {"release": "x"}})
    eng = make_engine(config, dryrun.make(config.state_dir), events=lambda e: None)
    adopted, report = asyncio.run(recover(eng))
    assert adopted is None
    assert [(r.id, r.action, r.state) for r in report] == [
        ("T1", "rolled-back", TransitionState.ABORTED)
    ]
    assert machine.state()["loaded"] is None
