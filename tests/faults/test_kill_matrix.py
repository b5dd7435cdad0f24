"""The daemon SIGKILLed at every durable journal write, then restarted on the same state.

A real ``liveupd --dry-run`` on a private bus runs the fault plan's transition
(two hooks per phase) through Stage and Execute, and dies (SIGKILL, from its
own dry-run machine) right after its Nth durable journal write reached the
disk, for N = 1, 2, ... until a run gets through to exec.  Each time, the
next daemon is started on the same state directory and must have recovered:
the transition rolled back (``aborted``) with the machine as it was before the
Stage and every hook that ran undone, most recent first; or, killed after the
transition was staged and before Execute changed anything, adopted as staged
(then cancelled through D-Bus, and the machine is as it was).  It then accepts
the next Stage.
"""

from __future__ import annotations

import json
from pathlib import Path

from liveupd.backends.faults import Fault
from liveupd.transition.journal import read, transitions_dir
from liveupd.transition.phases import TransitionState
from tests.dbus.buses import Daemon, PrivateBus, Processes, wait_until
from tests.faults import tally
from tests.faults.plan import (
    TARGET,
    Setup,
    completed_hooks,
    fast_root,
    hook_problems,
    machine_problems,
    make_setup,
)

MANAGER = "org.liveupd.LiveUpdate1.Manager."
MAX_WRITES = 60  # far more durable writes than the plan makes: a loop guard


def newest_transition(state_dir: Path) -> str | None:
    tdir = transitions_dir(state_dir)
    if not tdir.is_dir():
        return None
    dirs = sorted(tdir.iterdir(), key=lambda d: d.stat().st_mtime)
    return dirs[-1].name if dirs else None


def state_of(state_dir: Path, tid: str) -> str:
    try:
        return str(read(transitions_dir(state_dir) / tid / "journal.json").state)
    except (OSError, ValueError):
        return ""


def died(daemon: Daemon) -> bool:
    assert daemon.proc is not None
    return daemon.proc.poll() is not None


def recovered(setup: Setup, bus: PrivateBus, tid: str) -> list[str]:
    """After a restart: the killed transition is undone (or adopted as staged, then
    cancelled here), the machine is as it was, its hooks were undone in reverse."""
    record = read(transitions_dir(setup.state_dir) / tid / "journal.json")
    problems = []
    if record.state is TransitionState.STAGED:
        # Killed after Stage finished, before Execute changed anything: adopted.
        if bus.get("StagedTransition").rsplit("/", 1)[-1] != tid:
            problems.append("a staged transition was not adopted")
        bus.call("Cancel")
        record = read(transitions_dir(setup.state_dir) / tid / "journal.json")
        if record.state is not TransitionState.CANCELLED:
            problems.append(f"the adopted transition ended {record.state} after Cancel")
    elif record.state is not TransitionState.ABORTED:
        problems.append(f"the killed transition is {record.state}, not aborted")
    elif record.error is None or "liveupd stopped during transition" not in record.error.message:
        problems.append("the journal does not say the daemon stopped mid-transition")
    problems += machine_problems(setup.state_dir)
    problems += hook_problems(setup.hook_lines(), completed_hooks(record))
    return problems


def stage_and_execute(setup: Setup, bus: PrivateBus, daemon: Daemon, n: int) -> str:
    """Stage and Execute the plan; wait until the daemon died or the run reached exec."""
    assert daemon.proc is not None
    staged = bus.gdbus(MANAGER + "Stage", TARGET, "", "", "{}")
    if staged.returncode == 0:
        executed = bus.gdbus(MANAGER + "Execute", "{}")
        if executed.returncode != 0:  # no reply: the daemon was killed before it sent one
            assert executed.error == "org.freedesktop.DBus.Error.NoReply", executed.stderr
            wait_until(lambda: died(daemon), f"write {n}: the daemon to have died")
    tid = newest_transition(setup.state_dir)
    assert tid is not None, daemon.log()
    wait_until(
        lambda: died(daemon) or state_of(setup.state_dir, tid) == "exec",
        f"write {n}: the daemon to die or the transition to reach exec",
    )
    return tid


def test_sigkill_at_every_durable_journal_write_then_restart(
    procs: Processes, bus: PrivateBus
) -> None:
    with fast_root("liveupd-kill-") as root:
        setup = make_setup(root)
        results: list[tuple[int, list[str]]] = []
        killed: tuple[int, str] | None = None  # (write number, transition)
        reached_exec = False
        for n in range(1, MAX_WRITES):
            machine = setup.machine_file([Fault("journal-sync", n, "kill")], f"kill-{n}.json")
            daemon = Daemon(
                procs, bus, setup.config, setup.state_dir, {"LIVEUPD_DRY_RUN_MACHINE": str(machine)}
            ).start()
            if killed is not None:
                results.append((killed[0], recovered(setup, bus, killed[1])))
                setup.hook_log.unlink(missing_ok=True)
            tid = stage_and_execute(setup, bus, daemon, n)
            if not died(daemon):  # no Nth durable write: the run got through
                reached_exec = True
                daemon.stop()
                break
            assert daemon.proc is not None and daemon.proc.returncode == -9, daemon.log()
            killed = (n, tid)
        assert reached_exec, f"still killed at write {MAX_WRITES}"
        returned = sum(1 for _, p in results if not p)
        tally.add("sigkill at durable write", len(results), returned)
        print(f"\n[faults] SIGKILL at each of {len(results)} durable journal writes: {returned} "
              "returned to the prior state")  # fmt: skip
        failed = [f"write {n}: {'; '.join(p)}" for n, p in results if p]
        assert failed == [], "\n".join(failed)
        assert len(results) >= 10, json.dumps(results)  # the plan makes that many at least
