"""The daemon on a private bus, driven by busctl and gdbus: methods, signals, properties."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from liveupd.backends.dryrun import DEFAULT_MACHINE
from tests.conftest import HookFactory
from tests.dbus import expect
from tests.dbus.buses import (
    BUS_NAME,
    OBJECT_PATH,
    TRANSITION,
    Daemon,
    PrivateBus,
    Processes,
    Recorder,
    as_user,
    wait_until,
)
from tests.dbus.fixtures import DaemonFactory
from tests.devices.fakes import OURS

TARGET = "6.1.0-56-cloud-amd64"
RUNNING = "6.1.0-55-cloud-amd64"
ERR = "org.liveupd.LiveUpdate1.Error."


def stage(bus: PrivateBus, kernel: str = "") -> tuple[str, str]:
    tid, path = bus.call("Stage", "sssa{sv}", kernel, "", "", "0")
    return str(tid), str(path)


def execute(bus: PrivateBus, mode: str = "direct") -> tuple[str, str]:
    tid, path = bus.call("Execute", "a{sv}", "1", "mode", "s", mode)
    return str(tid), str(path)


def booted(tmp_path: Path, tid: str) -> dict[str, str]:
    """The simulated machine after the jump: the target kernel, a new boot, our cmdline."""
    machine = tmp_path / "booted.json"
    system = {
        **DEFAULT_MACHINE["system"],
        "release": TARGET,
        "boot_id": "00000000-0000-4000-8000-000000000002",
        "cmdline": f"{DEFAULT_MACHINE['system']['cmdline']} {OURS} liveupd.transition={tid}",
    }
    machine.write_text(json.dumps({**DEFAULT_MACHINE, "system": system}))
    return {"LIVEUPD_DRY_RUN_MACHINE": str(machine)}


def halting(tmp_path: Path) -> dict[str, str]:
    """The simulated jump halts the daemon in exec, as a real one goes down with the old
    kernel (no rehearsal of the new boot): the next boot's daemon is started by the test."""
    machine = tmp_path / "halting.json"
    machine.write_text(json.dumps({**DEFAULT_MACHINE, "after_jump": "halt"}))
    return {"LIVEUPD_DRY_RUN_MACHINE": str(machine)}


def test_properties_and_kernels(daemon: Daemon, bus: PrivateBus) -> None:
    assert bus.get("State") == "idle"
    assert bus.get("StagedTransition") == "/"
    assert bus.get("RunningKernel") == RUNNING
    assert bus.get("LatestKernel") == TARGET
    assert bus.get("Unsupported") == ""
    assert bus.get("Version")
    [kernels] = bus.call("ListKernels")
    assert [(k[0], k[3]) for k in kernels] == [(RUNNING, True), (TARGET, False)]
    assert all(
        k[1].endswith(f"vmlinuz-{k[0]}") and k[2].endswith(f"initrd.img-{k[0]}") for k in kernels
    )
    assert bus.call("CanLiveUpdate") == ["yes"]  # root


def test_ready_after_name_with_status(daemon: Daemon, bus: PrivateBus) -> None:
    assert bus.has_owner(BUS_NAME)
    ready = next(n for n in daemon.notifications if n.startswith("READY=1"))
    assert "STATUS=Idle; running 6.1.0-55-cloud-amd64" in ready
    assert any("STATUS=Recovering" in n for n in daemon.notifications)


