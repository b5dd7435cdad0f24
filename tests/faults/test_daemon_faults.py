"""A real daemon on a private bus: corrupt journals, Cancel racing Execute, SIGTERM.

* A journal of the wrong shape or garbage does not stop the daemon from
  starting: it is set aside, logged at error level, listed by GetHistory as
  ``corrupt`` and counted by ``liveupctl status`` (case 4).
* Cancel and Execute sent together, over and over: a Cancel that said success
  is never followed by hooks, unbinding, freezing or a jump (case 2).
* SIGTERM while Execute runs (devices already unbound) rolls everything back
  before the daemon exits.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from liveupd.transition.journal import JOURNAL_NAME, read, transitions_dir
from liveupd.transition.phases import TransitionState
from tests.dbus import expect
from tests.dbus.buses import (
    BUS_NAME,
    OBJECT_PATH,
    Daemon,
    PrivateBus,
    Processes,
    Recorder,
    liveupctl,
    wait_until,
)
from tests.dbus.fixtures import DaemonFactory
from tests.faults.plan import TARGET, machine_problems, make_setup

ERR = "org.liveupd.LiveUpdate1.Error."


def test_the_daemon_starts_over_corrupt_journals_and_reports_them(
    start_daemon: DaemonFactory, bus: PrivateBus
) -> None:
    first = start_daemon()  # creates the state directory; then the journals go bad
    first.terminate()
    for tid, data in (("T-shape", b"[]\n"), ("T-garbage", b"\x00\xff\x00")):
        path = transitions_dir(first.state_dir) / tid / JOURNAL_NAME
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    log = start_daemon().log()
    assert "level=error event=journal.corrupt transition=T-shape" in log
    assert "level=error event=journal.corrupt transition=T-garbage" in log
    [text] = bus.call("GetHistory", "u", "0")
    corrupt = {e["id"]: e for e in json.loads(text) if e["state"] == "corrupt"}
    assert set(corrupt) == {"T-shape", "T-garbage"}
    assert "Input should be an object" in corrupt["T-shape"]["corrupt"]
    status = liveupctl(bus, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["corrupt_journals"] == 2
    text_status = liveupctl(bus, "status").stdout
    assert "Journals:       2 corrupt, set aside" in text_status
    history = liveupctl(bus, "history").stdout
    assert "T-shape" in history and "corrupt" in history
    # Nothing is stuck: a Stage is accepted.
    tid, _ = bus.call("Stage", "sssa{sv}", TARGET, "", "", "0")
    assert bus.get("State") == "staged", tid


def test_cancel_racing_execute_never_runs_anything_after_a_successful_cancel(
    procs: Processes, bus: PrivateBus, tmp_path: Path
) -> None:
    setup = make_setup(tmp_path)
    daemon = Daemon(procs, bus, setup.config, setup.state_dir).start()

    def ended(tid: str) -> bool:
        return read(transitions_dir(setup.state_dir) / tid / JOURNAL_NAME).state.terminal

    def call(member: str, *args: str) -> subprocess.Popen[str]:
        argv = [
            "gdbus", "call", "--address", bus.address, "--dest", BUS_NAME,
            "--object-path", OBJECT_PATH, "--method", f"org.liveupd.LiveUpdate1.Manager.{member}",
            *args,
        ]  # fmt: skip
        return procs.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    outcomes = []
    for _ in range(12):
        setup.hook_log.unlink(missing_ok=True)
        tid, _path = bus.call("Stage", "sssa{sv}", TARGET, "", "", "0")
        calls_before = len(daemon.calls())
        cancel = call("Cancel")
        execute = call("Execute", "{}")
        cancel_out = cancel.communicate(timeout=60)
        execute_out = execute.communicate(timeout=60)
        wait_until(lambda: ended(str(tid)), "the transition to end")  # noqa: B023
        record = read(transitions_dir(setup.state_dir) / tid / JOURNAL_NAME)
        ops = [c["op"] for c in daemon.calls()[calls_before:]]
        assert cancel.returncode == 0, cancel_out
        assert record.state is TransitionState.CANCELLED, record.error
        assert "jump" not in ops and ops.count("kexec_unload") == 1, ops
        assert machine_problems(setup.state_dir) == []
        if execute.returncode != 0:
            assert f"{ERR}NotStaged" in execute_out[1], execute_out
            assert setup.hook_lines() == [] and not {"unbind", "freeze"} & set(ops)
        outcomes.append("execute refused" if execute.returncode else "execute, then cancelled")
        assert bus.get("State") == "idle"
    print(f"\n[race] {len(outcomes)} Cancel+Execute pairs: "
          f"{outcomes.count('execute refused')} Execute refused (Cancel first), "
          f"{outcomes.count('execute, then cancelled')} Execute first then cancelled")  # fmt: skip


def test_sigterm_during_execute_rolls_back_before_the_daemon_exits(
    procs: Processes, bus: PrivateBus, recorder: Recorder, tmp_path: Path
) -> None:
    setup = make_setup(tmp_path)
    # A slow unbind hook after the devices step: the NIC is unbound, its link down.
    started = tmp_path / "slow.started"
    (tmp_path / "hooks.d" / "70-slow.hook").write_text(
        'phase = "unbind"\n'
        f'run = ["/bin/sh", "-c", "echo run 70-slow >> {setup.hook_log}; touch {started}; '
        'sleep 60"]\n'
    )
    daemon = Daemon(procs, bus, setup.config, setup.state_dir).start()
    tid, path = bus.call("Stage", "sssa{sv}", TARGET, "", "", "0")
    bus.call("Execute", "a{sv}", "0")
    wait_until(started.exists, "the slow unbind hook")
    assert "unbind" in daemon.ops() and machine_problems(setup.state_dir)
    assert daemon.terminate() == 0
    assert "event=shutdown.cancel" in daemon.log()
    record = read(transitions_dir(setup.state_dir) / str(tid) / JOURNAL_NAME)
    assert record.state is TransitionState.CANCELLED
    assert machine_problems(setup.state_dir) == []
    runs = [line.split()[1] for line in setup.hook_lines() if line.startswith("run ")]
    undos = [line.split()[1] for line in setup.hook_lines() if line.startswith("undo ")]
    assert runs == ["10-q1", "60-q2", "10-u1", "60-u2", "70-slow"]
    assert undos == ["60-u2", "10-u1", "60-q2", "10-q1"]  # not the interrupted one
    failed = recorder.wait_for(expect.is_member("TransitionFailed", str(path)), "TransitionFailed")
    assert failed["body"][1] == ERR + "Cancelled"
