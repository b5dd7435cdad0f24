"""Issue 18, cases 5 and 6, through the Manager on the dry-run machine.

* A Stage naming no installed kernel or no existing file is refused before a
  transition is recorded: history holds only transitions that started.
* The dry run is a rehearsal that can be repeated: after the simulated jump
  the simulated machine boots the new kernel (nothing unbound, frozen or
  loaded any more), the new boot is verified, the transition ends
  ``completed`` (flagged ``dry_run``) and the Manager is idle again.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from liveupd.backends import dryrun
from liveupd.config import Config
from liveupd.errors import Busy, InvalidKernel, KernelQuarantined
from liveupd.kernel import quarantine
from liveupd.manager import Manager, ManagerState
from liveupd.transition.context import StageRequest
from liveupd.transition.events import Event, StateChanged, Verified
from liveupd.transition.phases import ExecMode, TransitionState
from tests.conftest import HookFactory

RUNNING = "6.1.0-55-cloud-amd64"
TARGET = "6.1.0-56-cloud-amd64"


def history_ids(manager: Manager) -> list[str]:
    return [str(e["id"]) for e in manager.history()]


@pytest.mark.parametrize(
    "request_",
    [
        StageRequest(kernel="6.1.0-40"),  # a release nobody installed (the typo of the issue)
        StageRequest(kernel="/boot/vmlinuz-6.1.0-40-cloud-amd64"),  # no such file
        StageRequest(kernel=TARGET, initrd="/boot/initrd.img-typo"),  # no such initrd
    ],
    ids=["release", "kernel-path", "initrd-path"],
)
def test_a_request_naming_nothing_is_refused_before_it_is_recorded(
    config: Config, request_: StageRequest
) -> None:
    manager = Manager(config, dryrun.make(config.state_dir))

    async def go() -> None:
        with pytest.raises(InvalidKernel) as e:
            await manager.stage(request_)
        assert "nothing was staged" in e.value.message or "no installed kernel" in e.value.message
        assert manager.state is ManagerState.IDLE

    asyncio.run(go())
    assert history_ids(manager) == []
    assert not (config.state_dir / "transitions").exists() or not any(
        (config.state_dir / "transitions").iterdir()
    )


@pytest.mark.parametrize("field", ["kernel", "initrd"])
def test_a_path_naming_nothing_is_quoted_escaped_and_cut(config: Config, field: str) -> None:
    """The caller's path comes back escaped and at most ~200 characters (issue 13)."""
    path = "/boot/vmlinuz-\x1b[31m\n" + "x" * 10_000
    request = (
        StageRequest(kernel=path) if field == "kernel" else StageRequest(kernel=TARGET, initrd=path)
    )
    manager = Manager(config, dryrun.make(config.state_dir))

    async def go() -> None:
        with pytest.raises(InvalidKernel) as e:
            await manager.stage(request)
        message = e.value.message
        assert "no such file; nothing was staged" in message
        assert "\x1b" not in message and "\n" not in message
        assert "'/boot/vmlinuz-\\x1b[31m\\nxxx" in message
        assert f"({len(path)} characters)" in message
        assert len(message) < 600

    asyncio.run(go())
    assert history_ids(manager) == []


def test_a_file_that_exists_but_is_no_kernel_is_still_recorded(
    config: Config, boot_dir: Path
) -> None:
    """Refusing early is for names only: a transition that started checking a file is
    history, with the reason."""
    bad = boot_dir / "vmlinuz-6.1.0-57-cloud-amd64"
    bad.write_bytes(b"not a kernel" * 100)
    manager = Manager(config, dryrun.make(config.state_dir))

    async def go() -> None:
        with pytest.raises(InvalidKernel):
            await manager.stage(StageRequest(kernel=str(bad)))

    asyncio.run(go())
    [entry] = manager.history()
    assert entry["state"] == "failed"


def rehearsing_manager(config: Config, events: list[Event]) -> Manager:
    manager = Manager(config, dryrun.make(config.state_dir), rehearse=True)
    manager.subscribe(events.append)
    return manager


async def rehearse(manager: Manager, kernel: str = TARGET) -> TransitionState:
    t = await manager.stage(StageRequest(kernel=kernel))
    manager.execute(ExecMode.DIRECT)
    assert manager.rehearsal is not None
    await manager.rehearsal
    return t.state


