"""kdump survives a live update: the decisions (pure, every case), the verification that
runs them on the dry-run machine, the checkpoint's record, and the unload that never
touches the crash kernel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from liveupd.backends import dryrun
from liveupd.config import Config
from liveupd.kernel import kdump as sys_kdump
from liveupd.kernel import syscalls
from liveupd.kernel.arch import arch_info
from liveupd.manager import Manager
from liveupd.recovery import recover
from liveupd.transition.checkpoint import Checkpoint, InvalidCheckpoint, load_checkpoint
from liveupd.transition.context import StageRequest
from liveupd.transition.phases import ExecMode, TransitionState
from liveupd.verify.kdump import PREFIX, after_load, decide
from tests.devices.fakes import checkpoint_record
from tests.verify.scenario import engine, journal_data, machine, pending

LOADER = "/usr/sbin/kdump-config"
GiB = 1 << 30

# ------------------------------------------------------------------ decide --


@pytest.mark.parametrize("before", [False, None])
@pytest.mark.parametrize("now", [True, False, None])
@pytest.mark.parametrize("reserved", [0, GiB, None])
@pytest.mark.parametrize("loader", [LOADER, None])
def test_nothing_is_done_when_no_crash_kernel_was_loaded_before(
    before: bool | None, now: bool | None, reserved: int | None, loader: str | None
) -> None:
    d = decide(before, now, reserved, loader)
    assert (d.load, d.warning) == (False, "")


@pytest.mark.parametrize("reserved", [0, GiB, None])
@pytest.mark.parametrize("loader", [LOADER, None])
def test_a_crash_kernel_already_loaded_here_is_left_alone(
    reserved: int | None, loader: str | None
) -> None:
    d = decide(True, True, reserved, loader)
    assert (d.load, d.warning) == (False, "")


@pytest.mark.parametrize("reserved", [0, GiB, None])
@pytest.mark.parametrize("loader", [LOADER, None])
def test_a_kernel_without_crash_kexec_cannot_be_rearmed(
    reserved: int | None, loader: str | None
) -> None:
    d = decide(True, None, reserved, loader)
    assert not d.load
    assert d.warning.startswith(PREFIX) and "built without crash kexec" in d.warning


@pytest.mark.parametrize("loader", [LOADER, None])
def test_no_reservation_says_crashkernel_is_missing(loader: str | None) -> None:
    d = decide(True, False, 0, loader)
    assert not d.load
    assert d.warning.startswith(PREFIX) and "crashkernel=" in d.warning


@pytest.mark.parametrize("reserved", [GiB, None])
def test_no_loader_is_a_warning(reserved: int | None) -> None:
    d = decide(True, False, reserved, None)
    assert not d.load
    assert d.warning.startswith(PREFIX) and "kdump-config" in d.warning


@pytest.mark.parametrize("reserved", [GiB, None])
def test_the_loader_runs_when_one_was_loaded_before_and_none_is_now(
    reserved: int | None,
) -> None:
    d = decide(True, False, reserved, LOADER)
    assert d.load and d.warning == ""


@pytest.mark.parametrize(
    ("error", "now", "warned"),
    [
        ("", True, ""),
        ("", False, "still does not read 1"),
        ("", None, "still does not read 1"),
        ("'kdump-config load' exited with status 1: boom", True, "exited with status 1: boom"),
        ("'kdump-config load' did not finish within 90 s", False, "did not finish"),
    ],
)
def test_after_the_loader(error: str, now: bool | None, warned: str) -> None:
    warning = after_load(error, now)
    if warned:
        assert warning.startswith(PREFIX) and warned in warning
    else:
        assert warning == ""


# ------------------------------------------------------ on the new kernel --


def kdump_machine(
    crash_loaded: bool | None, loader: str | None, crash_size: int = GiB
) -> Callable[[dict[str, Any]], None]:
    def change(desc: dict[str, Any]) -> None:
        if crash_loaded is None:
            return  # a kernel without crash kexec: no "kdump" at all
        desc["kdump"] = {"crash_loaded": crash_loaded, "crash_size": crash_size, "loader": loader}

    return change


def verify(config: Config, tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Any:
    eng = engine(config, machine(tmp_path, change=change))
    _, report = asyncio.run(recover(eng))
    return report, journal_data(config)["verification"], eng


@pytest.mark.parametrize(
    ("loader", "warned"),
    [
        ("ok", None),
        ("no-effect", "still does not read 1"),
        ("fails", "exited with status 1"),
        ("hangs", "did not finish within 90 s"),
        (None, "no loader is installed here"),
    ],
)
def test_verification_reloads_the_crash_kernel_or_warns(
    write_config: Callable[[str], Config],
    boot_dir: Path,
    tmp_path: Path,
    loader: str | None,
    warned: str | None,
) -> None:
    config = write_config("[verify]\nsettle-timeout = 0.5\n")
    pending(config, boot_dir, crash_loaded=True)
    report, verification, eng = verify(config, tmp_path, kdump_machine(False, loader))
    assert report[0].state is TransitionState.COMPLETED  # a warning, never a failure
    loads = [c for c in eng.backends.kdump.m.calls() if c["op"] == "kdump_load"]
    assert len(loads) == (1 if loader else 0)
    if warned is None:
        assert verification["warnings"] == []
        assert eng.backends.kdump.crash_loaded() is True
        events = (config.state_dir / "transitions" / "T1" / "log.jsonl").read_text()
        assert "kdump.rearmed" in events
    else:
        [warning] = verification["warnings"]
        assert warning.startswith("kdump not re-armed: ") and warned in warning, warning


@pytest.mark.parametrize(
    ("before", "now"), [(False, False), (None, False), (True, True), (True, None)]
)
def test_verification_leaves_kdump_alone_unless_it_was_lost(
    write_config: Callable[[str], Config],
    boot_dir: Path,
    tmp_path: Path,
    before: bool | None,
    now: bool | None,
) -> None:
    config = write_config("[verify]\nsettle-timeout = 0.5\n")
    pending(config, boot_dir, crash_loaded=before)
    report, verification, eng = verify(config, tmp_path, kdump_machine(now, "ok"))
    assert report[0].state is TransitionState.COMPLETED
    loads = [c for c in eng.backends.kdump.m.calls() if c["op"] == "kdump_load"]
    assert loads == []
    if now is None and before:
        [warning] = verification["warnings"]
        assert "built without crash kexec" in warning
    else:
        assert verification["warnings"] == []


def test_a_rollback_does_not_rearm_on_the_kernel_it_leaves(
    write_config: Callable[[str], Config], boot_dir: Path, tmp_path: Path
) -> None:
    config = write_config('[verify]\nsettle-timeout = 0.5\non-failure = "rollback"\n')
    pending(config, boot_dir, crash_loaded=True)

    def broken(desc: dict[str, Any]) -> None:
        kdump_machine(False, "ok")(desc)
        desc["devices"] = [d for d in desc["devices"] if d.get("driver") != "virtio_net"]

    report, verification, eng = verify(config, tmp_path, broken)
    assert report[0].state is TransitionState.RECOVERY_FAILED and verification["problems"]
    loads = [c for c in eng.backends.kdump.m.calls() if c["op"] == "kdump_load"]
    assert loads == []


# -------------------------------------------------------------- the record --


@pytest.mark.parametrize("value", [True, False, None])
def test_the_checkpoint_records_whether_a_crash_kernel_was_loaded(value: bool | None) -> None:
    record = checkpoint_record(crash_loaded=value)
    assert Checkpoint.from_json(record.to_json()).crash_loaded is value


def test_a_checkpoint_without_the_field_reads_as_unknown() -> None:
    data = checkpoint_record(crash_loaded=True).to_json()
    del data["crash_loaded"]
    assert Checkpoint.from_json(data).crash_loaded is None


@pytest.mark.parametrize("bad", [1, "yes", [True]])
def test_a_bad_crash_loaded_is_refused_by_name(bad: object) -> None:
    data = checkpoint_record().to_json()
    data["crash_loaded"] = bad
    with pytest.raises(InvalidCheckpoint, match="crash_loaded"):
        Checkpoint.from_json(data)


def test_the_checkpoint_step_records_the_crash_kernel(
    config: Config, tmp_path: Path, boot_dir: Path
) -> None:
    """Through a whole dry-run jump: loaded before it, recorded in the checkpoint."""
    desc = {**dryrun.DEFAULT_MACHINE, "kdump": {"crash_loaded": True, "crash_size": GiB}}
    desc["after_jump"] = "halt"
    path = tmp_path / "machine.json"
    path.write_text(json.dumps(desc))
    manager = Manager(config, dryrun.make(config.state_dir, path))

    async def go() -> str:
        t = await manager.stage(StageRequest(kernel="6.1.0-56-cloud-amd64"))
        manager.execute(ExecMode.DIRECT)
        assert t.task is not None
        await t.task
        return t.id

    tid = asyncio.run(go())
    record = load_checkpoint(config.state_dir / "transitions" / tid)
    assert record is not None and record.crash_loaded is True
    # The crash kernel was never unloaded: only the normal image is.
    ops = [c["op"] for c in dryrun.SimMachine(config.state_dir).calls()]
    assert "kdump_load" not in ops


# ------------------------------------------------------------- the unload --


def test_the_unload_never_asks_for_the_crash_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def call(*args: Any) -> int:
        calls.append(args)
        return 0

    monkeypatch.setattr(syscalls, "call", call)
    syscalls.kexec_file_unload(arch_info())
    [(_, _, _, _, _, flags)] = calls
    assert flags == int(syscalls.KexecFileFlag.UNLOAD)
    assert not flags & int(syscalls.KexecFileFlag.ON_CRASH)


# ------------------------------------------------------ the real loader --


def test_the_real_backend_reads_sysfs(tmp_path: Path) -> None:
    (tmp_path / "sys/kernel").mkdir(parents=True)
    k = sys_kdump.SysKdump(tmp_path)
    assert k.crash_loaded() is None and k.crash_size() is None
    (tmp_path / sys_kdump.CRASH_LOADED).write_text("1\n")
    (tmp_path / sys_kdump.CRASH_SIZE).write_text("268435456\n")
    assert k.crash_loaded() is True and k.crash_size() == 268435456
    (tmp_path / sys_kdump.CRASH_LOADED).write_text("0\n")
    assert k.crash_loaded() is False


@pytest.mark.parametrize(
    ("script", "said"),
    [
        ("exit 0", ""),
        (
            "echo starting; echo 'no crashkernel= reservation' >&2; exit 2",
            "status 2: no crashkernel",
        ),
        ("exec sleep 30", "did not finish within 0.5 s"),
    ],
)
def test_the_real_loader_runs_under_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, said: str
) -> None:
    program = tmp_path / "kdump-config"
    program.write_text(f'#!/bin/sh\n[ "$1" = load ] || exit 9\n{script}\n')
    program.chmod(0o755)
    monkeypatch.setattr(sys_kdump, "LOADERS", (str(program),))
    result = sys_kdump.SysKdump(tmp_path).load(0.5)
    if said:
        assert said in result, result
    else:
        assert result == ""


def test_no_real_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys_kdump, "LOADERS", (str(tmp_path / "absent"),))
    k = sys_kdump.SysKdump(tmp_path)
    assert k.loader() is None
    assert "no loader is installed" in k.load(1.0)