def test_stage_execute_signals_in_order(
    daemon: Daemon, bus: PrivateBus, recorder: Recorder, make_hook: HookFactory, tmp_path: Path
) -> None:
    log = tmp_path / "hooks.log"
    make_hook("10-quiesce", "quiesce", f"echo quiesce >> {log}")
    make_hook("10-checkpoint", "checkpoint", f"echo checkpoint >> {log}")
    make_hook("10-flush", "flush", f"echo flush >> {log}")

    tid, path = stage(bus)
    assert path == f"{OBJECT_PATH}/transition/{tid}"
    assert bus.get("State") == "staged"
    assert bus.get("StagedTransition") == path
    assert bus.get("TargetRelease", path=path, interface=TRANSITION) == TARGET
    assert bus.get("State", path=path, interface=TRANSITION) == "staged"

    assert execute(bus) == (tid, path)
    # The dry run goes on after the simulated jump: the simulated machine boots the
    # new kernel, the daemon verifies it there and announces it, as on a new boot.
    recorder.wait_for(expect.is_member("Recovered", path), "Recovered (the rehearsal)")
    recorder.wait_for(lambda s: expect.manager_states([s]) == ["idle"], "Manager State idle")
    signals = recorder.signals()

    # PropertiesChanged on each state change, in order.
    assert expect.manager_states(signals) == ["running", "staged", "running", "exec", "idle"]
    assert expect.transition_states(signals, path) == ["running", "exec", "completed"]
    staged_paths = expect.changed(signals, OBJECT_PATH, expect.MANAGER, "StagedTransition")
    assert staged_paths == [path, "/"]
    # Phases in order, each hook reported inside its phase.
    assert expect.phases(signals, path) == [
        "check",
        "load",
        "quiesce",
        "unbind",
        "checkpoint",
        "flush",
        "exec",
    ]
    order = [
        (s["member"], s["body"][1])
        for s in signals
        if s["member"] in ("PhaseChanged", "HookFinished") and s["body"][0] == path
    ]
    for hook, phase in [
        ("10-quiesce", "quiesce"),
        ("10-checkpoint", "checkpoint"),
        ("10-flush", "flush"),
    ]:
        i = order.index(("HookFinished", hook))
        last_phase = [p for m, p in order[:i] if m == "PhaseChanged"][-1]
        assert last_phase == phase
    finished = expect.manager_signals(signals, "HookFinished", path)
    assert {b[1]: (b[2], b[3]) for b in finished} == {
        "10-quiesce": ("quiesce", "success"),
        "10-checkpoint": ("checkpoint", "success"),
        "10-flush": ("flush", "success"),
    }
    progress = expect.changed(signals, path, TRANSITION, "Progress")
    assert progress == sorted(progress) and progress[-1] == 100
    [recovered] = expect.manager_signals(signals, "Recovered", path)
    assert recovered[1] is True and json.loads(recovered[2])["state"] == "completed"
    # The transition object reads back what was signalled.
    assert bus.get("State", path=path, interface=TRANSITION) == "completed"
    assert bus.get("Progress", path=path, interface=TRANSITION) == 100
    report = json.loads(bus.get("Report", path=path, interface=TRANSITION))
    assert report["id"] == tid and report["state"] == "completed" and report["dry_run"]
    assert report["verification"]["running_release"] == TARGET
    assert report["verification"]["problems"] == []
    # The simulated machine loaded the kernel, jumped, and booted it, in that order.
    ops = daemon.ops()
    assert ops.index("kexec_file_load") < ops.index("jump") < ops.index("boot")
    assert bus.get("RunningKernel") == TARGET  # the simulated machine's new boot
    assert log.read_text().split() == ["quiesce", "checkpoint", "flush"]


def test_history_after_a_transition(daemon: Daemon, bus: PrivateBus, recorder: Recorder) -> None:
    tid, path = stage(bus)
    execute(bus)
    recorder.wait_for(expect.is_state(path, "completed"), "completed (the dry run's new boot)")
    [text] = bus.call("GetHistory", "u", "0")
    history = json.loads(text)
    assert history[0]["id"] == tid
    assert history[0]["state"] == "completed" and history[0]["dry_run"] is True
    assert history[0]["new_release"] == TARGET
    assert history[0]["old_release"] == RUNNING
    assert history[0]["mode"] == "direct"
    assert json.loads(bus.call("GetHistory", "u", "1")[0]) == history[:1]