def test_the_dry_run_is_a_rehearsal_that_can_be_repeated(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    log = tmp_path / "hooks.log"
    make_hook("10-quiesce", "quiesce", f"echo quiesce >> {log}")
    make_hook("50-verify", "verify", f"echo verify $LIVEUPD_TARGET_RELEASE >> {log}")
    events: list[Event] = []
    manager = rehearsing_manager(config, events)
    machine = dryrun.SimMachine(config.state_dir)

    async def go() -> list[TransitionState]:
        first = await rehearse(manager)
        assert manager.state is ManagerState.IDLE
        assert manager.running_release() == TARGET  # the simulated machine booted it
        state = machine.state()
        assert (state["loaded"], state["unbound"], state["frozen"]) == (None, {}, [])
        second = await rehearse(manager, RUNNING)  # and back again
        return [first, second]

    assert asyncio.run(go()) == [TransitionState.COMPLETED, TransitionState.COMPLETED]
    assert manager.running_release() == RUNNING
    entries = manager.history()
    assert [(e["state"], e["dry_run"], e["new_release"]) for e in entries] == [
        ("completed", True, RUNNING),
        ("completed", True, TARGET),
    ]
    assert all(e["verification"]["problems"] == [] for e in entries)
    assert log.read_text().split() == ["quiesce", "verify", TARGET, "quiesce", "verify", RUNNING]
    assert [e.ok for e in events if isinstance(e, Verified)] == [True, True]
    states = [e.state for e in events if isinstance(e, StateChanged)]
    assert states.count(TransitionState.EXEC) == 2 and states[-1] is TransitionState.COMPLETED
    ops = [c["op"] for c in machine.calls()]
    assert ops.count("boot") == 2
    # The freezes of the first run (/data, /) were undone by its simulated boot: the
    # second froze both again (a filesystem still frozen would have failed it, EBUSY).
    assert ops.count("freeze") == 4


def test_a_failed_simulated_verification_ends_recovery_failed(
    config: Config, make_hook: HookFactory
) -> None:
    make_hook("50-verify", "verify", "echo 'service did not come back' >&2; exit 1")
    events: list[Event] = []
    manager = rehearsing_manager(config, events)
    assert asyncio.run(rehearse(manager)) is TransitionState.RECOVERY_FAILED
    assert manager.state is ManagerState.IDLE  # a new rehearsal may start
    [entry, *_] = manager.history()
    assert "50-verify" in json.dumps(entry["verification"]["problems"])
    assert [e.ok for e in events if isinstance(e, Verified)] == [False]


def test_a_stage_while_the_new_boot_is_verified_is_busy(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    started = tmp_path / "started"
    make_hook(
        "50-verify",
        "verify",
        f"touch {started}; while [ ! -e {release} ]; do sleep 0.02; done",
    )
    manager = rehearsing_manager(config, [])

    async def go() -> TransitionState:
        t = await manager.stage(StageRequest(kernel=TARGET))
        manager.execute(ExecMode.DIRECT)
        while not started.exists():  # the verify hook runs: the new boot is being verified
            await asyncio.sleep(0.01)
        assert manager.rehearsing and t.state is TransitionState.EXEC
        with pytest.raises(Busy) as e:
            await manager.stage(StageRequest(kernel=RUNNING))
        assert "simulated new boot" in e.value.message
        release.touch()
        assert manager.rehearsal is not None
        await manager.rehearsal
        return t.state

    assert asyncio.run(go()) is TransitionState.COMPLETED


def test_after_jump_halt_keeps_the_old_one_shot(config: Config, tmp_path: Path) -> None:
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({**dryrun.DEFAULT_MACHINE, "after_jump": "halt"}))
    backends = dryrun.make(config.state_dir, machine)
    assert backends.simulated_boot is None
    with pytest.raises(ValueError, match="rehearsal needs"):
        Manager(config, backends, rehearse=True)
    machine.write_text(json.dumps({**dryrun.DEFAULT_MACHINE, "after_jump": "explode"}))
    with pytest.raises(ValueError, match="after_jump: expected one of boot, halt"):
        dryrun.make(config.state_dir, machine)


def test_the_rehearsed_jump_arms_the_watchdog_and_the_new_boot_takes_it_over(
    config: Config,
) -> None:
    manager = rehearsing_manager(config, [])
    machine = dryrun.SimMachine(config.state_dir)
    assert asyncio.run(rehearse(manager)) is TransitionState.COMPLETED
    calls = machine.calls()
    ops = [c["op"] for c in calls]
    # Armed after the last freeze, just before the jump; taken over and released after.
    assert ops.index("freeze") < ops.index("watchdog_arm") < ops.index("boot")
    assert ops.index("boot") < ops.index("watchdog_take_over") < ops.index("watchdog_release")
    arm = next(c for c in calls if c["op"] == "watchdog_arm")
    assert (arm["devnode"], arm["timeout"]) == ("/dev/watchdog0", 120)
    [entry, *_] = manager.history()
    assert "modprobe.blacklist=i6300esb" in entry["cmdline"].split()
    assert entry["verification"]["watchdog"].endswith("closed with the magic character)")


def test_every_rehearsal_arms_the_watchdog_the_last_one_handed_back(config: Config) -> None:
    # The new boot inherited a running watchdog whose driver the command line kept
    # out; verification loaded it, took it over and closed it. From then on the
    # simulated machine has that watchdog again, stopped: the next rehearsal arms it.
    manager = rehearsing_manager(config, [])
    machine = dryrun.SimMachine(config.state_dir)

    async def go() -> None:
        assert await rehearse(manager) is TransitionState.COMPLETED
        assert [w.name for w in manager.backends.watchdog.watchdogs()] == ["watchdog0"]
        assert await rehearse(manager, RUNNING) is TransitionState.COMPLETED

    asyncio.run(go())
    ops = [c["op"] for c in machine.calls()]
    assert ops.count("watchdog_arm") == 2 and ops.count("watchdog_release") == 2


def test_a_rehearsed_hang_falls_back_to_the_old_kernel(config: Config, tmp_path: Path) -> None:
    """after_jump "fall-back": the new kernel hangs, the watchdog resets the machine."""
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({**dryrun.DEFAULT_MACHINE, "after_jump": "fall-back"}))
    events: list[Event] = []
    manager = Manager(config, dryrun.make(config.state_dir, machine), rehearse=True)
    manager.subscribe(events.append)
    assert asyncio.run(rehearse(manager)) is TransitionState.FELL_BACK
    assert manager.running_release() == RUNNING  # back on the old kernel
    assert manager.state is ManagerState.IDLE
    [entry] = manager.history()
    assert entry["state"] == "fell-back"
    assert "hardware watchdog (watchdog0) reset the machine" in entry["verification"]["fell_back"]
    assert [e.ok for e in events if isinstance(e, Verified)] == [False]
    # The target is quarantined: never staged again (never a loop) until cleared.
    [held] = manager.quarantine().kernels
    assert (held.release, held.transition) == (TARGET, entry["id"])
    assert held.reason == entry["verification"]["fell_back"]
    assert held.kernel == entry["kernel"]
    with pytest.raises(KernelQuarantined) as refused:
        asyncio.run(manager.stage(StageRequest(kernel=TARGET)))
    message = refused.value.message
    assert f"{TARGET} is quarantined: transition {entry['id']} fell back from it" in message
    assert f"'liveupctl unquarantine {TARGET}'" in message and "nothing was staged" in message
    assert history_ids(manager) == [entry["id"]]  # refused before it was recorded
    with pytest.raises(KernelQuarantined):  # named by its file
        asyncio.run(manager.stage(StageRequest(kernel=entry["kernel"])))
    # A copy whose name says no release: the check step refuses it on the image's own.
    copy = Path(entry["kernel"]).with_name("vmlinuz-custom")
    shutil.copy(entry["kernel"], copy)
    with pytest.raises(KernelQuarantined):
        asyncio.run(manager.stage(StageRequest(kernel=str(copy))))
    assert manager.history()[0]["state"] == "failed"
    copy.unlink()
    verdicts = {k.release: v for k, v in manager.kernel_verdicts()}
    assert not verdicts[TARGET].ok and "is quarantined" in verdicts[TARGET].problem
    assert verdicts[RUNNING].ok
    assert manager.latest_kernel() == RUNNING  # the latest kernel leaves it out

    cleared = manager.clear_quarantine(TARGET)
    assert [k.release for k in cleared.kernels] == [TARGET]
    assert manager.quarantine().kernels == ()
    assert manager.clear_quarantine(TARGET).kernels == ()  # nothing left to clear
    assert manager.latest_kernel() == TARGET
    t = asyncio.run(manager.stage(StageRequest(kernel=TARGET)))
    assert t.state is TransitionState.STAGED


