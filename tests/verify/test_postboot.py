"""Post-boot verification: success, each failure reason, superseded, idempotence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from liveupd.backends import dryrun
from liveupd.backends.base import Binding, Device, WatchdogRecord
from liveupd.config import Config
from liveupd.daemon.verify import verify_once
from liveupd.kernel import quarantine
from liveupd.recovery import recover
from liveupd.transition.checkpoint import STAMP_NAME, read_pending
from liveupd.transition.events import Event, StateChanged, TransitionFailed
from liveupd.transition.history import history
from liveupd.transition.phases import TransitionState
from liveupd.verify.checks import subsystems_to_check
from liveupd.verify.postboot import verify_after_boot
from tests.conftest import HookFactory
from tests.verify.scenario import (
    EXEC_AGO,
    MAC,
    NET,
    NEW_RELEASE,
    OLD_BOOT,
    OLD_RELEASE,
    UPTIME,
    VIRTIO0,
    device,
    engine,
    journal_data,
    machine,
    pending,
    transition,
)

ETH0 = f"{VIRTIO0}/net/eth0"
FAST = "[verify]\nsettle-timeout = 0.5\n"


def hooks_logging_to(make_hook: HookFactory, log: Path) -> None:
    line = 'echo "$LIVEUPD_PHASE $LIVEUPD_HOOK $LIVEUPD_TRANSITION_ID $LIVEUPD_TARGET_RELEASE"'
    make_hook("10-check", "verify", f"{line} >> {log}")
    make_hook("20-check", "verify", f"{line} >> {log}")
    make_hook("10-start", "restore", f"{line} >> {log}")
    make_hook("10-quiesce", "quiesce", f"{line} >> {log}")  # not run on the new kernel


def problems(config: Config, tid: str = "T1") -> list[dict[str, str]]:
    found: list[dict[str, str]] = journal_data(config, tid)["verification"]["problems"]
    return found


def test_success_runs_verify_then_restore_hooks_and_records_downtime(
    write_config: Callable[[str], Config],
    boot_dir: Path,
    tmp_path: Path,
    make_hook: HookFactory,
) -> None:
    config = write_config("")
    pending(config, boot_dir)
    log = tmp_path / "hooks.log"
    hooks_logging_to(make_hook, log)
    events: list[Event] = []
    eng = engine(config, machine(tmp_path), events)

    _, report = asyncio.run(recover(eng))

    assert [(r.id, r.action, r.state) for r in report] == [
        ("T1", "handed-to-verify", TransitionState.COMPLETED)
    ]
    assert log.read_text().splitlines() == [
        f"verify 10-check T1 {NEW_RELEASE}",
        f"verify 20-check T1 {NEW_RELEASE}",
        f"restore 10-start T1 {NEW_RELEASE}",
    ]
    data = journal_data(config)
    assert data["state"] == "completed"
    v = data["verification"]
    assert v["problems"] == [] and v["running_release"] == NEW_RELEASE
    d = v["downtime"]
    assert d["exec_stamp_source"] == "exec-stamp"
    assert EXEC_AGO - 1 < d["downtime_s"] < EXEC_AGO + 30
    assert d["kernel_to_verified_s"] == UPTIME
    assert d["exec_to_kernel_s"] == pytest.approx(d["downtime_s"] - UPTIME, abs=0.01)
    assert d["kernel_started"] == pytest.approx(d["verified"] - UPTIME, abs=0.01)
    assert read_pending(config.state_dir) is None
    # History reads the journal: the verify and restore hooks are there, and the result.
    (entry,) = history(config.state_dir)
    assert entry["state"] == "completed" and entry["verification"]["downtime"] == d
    assert [(h["hook"], h["phase"], h["status"]) for h in entry["hooks"]] == [
        ("10-check", "verify", "done"),
        ("20-check", "verify", "done"),
        ("10-start", "restore", "done"),
    ]
    # Each with how long it took, as the engine records hooks on the old kernel.
    assert all(isinstance(h["usec"], int) and h["usec"] > 0 for h in entry["hooks"])
    assert StateChanged("T1", TransitionState.COMPLETED, 100) in events
    assert not [e for e in events if isinstance(e, TransitionFailed)]


def test_udev_settles_before_devices_are_checked(
    config: Config, boot_dir: Path, tmp_path: Path
) -> None:
    pending(config, boot_dir)
    eng = engine(config, machine(tmp_path))
    asyncio.run(recover(eng))
    from liveupd.backends.dryrun import SimMachine

    settles = [c for c in SimMachine(config.state_dir).calls() if c["op"] == "udev_settle"]
    assert settles == [{"op": "udev_settle", "timeout": 60.0, "settled": True}]


def test_only_the_recorded_devices_subsystems_are_enumerated(
    config: Config, boot_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not every device: the checkpoint's binding is on virtio, its interface on net."""
    pending(config, boot_dir)
    eng = engine(config, machine(tmp_path))
    asked: list[frozenset[str] | None] = []
    devices = eng.backends.devices
    enumerate_ = devices.devices

    def spy(subsystems: frozenset[str] | None = None) -> list[Device]:
        asked.append(subsystems)
        return enumerate_(subsystems)

    monkeypatch.setattr(devices, "devices", spy)
    _, report = asyncio.run(recover(eng))

    assert [r.state for r in report] == [TransitionState.COMPLETED]
    assert asked == [frozenset({"virtio", "net"})]