def test_busy_on_concurrent_stage(daemon: Daemon, bus: PrivateBus, procs: Processes) -> None:
    argv = bus.gdbus_argv("org.liveupd.LiveUpdate1.Manager.Stage", "", "", "", "{}")
    clients = [
        procs.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [c.communicate(timeout=60) for c in clients]
    codes = [c.returncode for c in clients]
    assert sorted(codes) == [0, 1, 1, 1], results
    for (_, err), code in zip(results, codes, strict=True):
        if code:
            assert f"GDBus.Error:{ERR}Busy:" in err
            assert "liveupctl cancel" in err


def test_busy_on_execute_while_running(
    daemon: Daemon, bus: PrivateBus, recorder: Recorder, make_hook: HookFactory
) -> None:
    make_hook("10-slow", "quiesce", "sleep 60")
    _, path = stage(bus)
    execute(bus)
    recorder.wait_for(lambda s: expect.phases([s], path) == ["quiesce"], "quiesce")
    second = bus.gdbus("org.liveupd.LiveUpdate1.Manager.Execute", "{}")
    assert second.error == ERR + "Busy"
    again = bus.gdbus("org.liveupd.LiveUpdate1.Manager.Stage", "", "", "", "{}")
    assert again.error == ERR + "Busy"
    bus.call("Cancel")  # rolls back, and ends the hook
    assert bus.get("State", path=path, interface=TRANSITION) == "cancelled"


def test_cancel_staged(daemon: Daemon, bus: PrivateBus, recorder: Recorder) -> None:
    _, path = stage(bus)
    bus.call("Cancel")
    failed = recorder.wait_for(expect.is_member("TransitionFailed", path), "TransitionFailed")
    assert failed["body"][1] == ERR + "Cancelled"
    signals = recorder.signals()
    assert expect.phases(signals, path) == ["check", "load", "rollback"]
    assert expect.transition_states(signals, path) == ["cancelled"]
    assert expect.manager_states(signals) == ["running", "staged", "idle"]
    assert expect.changed(signals, OBJECT_PATH, expect.MANAGER, "StagedTransition") == [path, "/"]
    # TransitionFailed comes after the state it explains.
    members = [s["member"] for s in signals if s["path"] in (path, OBJECT_PATH)]
    assert members[-1] == "TransitionFailed"
    assert bus.get("StagedTransition") == "/"
    assert daemon.ops()[-1] == "kexec_unload"
    cancel_again = bus.gdbus("org.liveupd.LiveUpdate1.Manager.Cancel")
    assert cancel_again.error == ERR + "NotStaged"


def test_cancel_running_rolls_back(
    daemon: Daemon, bus: PrivateBus, recorder: Recorder, make_hook: HookFactory
) -> None:
    make_hook("10-slow", "quiesce", "sleep 60")
    _, path = stage(bus)
    execute(bus)
    recorder.wait_for(lambda s: expect.phases([s], path) == ["quiesce"], "quiesce")
    bus.call("Cancel")
    failed = recorder.wait_for(expect.is_member("TransitionFailed", path), "TransitionFailed")
    assert failed["body"][1] == ERR + "Cancelled"
    signals = recorder.signals()
    assert expect.transition_states(signals, path) == ["running", "cancelled"]
    assert "unbind" not in daemon.ops() and "jump" not in daemon.ops()
    assert daemon.ops()[-1] == "kexec_unload"
    assert bus.get("State") == "idle"


def test_failed_hook_rolls_back_and_signals(
    daemon: Daemon, bus: PrivateBus, recorder: Recorder, make_hook: HookFactory
) -> None:
    make_hook("10-broken", "checkpoint", "echo 'disk full' >&2; exit 3")
    _, path = stage(bus)
    execute(bus)
    failed = recorder.wait_for(expect.is_member("TransitionFailed", path), "TransitionFailed")
    assert failed["body"][1] == ERR + "HookFailed"
    assert "10-broken" in failed["body"][2] and "disk full" in failed["body"][2]
    signals = recorder.signals()
    hooks = expect.manager_signals(signals, "HookFinished", path)
    assert [(b[1], b[3]) for b in hooks] == [("10-broken", "failed")]
    assert expect.phases(signals, path)[-1] == "rollback"
    assert expect.transition_states(signals, path) == ["running", "failed"]
    assert expect.manager_states(signals)[-1] == "failed"
    ops = daemon.ops()
    assert ops.index("unbind") < ops.index("bind")  # the devices were bound again
    assert "jump" not in ops


def test_errors_are_named_and_say_what_to_do(daemon: Daemon, bus: PrivateBus) -> None:
    m = "org.liveupd.LiveUpdate1.Manager."
    cases = [
        (bus.gdbus(m + "Execute", "{}"), "NotStaged", "stage a kernel first"),
        (bus.gdbus(m + "Cancel"), "NotStaged", "nothing to cancel"),
        (bus.gdbus(m + "Stage", "", "", "", "{'bogus': <1>}"), "InvalidArgument", "options are"),
        (bus.gdbus(m + "Stage", "", "", "", "{'append': <1>}"), "InvalidArgument", "string"),
        (bus.gdbus(m + "Stage", "", "", "", "{'sha256': <'xyz'>}"), "InvalidArgument", "sha256sum"),
        (bus.gdbus(m + "Stage", "9.9.9-nope", "", "", "{}"), "InvalidKernel", "9.9.9-nope"),
        (bus.gdbus(m + "Stage", "/etc/passwd", "", "", "{}"), "InvalidKernel", "/etc/passwd"),
    ]
    for result, name, hint in cases:
        assert result.error == ERR + name, result.stderr
        assert hint in result.message, result.message
    stage(bus)
    bad_mode = bus.gdbus(m + "Execute", "{'mode': <'sideways'>}")
    assert bad_mode.error == ERR + "InvalidArgument"
    assert "'direct' or 'systemd'" in bad_mode.message
    assert bus.get("State") == "staged"  # a refused call changed nothing


def test_unsupported_machine(start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path) -> None:
    machine = tmp_path / "machine.json"
    reason = "kexec_load_disabled is set; it stays set until the next boot"
    machine.write_text(json.dumps({**DEFAULT_MACHINE, "preflight": [reason]}))
    start_daemon(env={"LIVEUPD_DRY_RUN_MACHINE": str(machine)})
    assert bus.get("Unsupported") == reason
    assert bus.call("CanLiveUpdate") == ["na"]
    result = bus.gdbus("org.liveupd.LiveUpdate1.Manager.Stage", "", "", "", "{}")
    assert result.error == ERR + "Unsupported"
    assert reason in result.message


TPM_VOLUME = {
    "device": "/dev/loop0",
    "names": ["tpmvol"],
    "crypttab": "/dev/loop0",
    "kind": "luks2",
    "tokens": ["systemd-tpm2"],
}


def test_machines_that_would_not_come_back_are_refused_by_name(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    """A volume a TPM unlocks, a denied platform, kexec_load_disabled: each a named reason
    in Refusals, Unsupported, CanLiveUpdate, ListBlockers and Stage's error."""
    machine = tmp_path / "machine.json"
    system = {**DEFAULT_MACHINE["system"], "dmi": {"vendor": "Acme", "product": "Rocket 9"}}
    disabled = {"reason": "kexec-load-disabled", "message": "kexec is disabled"}
    machine.write_text(
        json.dumps(
            {**DEFAULT_MACHINE, "system": system, "luks_volumes": [TPM_VOLUME],
             "preflight": [disabled]}
        )
    )  # fmt: skip
    env = {"LIVEUPD_DRY_RUN_MACHINE": str(machine)}
    deny = '[exec]\ndeny-platforms = [{ vendor = "acme", product = "Rocket*" }]\n'
    daemon = start_daemon(deny, env=env)
    refusals = bus.get("Refusals")
    assert [r for r, _ in refusals] == ["kexec-load-disabled", "platform-denied", "tpm2-unlock"]
    tpm = refusals[2][1]
    assert tpm.startswith("/dev/loop0 (crypttab name 'tpmvol') is LUKS2 with a systemd-tpm2")
    assert '[exec] allow-tpm2-unlock = true, or = ["tpmvol"]' in tpm
    assert bus.get("Unsupported") == "; ".join(m for _, m in refusals)
    assert bus.call("CanLiveUpdate") == ["na"]
    [blockers] = bus.call("ListBlockers")
    assert blockers[0][0] == "unsupported" and "; tpm2-unlock: /dev/loop0" in blockers[0][1]
    result = bus.gdbus("org.liveupd.LiveUpdate1.Manager.Stage", "", "", "", "{}")
    assert result.error == ERR + "Unsupported"
    assert "this machine cannot be live-updated: kexec-load-disabled: kexec is disabled" in (
        result.message
    )
    assert "tpm2-unlock: /dev/loop0 (crypttab name 'tpmvol')" in result.message
    assert "allow-tpm2-unlock" in result.message
    assert bus.get("State") == "idle" and daemon.ops() == []  # nothing was loaded
    daemon.terminate()

    # The admin's overrides, one at a time: the volume by name, then the platform.
    machine.write_text(
        json.dumps({**DEFAULT_MACHINE, "system": system, "luks_volumes": [TPM_VOLUME]})
    )
    second = start_daemon(deny + 'allow-tpm2-unlock = ["tpmvol"]\n', env=env)
    assert [r for r, _ in bus.get("Refusals")] == ["platform-denied"]
    second.terminate()
    start_daemon('[exec]\nallow-tpm2-unlock = ["tpmvol"]\n', env=env)
    assert bus.get("Refusals") == [] and bus.get("Unsupported") == ""
    assert bus.call("CanLiveUpdate") == ["yes"]
    bus.call("Stage", "sssa{sv}", "", "", "", "0")
    assert bus.get("State") == "staged"


def test_stop_rolls_back_a_running_transition(
    daemon: Daemon, bus: PrivateBus, recorder: Recorder, make_hook: HookFactory
) -> None:
    make_hook("10-slow", "quiesce", "sleep 60")
    tid, path = stage(bus)
    execute(bus)
    recorder.wait_for(lambda s: expect.phases([s], path) == ["quiesce"], "quiesce")
    assert daemon.terminate() == 0
    assert "event=service.stopping" in daemon.log()
    journal = json.loads((daemon.state_dir / "transitions" / tid / "journal.json").read_text())
    assert journal["state"] == "cancelled"
    assert daemon.ops()[-1] == "kexec_unload"


def test_recovered_on_the_new_kernel(
    start_daemon: DaemonFactory, bus: PrivateBus, recorder: Recorder, tmp_path: Path
) -> None:
    first = start_daemon(env=halting(tmp_path))
    tid, path = stage(bus)
    execute(bus)
    recorder.wait_for(expect.is_state(path, "exec"), "exec")
    first.terminate()
    start_daemon(env=booted(tmp_path, tid))
    recovered = recorder.wait_for(expect.is_member("Recovered", path), "Recovered")
    _, ok, report_json = recovered["body"]
    report = json.loads(report_json)
    assert report["id"] == tid
    assert (ok, report["state"]) == (True, "completed"), report
    assert bus.get("State", path=path, interface=TRANSITION) == "completed"
    assert bus.get("RunningKernel") == TARGET


def test_a_restarted_daemon_exports_past_transitions_and_announces_this_boots(
    start_daemon: DaemonFactory, bus: PrivateBus, recorder: Recorder, tmp_path: Path
) -> None:
    """Verified by liveupd-verify.service before the daemon started (here: by a first
    daemon on the new boot), the transition is still an object with its Report, and
    the next daemon on that boot announces it with Recovered."""
    first = start_daemon(env=halting(tmp_path))
    tid, path = stage(bus)
    execute(bus)
    recorder.wait_for(expect.is_state(path, "exec"), "exec")
    first.terminate()
    env = booted(tmp_path, tid)
    second = start_daemon(env=env)
    recorder.wait_for(expect.is_member("Recovered", path), "Recovered")
    second.terminate()

    def recovered() -> list[expect.Signal]:
        return [sig for sig in recorder.signals() if expect.is_member("Recovered", path)(sig)]

    before = len(recovered())
    start_daemon(env=env)
    report = json.loads(bus.get("Report", path=path, interface=TRANSITION))
    assert (report["id"], report["state"]) == (tid, "completed")
    assert bus.get("Id", path=path, interface=TRANSITION) == tid
    wait_until(lambda: len(recovered()) > before, "Recovered from the restarted daemon")
    assert recovered()[-1]["body"][1] is True


def test_past_transitions_are_objects_as_soon_as_the_name_is_owned(
    start_daemon: DaemonFactory,
    bus: PrivateBus,
    recorder: Recorder,
    make_hook: HookFactory,
    tmp_path: Path,
) -> None:
    """A bus-activating call (a Get on a transition's Report) is delivered as soon as
    the daemon owns its name, while start-up recovery may still be running."""
    first = start_daemon(env=halting(tmp_path))
    old_tid, old_path = stage(bus)
    bus.call("Cancel")
    tid, path = stage(bus)
    execute(bus)
    recorder.wait_for(expect.is_state(path, "exec"), "exec")
    first.terminate()
    readies = first.log().count("event=service.ready")
    go = tmp_path / "go"
    make_hook("10-slow-verify", "verify", f"while [ ! -e {go} ]; do sleep 0.05; done")
    second = start_daemon(env=booted(tmp_path, tid), wait=False)
    bus.wait_for_name(BUS_NAME)
    try:
        # Recovery is blocked in the verify hook, yet the history is already there.
        assert second.log().count("event=service.ready") == readies
        report = json.loads(bus.get("Report", path=old_path, interface=TRANSITION))
        assert (report["id"], report["state"]) == (old_tid, "cancelled")
    finally:
        go.touch()
    recorder.wait_for(expect.is_member("Recovered", path), "Recovered")


def test_recovered_is_announced_before_start_up_recovery_ends(
    start_daemon: DaemonFactory,
    bus: PrivateBus,
    recorder: Recorder,
    make_hook: HookFactory,
    tmp_path: Path,
) -> None:
    """A transition verified on this boot before the daemon started (by
    liveupd-verify.service; here by an earlier daemon) is announced as soon as the
    name is owned, not after the daemon's own recovery, which can take long: here it
    waits in the undo of a transition the previous daemon died in."""
    first = start_daemon(env=halting(tmp_path))
    tid, path = stage(bus)
    execute(bus)
    recorder.wait_for(expect.is_state(path, "exec"), "exec")
    first.terminate()
    env = booted(tmp_path, tid)
    second = start_daemon(env=env)
    recorder.wait_for(expect.is_member("Recovered", path), "Recovered")
    go, blocked = tmp_path / "go", tmp_path / "blocked"
    make_hook("10-undo-waits", "quiesce", "true", f"while [ ! -e {go} ]; do sleep 0.05; done")
    make_hook("20-blocks", "quiesce", f"touch {blocked}; exec sleep 60")
    stage(bus, RUNNING)
    execute(bus)
    wait_until(blocked.exists, "the second transition to be in its quiesce hook")
    assert second.proc is not None
    second.proc.kill()  # a crash: the next daemon rolls that transition back
    second.proc.wait()

    def recovered() -> list[expect.Signal]:
        return [sig for sig in recorder.signals() if expect.is_member("Recovered", path)(sig)]

    before = len(recovered())
    readies = second.log().count("event=service.ready")  # the daemons share one log
    third = start_daemon(env=env, wait=False)
    try:
        wait_until(lambda: len(recovered()) > before, "Recovered from the third daemon")
        assert recovered()[-1]["body"][1] is True
        # Its own recovery is under way, and waits in the undo hook until `go`.
        wait_until(lambda: "event=recovery.rollback" in third.log(), "the rollback")
        assert third.log().count("event=service.ready") == readies
    finally:
        go.touch()
    wait_until(
        lambda: third.log().count("event=service.ready") > readies, "the third daemon to be ready"
    )


def test_nobody_may_read(daemon: Daemon, bus: PrivateBus) -> None:
    """Reading is open to every uid (the session-style test bus lets nobody connect)."""
    out = subprocess.run(
        as_user(
            65534,
            [
                "busctl",
                f"--address={bus.address}",
                "get-property",
                BUS_NAME,
                OBJECT_PATH,
                expect.MANAGER,
                "State",
            ],
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 's "idle"'
    assert json.loads(bus.call("GetHistory", "u", "0", uid=65534)[0]) == []


def test_changes_wait_for_start_up_recovery(
    start_daemon: DaemonFactory,
    bus: PrivateBus,
    recorder: Recorder,
    make_hook: HookFactory,
    procs: Processes,
    tmp_path: Path,
) -> None:
    """The call that bus-activates the daemon arrives as soon as it owns its name,
    before recovery is done: it waits for recovery instead of being refused."""
    first = start_daemon(env=halting(tmp_path))
    tid, path = stage(bus)
    execute(bus)
    recorder.wait_for(expect.is_state(path, "exec"), "exec")
    first.terminate()
    go = tmp_path / "go"
    make_hook("10-slow-verify", "verify", f"while [ ! -e {go} ]; do sleep 0.05; done")
    second = start_daemon(env=booted(tmp_path, tid), wait=False)
    bus.wait_for_name(BUS_NAME)
    argv = [
        "gdbus",
        "call",
        "--address",
        bus.address,
        "--dest",
        BUS_NAME,
        "--object-path",
        OBJECT_PATH,
        "--method",
        "org.liveupd.LiveUpdate1.Manager.Stage",
        RUNNING,
        "",
        "",
        "{}",
    ]
    call = procs.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: "event=method.waiting-for-recovery" in second.log(), "the call to wait")
    assert call.poll() is None
    go.touch()
    _, err = call.communicate(timeout=60)
    assert call.returncode == 0, err
    recorder.wait_for(expect.is_member("Recovered", path), "Recovered")
    assert bus.get("State") == "staged"


def test_a_fall_back_signals_recovered_not_ok_and_quarantines_the_target(
    start_daemon: DaemonFactory, bus: PrivateBus, recorder: Recorder, tmp_path: Path
) -> None:
    """The dry run's new kernel hangs and the watchdog brings the old one back."""
    machine = tmp_path / "fall-back.json"
    machine.write_text(json.dumps({**DEFAULT_MACHINE, "after_jump": "fall-back"}))
    start_daemon(env={"LIVEUPD_DRY_RUN_MACHINE": str(machine)})
    tid, path = stage(bus)
    execute(bus)
    recovered = recorder.wait_for(expect.is_member("Recovered", path), "Recovered")
    _, ok, text = recovered["body"]
    report = json.loads(text)
    assert ok is False and report["state"] == "fell-back"
    assert "watchdog (watchdog0) reset the machine" in report["verification"]["fell_back"]
    kernels, problem = bus.call("ListQuarantine")
    assert [(k[0], k[2], k[3]) for k in kernels] == [
        (TARGET, tid, report["verification"]["fell_back"])
    ] and problem == ""
    assert bus.get("LatestKernel") != TARGET


def test_a_listed_service_that_cannot_be_preserved_is_a_blocker_and_refuses_stage(
    start_daemon: DaemonFactory, bus: PrivateBus
) -> None:
    """[preserve] units (issue 16): the dry run's machine runs no services, so the one
    listed cannot be inspected: ListBlockers says so by name, and Stage refuses it."""
    daemon = start_daemon('[preserve]\nunits = ["kv.service"]\n')
    [blockers] = bus.call("ListBlockers")
    assert [k for k, _ in blockers] == ["preserve"]
    assert blockers[0][1] == (
        "[preserve] units: kv.service: cannot be inspected: "
        "the simulated machine runs no service units (kv.service)"
    )
    result = bus.gdbus("org.liveupd.LiveUpdate1.Manager.Stage", "", "", "", "{}")
    assert result.error == ERR + "Unsupported"
    assert "[preserve] units cannot be preserved: kv.service: cannot be inspected" in (
        result.message
    )
    assert bus.get("State") == "idle" and daemon.ops() == []  # nothing was loaded