def test_an_unreadable_quarantine_holds_every_kernel_but_the_running_one(
    config: Config,
) -> None:
    manager = Manager(config, dryrun.make(config.state_dir), rehearse=True)
    path = quarantine.path_in(config.state_dir)
    path.write_text('{"version": 1, "kernels": [{"release": 5}]}')
    held = manager.quarantine()
    assert held.problem.startswith("kernels.0.release"), held.problem
    with pytest.raises(KernelQuarantined) as refused:
        asyncio.run(manager.stage(StageRequest(kernel=TARGET)))
    assert f"{path} cannot be read (kernels.0" in refused.value.message
    assert "'liveupctl unquarantine --all'" in refused.value.message
    assert manager.latest_kernel() == RUNNING
    with pytest.raises(KernelQuarantined, match="unquarantine --all"):
        manager.clear_quarantine(TARGET)  # one release cannot be taken out of it
    assert manager.clear_quarantine("").problem  # --all rewrites it
    assert manager.quarantine() == quarantine.Quarantine(path)
    assert manager.latest_kernel() == TARGET


def test_a_target_that_cannot_load_the_watchdogs_driver_is_not_armed_for(
    config: Config, tmp_path: Path
) -> None:
    """The target's modules.dep lacks the driver: arming would reset a fine new kernel."""
    machine = tmp_path / "machine.json"
    desc = {**dryrun.DEFAULT_MACHINE, "kernel_modules": {TARGET: ["virtio_net"]}}
    machine.write_text(json.dumps(desc))
    manager = Manager(config, dryrun.make(config.state_dir, machine), rehearse=True)

    async def go() -> TransitionState:
        t = await manager.stage(StageRequest(kernel=TARGET))
        note = manager.watchdog()
        assert note.startswith("watchdog0 (i6300ESB timer, module i6300esb): not armed: kernel")
        assert f"/usr/lib/modules/{TARGET}/modules.dep or modules.builtin does not list" in note
        manager.execute(ExecMode.DIRECT)
        assert manager.rehearsal is not None
        await manager.rehearsal
        return t.state

    assert asyncio.run(go()) is TransitionState.COMPLETED
    ops = [c["op"] for c in dryrun.SimMachine(config.state_dir).calls()]
    assert "watchdog_arm" not in ops and "watchdog_take_over" not in ops
    [entry] = manager.history()
    assert "modprobe.blacklist=i6300esb" not in entry["cmdline"].split()