def test_subsystems_to_check() -> None:
    assert subsystems_to_check(()) is None  # nothing recorded: nothing to enumerate
    other = Binding("/sys/devices/pci0000:00/0000:00:05.0", "pci", "0000:00:05.0", "e1000e")
    assert subsystems_to_check((NET, other)) == frozenset({"virtio", "pci", "net"})


def no_driver(desc: dict[str, Any]) -> None:
    device(desc, VIRTIO0)["driver"] = None


def other_mac(desc: dict[str, Any]) -> None:
    device(desc, ETH0)["net"]["mac"] = "52:54:00:ff:ff:ff"


def no_interface(desc: dict[str, Any]) -> None:
    desc["devices"] = [d for d in desc["devices"] if d["sys_path"] != ETH0]


def no_settle(desc: dict[str, Any]) -> None:
    desc["udev_settles"] = False


@pytest.mark.parametrize(
    ("change", "check", "words"),
    [
        (no_driver, "device", [VIRTIO0, "bound to no driver, expected virtio_net"]),
        (other_mac, "mac", ["eth0 has MAC 52:54:00:ff:ff:ff", f"expected {MAC}"]),
        (no_interface, "interface", ["eth0", MAC, "did not come back"]),
        (no_settle, "udev-settle", ["did not settle within 0.5 s", "settle-timeout"]),
    ],
)
def test_each_device_failure_is_named(
    write_config: Callable[[str], Config],
    boot_dir: Path,
    tmp_path: Path,
    make_hook: HookFactory,
    change: Callable[[dict[str, Any]], None],
    check: str,
    words: list[str],
) -> None:
    config = write_config(FAST)
    pending(config, boot_dir)
    log = tmp_path / "hooks.log"
    hooks_logging_to(make_hook, log)
    events: list[Event] = []
    eng = engine(config, machine(tmp_path, change=change), events)

    _, report = asyncio.run(recover(eng))

    assert report[0].state is TransitionState.RECOVERY_FAILED
    found = problems(config)
    assert [p["check"] for p in found] == [check]
    assert all(w in found[0]["message"] for w in words), found
    assert journal_data(config)["state"] == "recovery-failed"
    # The hooks still ran (policy "report": service is restored on this kernel).
    assert len(log.read_text().splitlines()) == 3
    (failed,) = [e for e in events if isinstance(e, TransitionFailed)]
    assert words[0] in failed.message
    assert read_pending(config.state_dir) is None


def test_wrong_kernel_is_a_failure_when_the_boot_names_the_transition(
    config: Config, boot_dir: Path, tmp_path: Path
) -> None:
    pending(config, boot_dir)
    eng = engine(config, machine(tmp_path, release="6.1.0-99-cloud-amd64"))
    _, report = asyncio.run(recover(eng))
    assert report[0].state is TransitionState.RECOVERY_FAILED
    (p,) = problems(config)
    assert p["check"] == "kernel"
    assert "6.1.0-99-cloud-amd64, not the target " + NEW_RELEASE in p["message"]


def test_unchanged_boot_id_is_a_failure(config: Config, boot_dir: Path, tmp_path: Path) -> None:
    pending(config, boot_dir)
    eng = engine(config, machine(tmp_path, boot_id=OLD_BOOT))
    state = asyncio.run(verify_after_boot(eng, transition(eng)))
    assert state is TransitionState.RECOVERY_FAILED
    (p,) = problems(config)
    assert p["check"] == "boot-id" and "did not happen" in p["message"]


@pytest.mark.parametrize(("phase", "name"), [("verify", "30-bad"), ("restore", "30-bad")])
def test_a_failing_hook_fails_verification(
    config: Config,
    boot_dir: Path,
    tmp_path: Path,
    make_hook: HookFactory,
    phase: str,
    name: str,
) -> None:
    pending(config, boot_dir)
    make_hook(name, phase, "echo service did not answer >&2; exit 4")
    eng = engine(config, machine(tmp_path))
    _, report = asyncio.run(recover(eng))
    assert report[0].state is TransitionState.RECOVERY_FAILED
    (p,) = problems(config)
    assert p["check"] == "hook"
    assert f"{phase} hook {name}" in p["message"] and "exited with status 4" in p["message"]
    assert "service did not answer" in p["message"]
    assert asyncio.run(verify_once(config, eng.backends)) == 0  # already finished: nothing


def test_a_missing_checkpoint_fails(config: Config, boot_dir: Path, tmp_path: Path) -> None:
    pending(config, boot_dir, checkpoint=False)
    eng = engine(config, machine(tmp_path))
    _, report = asyncio.run(recover(eng))
    assert report[0].state is TransitionState.RECOVERY_FAILED
    assert [p["check"] for p in problems(config)] == ["checkpoint"]
    assert journal_data(config)["verification"]["downtime"]["exec_stamp_source"] == "checkpoint"


@pytest.mark.parametrize(
    ("boot", "reason"),
    [
        ({"cmdline_id": None}, "no liveupd.transition=T1"),
        # Another kernel than the old one (the old one after the jump: fell back, below).
        ({"cmdline_id": None, "release": "6.1.0-54-cloud-amd64"}, "not the target"),
        ({"cmdline_id": "SOMEONE-ELSE"}, "no liveupd.transition=T1"),
    ],
)
def test_a_boot_that_did_not_come_from_the_kexec_is_superseded(
    config: Config,
    boot_dir: Path,
    tmp_path: Path,
    make_hook: HookFactory,
    boot: dict[str, Any],
    reason: str,
) -> None:
    pending(config, boot_dir)
    log = tmp_path / "hooks.log"
    hooks_logging_to(make_hook, log)
    eng = engine(config, machine(tmp_path, **boot))
    _, report = asyncio.run(recover(eng))
    assert report[0].state is TransitionState.SUPERSEDED
    data = journal_data(config)
    assert data["state"] == "superseded" and reason in data["verification"]["superseded"]
    assert not log.exists()  # nothing to verify, nothing to restore
    assert read_pending(config.state_dir) is None
    assert asyncio.run(verify_once(config, eng.backends)) == 0


def test_a_staged_transition_from_another_boot_is_superseded(
    config: Config, boot_dir: Path, tmp_path: Path
) -> None:
    pending(config, boot_dir, state=TransitionState.STAGED, checkpoint=False)
    eng = engine(config, machine(tmp_path))
    _, report = asyncio.run(recover(eng))
    assert report[0].state is TransitionState.SUPERSEDED
    assert "never executed" in journal_data(config)["verification"]["superseded"]


def test_verification_is_idempotent(
    config: Config, boot_dir: Path, tmp_path: Path, make_hook: HookFactory
) -> None:
    pending(config, boot_dir)
    log = tmp_path / "hooks.log"
    hooks_logging_to(make_hook, log)
    eng = engine(config, machine(tmp_path))
    assert asyncio.run(verify_once(config, eng.backends)) == 0
    first = journal_data(config)
    # The daemon starts afterwards: nothing left to do, no hook runs twice.
    _, report = asyncio.run(recover(eng))
    assert report == []
    # A verifier that loaded the journal before the first one finished sees its result.
    t = transition(eng)
    t.ctx.journal.record.state = TransitionState.RUNNING  # its stale in-memory view
    assert asyncio.run(verify_after_boot(eng, t)) is TransitionState.COMPLETED
    assert journal_data(config) == first
    assert len(log.read_text().splitlines()) == 3


def test_verify_once_exit_status_reports_failure(
    write_config: Callable[[str], Config], boot_dir: Path, tmp_path: Path
) -> None:
    config = write_config(FAST)
    pending(config, boot_dir)
    eng = engine(config, machine(tmp_path, change=no_driver))
    assert asyncio.run(verify_once(config, eng.backends)) == 1


# ------------------------------------------------------------ watchdog, fell back --

ESB = WatchdogRecord(
    name="watchdog0",
    devnode="/dev/watchdog0",
    identity="i6300ESB timer",
    sys_path="/sys/devices/pci0000:00/0000:00:08.0",
    subsystem="pci",
    device="0000:00:08.0",
    driver="i6300ESB timer",
    module="i6300esb",
    timeout=90,
)