def test_a_busy_watchdogs_undo_leaves_it_alone_when_the_jump_fails(
    config: Config, tmp_path: Path
) -> None:
    """Held by another process at arm: not armed, so nothing to stop when the jump fails
    (the undo would fail with EBUSY, or with nowayout unbind systemd's device)."""
    machine = tmp_path / "machine.json"
    desc = json.loads(json.dumps(dryrun.DEFAULT_MACHINE))
    desc["watchdogs"][0]["busy"] = True
    desc["faults"] = [{"op": "jump", "call": 1, "error": "EIO"}]
    machine.write_text(json.dumps(desc))
    manager = Manager(config, dryrun.make(config.state_dir, machine))

    async def go() -> TransitionState:
        t = await manager.stage(StageRequest(kernel=TARGET))
        manager.execute(ExecMode.DIRECT)
        assert t.task is not None
        await t.task
        return t.state

    assert asyncio.run(go()) is TransitionState.FAILED
    ops = [c["op"] for c in dryrun.SimMachine(config.state_dir).calls()]
    assert "watchdog_disarm" not in ops


def test_the_next_update_from_a_boot_liveupd_made_drops_liveupds_own_words(
    config: Config,
) -> None:
    manager = rehearsing_manager(config, [])
    assert asyncio.run(rehearse(manager)) is TransitionState.COMPLETED
    [first] = manager.history()
    assert first["cmdline"].split()[-3:-1] == ["panic=10", "modprobe.blacklist=i6300esb"]

    async def stage_again() -> tuple[str, tuple[str, ...]]:
        t = await manager.stage(StageRequest(kernel=TARGET))
        assert t.ctx.target is not None
        return t.ctx.target.cmdline, t.ctx.target.added

    line, added = asyncio.run(stage_again())
    # Dropped from the running line, and added again as liveupd's own: once each (the
    # watchdog verification took over on the new boot is there to be armed again).
    assert added == ("panic=10", "modprobe.blacklist=i6300esb")
    assert line.split().count("panic=10") == 1
    assert line.split().count("modprobe.blacklist=i6300esb") == 1


def test_a_failed_disarm_says_the_watchdog_still_runs_and_when_it_resets(
    config: Config, tmp_path: Path
) -> None:
    machine = tmp_path / "machine.json"
    desc = json.loads(json.dumps(dryrun.DEFAULT_MACHINE))
    desc["faults"] = [
        {"op": "jump", "call": 1, "error": "EIO"},
        *({"op": "watchdog-disarm", "call": n, "error": "EIO"} for n in (1, 2, 3)),
    ]
    machine.write_text(json.dumps(desc))
    manager = Manager(config, dryrun.make(config.state_dir, machine))

    async def go() -> TransitionState:
        t = await manager.stage(StageRequest(kernel=TARGET))
        manager.execute(ExecMode.DIRECT)
        assert t.task is not None
        await t.task
        return t.state

    assert asyncio.run(go()) is TransitionState.ROLLBACK_FAILED
    [entry] = manager.history()
    text = json.dumps(entry)
    assert "watchdog:watchdog: disarming the watchdog /dev/watchdog0" in text
    assert "the watchdog still runs: the machine resets within 120 s" in text