def dry_run_ops(config: Config) -> list[dict[str, Any]]:
    path = config.state_dir / "dry-run" / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_verification_feeds_the_jumps_watchdog_and_stops_it_after(
    write_config: Callable[[str], Config], boot_dir: Path, tmp_path: Path
) -> None:
    config = write_config(FAST)
    pending(config, boot_dir, watchdog=ESB)
    eng = engine(config, machine(tmp_path))
    _, report = asyncio.run(recover(eng))
    assert report[0].state is TransitionState.COMPLETED
    verification = journal_data(config)["verification"]
    assert verification["watchdog"] == (
        "/dev/watchdog0 fed during verification (90 s), then /dev/watchdog0 stopped "
        "(closed with the magic character)"
    )
    assert verification["warnings"] == []
    ops = [op for op in dry_run_ops(config) if op["op"].startswith("watchdog")]
    assert [op["op"] for op in ops] == ["watchdog_take_over", "watchdog_release"]
    assert ops[1]["keep_running"] is False


def test_with_runtime_watchdog_sec_it_is_left_running_for_systemd(
    write_config: Callable[[str], Config], boot_dir: Path, tmp_path: Path
) -> None:
    config = write_config(FAST)
    pending(config, boot_dir, watchdog=ESB)

    def pid1_watches(desc: dict[str, Any]) -> None:
        desc["manager_watchdog_sec"] = 120

    asyncio.run(recover(engine(config, machine(tmp_path, change=pid1_watches))))
    verification = journal_data(config)["verification"]
    assert "handed over to systemd (RuntimeWatchdogSec=120s)" in verification["watchdog"]
    release = [op for op in dry_run_ops(config) if op["op"] == "watchdog_release"]
    assert release[0]["keep_running"] is True and release[0]["timeout"] == 121


def test_a_watchdog_that_cannot_be_taken_over_fails_and_the_reset_boot_falls_back(
    write_config: Callable[[str], Config], boot_dir: Path, tmp_path: Path
) -> None:
    config = write_config(FAST)
    pending(config, boot_dir, watchdog=ESB)

    def no_watchdog(desc: dict[str, Any]) -> None:
        desc["watchdogs"] = []

    new_kernel = engine(config, machine(tmp_path, change=no_watchdog))
    _, report = asyncio.run(recover(new_kernel))
    assert report[0].state is TransitionState.RECOVERY_FAILED
    verification = journal_data(config)["verification"]
    assert "could not be taken over" in verification["watchdog"]
    [problem] = verification["problems"]
    assert problem["check"] == "watchdog"
    assert "Its timer still runs: the machine resets within 90 s" in problem["message"]
    # The timer resets the machine: the pending record stays for the next boot.
    assert read_pending(config.state_dir) == "T1"
    assert asyncio.run(recover(new_kernel))[1] == []  # the same boot: the reset is to come
    assert read_pending(config.state_dir) == "T1"

    reset_boot = "00000000-0000-4000-8000-0000000000c3"
    old_kernel = machine(
        tmp_path, release=OLD_RELEASE, boot_id=reset_boot, cmdline_id=None, name="reset.json"
    )
    _, report = asyncio.run(recover(engine(config, old_kernel)))
    assert [(r.id, r.state) for r in report] == [("T1", TransitionState.FELL_BACK)]
    data = journal_data(config)
    assert data["state"] == "fell-back"
    assert data["verification"]["boot_id"] == reset_boot
    assert data["verification"]["fell_back"]
    assert read_pending(config.state_dir) is None
    assert history(config.state_dir)[0]["state"] == "fell-back"


def test_a_daemon_that_died_between_arming_and_the_jump_is_disarmed_on_restart(
    config: Config, boot_dir: Path, tmp_path: Path
) -> None:
    """direct mode: the watchdog's undo was journaled after the freeze, so only the
    checkpoint shows it; recovery on the same boot stops it before undoing the rest."""
    pending(config, boot_dir, state=TransitionState.RUNNING, watchdog=ESB)
    same_boot = machine(tmp_path, release=OLD_RELEASE, boot_id=OLD_BOOT, cmdline_id=None)
    eng = engine(config, same_boot)
    eng.backends.watchdog.arm(ESB)
    _, report = asyncio.run(recover(eng))
    assert report[0].state is TransitionState.ABORTED
    ops = [op["op"] for op in dry_run_ops(config)]
    assert ops.index("watchdog_arm") < ops.index("watchdog_disarm")
    assert dryrun.SimMachine(config.state_dir).state()["watchdog_armed"] is None


def test_a_corrupt_journal_of_this_boot_with_an_armed_watchdog_is_disarmed(
    config: Config, boot_dir: Path, tmp_path: Path
) -> None:
    journal = pending(config, boot_dir, state=TransitionState.RUNNING, watchdog=ESB)
    journal.path.write_text("{not json")
    same_boot = machine(tmp_path, release=OLD_RELEASE, boot_id=OLD_BOOT, cmdline_id=None)
    eng = engine(config, same_boot)
    eng.backends.watchdog.arm(ESB)
    _, [found] = asyncio.run(recover(eng))
    assert "disarmed the watchdog /dev/watchdog0" in found.note
    assert dryrun.SimMachine(config.state_dir).state()["watchdog_armed"] is None


@pytest.mark.parametrize(
    ("state", "bootstatus", "reason"),
    [
        # direct mode: the state directory was frozen before the jump, so the journal
        # on disk says running; the exec stamp, written before the freeze, is there.
        ("running", 32, "the hardware watchdog (watchdog0) reset the machine"),
        ("exec", 0, "came back on the old kernel (no watchdog reset recorded"),
    ],
)
def test_coming_back_on_the_old_kernel_after_the_jump_is_fell_back(
    write_config: Callable[[str], Config],
    boot_dir: Path,
    tmp_path: Path,
    make_hook: HookFactory,
    state: str,
    bootstatus: int,
    reason: str,
) -> None:
    config = write_config(FAST)
    pending(config, boot_dir, state=TransitionState(state), watchdog=ESB)
    log = tmp_path / "hooks.log"
    hooks_logging_to(make_hook, log)

    def reset(desc: dict[str, Any]) -> None:
        desc["watchdogs"][0]["bootstatus"] = bootstatus

    old_kernel = machine(tmp_path, release=OLD_RELEASE, cmdline_id=None, change=reset)
    eng = engine(config, old_kernel)
    _, report = asyncio.run(recover(eng))
    assert report[0].state is TransitionState.FELL_BACK
    data = journal_data(config)
    assert data["state"] == "fell-back"
    assert data["verification"]["fell_back"].startswith(reason)
    assert not log.exists()  # nothing verified or restored on the old kernel
    assert read_pending(config.state_dir) is None
    assert asyncio.run(verify_once(config, eng.backends)) == 0  # already recorded
    assert history(config.state_dir)[0]["state"] == "fell-back"
    # The target is quarantined: never staged again until an admin clears it.
    [held] = quarantine.read(config.state_dir).kernels
    assert (held.release, held.transition) == (NEW_RELEASE, "T1")
    assert held.reason == data["verification"]["fell_back"]
    events = [json.loads(line)["event"] for line in (eng_log(config)).read_text().splitlines()]
    assert events.index("quarantine.added") < events.index("verify.finished")


def eng_log(config: Config, tid: str = "T1") -> Path:
    return config.state_dir / "transitions" / tid / "log.jsonl"


def test_a_quarantine_that_cannot_be_written_is_a_warning_of_the_fall_back(
    write_config: Callable[[str], Config], boot_dir: Path, tmp_path: Path
) -> None:
    config = write_config(FAST)
    pending(config, boot_dir, state=TransitionState.EXEC, watchdog=ESB)
    quarantine.path_in(config.state_dir).mkdir()  # cannot be replaced by a file
    old_kernel = machine(tmp_path, release=OLD_RELEASE, cmdline_id=None)
    _, report = asyncio.run(recover(engine(config, old_kernel)))
    assert report[0].state is TransitionState.FELL_BACK  # it still ends, and says so
    [warning] = journal_data(config)["verification"]["warnings"]
    assert f"{NEW_RELEASE} could not be quarantined" in warning
    assert "auto-stage and 'liveupctl reboot' may try it again" in warning


def test_the_old_kernel_booted_before_the_jump_is_still_superseded(
    config: Config, boot_dir: Path, tmp_path: Path
) -> None:
    """A transition that never reached the jump (rebooted while it ran: no exec stamp)."""
    journal = pending(config, boot_dir, state=TransitionState.RUNNING, watchdog=ESB)
    (journal.dir / STAMP_NAME).unlink()
    eng = engine(config, machine(tmp_path, release=OLD_RELEASE, cmdline_id=None))
    _, report = asyncio.run(recover(eng))
    assert report[0].state is TransitionState.SUPERSEDED
