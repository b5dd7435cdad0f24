"""verify.on-failure = "rollback": back to the previous kernel, once, recorded in history."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liveupd.backends.dryrun import SimMachine
from liveupd.config import Config
from liveupd.recovery import recover
from liveupd.transition.history import history
from liveupd.transition.journal import Journal
from liveupd.transition.phases import TransitionState
from tests.devices.fakes import OURS
from tests.verify.scenario import (
    NEW_RELEASE,
    OLD_RELEASE,
    VIRTIO0,
    device,
    engine,
    journal_data,
    machine,
    pending,
)

ROLLBACK = '[verify]\non-failure = "rollback"\nsettle-timeout = 0.5\n'


def broken(desc: dict[str, Any]) -> None:
    device(desc, VIRTIO0)["driver"] = None


def other_mac(desc: dict[str, Any]) -> None:
    device(desc, f"{VIRTIO0}/net/eth0")["net"]["mac"] = "52:54:00:ff:ff:ff"


def others(config: Config, *known: str) -> list[Journal]:
    return [j for j in Journal.all(config.state_dir) if j.id not in known]


def test_failed_verification_goes_back_once_and_never_loops(
    write_config: Callable[[str], Config], boot_dir: Path, tmp_path: Path
) -> None:
    config = write_config(ROLLBACK)
    pending(config, boot_dir)

    # The new kernel comes up with the NIC unbound: verification fails, a rollback runs.
    eng = engine(config, machine(tmp_path, change=broken))
    _, report = asyncio.run(recover(eng))
    assert [(r.id, r.state) for r in report] == [("T1", TransitionState.RECOVERY_FAILED)]
    (back,) = others(config, "T1")
    assert back.record.rollback_of == "T1"
    assert back.state is TransitionState.EXEC  # the (simulated) jump back was made
    assert back.record.target is not None
    target = back.record.target.to_json()
    assert target["release"] == OLD_RELEASE
    assert target["kernel_path"] == str(boot_dir / f"vmlinuz-{OLD_RELEASE}")
    # The old command line, without the boot loader's words, naming the rollback.
    assert (
        target["cmdline"] == f"root=/dev/vda rw console=ttyS0 {OURS} liveupd.transition={back.id}"
    )
    original = journal_data(config)
    assert original["verification"]["rollback"] == {
        "transition": back.id,
        "mode": "direct",
        "state": "exec",
    }
    jumps = [c for c in SimMachine(config.state_dir).calls() if c["op"] == "jump"]
    assert [j["loaded"]["release"] for j in jumps] == [OLD_RELEASE]

    # The previous kernel comes up, and verification fails again: no second rollback.
    eng = engine(
        config,
        machine(
            tmp_path,
            release=OLD_RELEASE,
            boot_id="00000000-0000-4000-8000-0000000000c3",
            cmdline_id=back.id,
            change=other_mac,
            name="back.json",
        ),
    )
    _, report = asyncio.run(recover(eng))
    assert [(r.id, r.state) for r in report] == [(back.id, TransitionState.RECOVERY_FAILED)]
    assert others(config, "T1", back.id) == []  # nothing new was staged
    skipped = journal_data(config, back.id)["verification"]["rollback"]["skipped"]
    assert f"{back.id} is itself the rollback of T1" in skipped
    assert len([c for c in SimMachine(config.state_dir).calls() if c["op"] == "jump"]) == 1

    # History shows the pair.
    by_id = {h["id"]: h for h in history(config.state_dir)}
    assert by_id[back.id]["rollback_of"] == "T1"
    assert by_id["T1"]["state"] == "recovery-failed"
    assert by_id["T1"]["verification"]["rollback"]["transition"] == back.id
    assert by_id["T1"]["new_release"] == NEW_RELEASE


def test_a_successful_rollback_transition_completes(
    write_config: Callable[[str], Config], boot_dir: Path, tmp_path: Path
) -> None:
    config = write_config(ROLLBACK)
    pending(config, boot_dir)
    asyncio.run(recover(engine(config, machine(tmp_path, change=broken))))
    (back,) = others(config, "T1")
    eng = engine(
        config,
        machine(
            tmp_path,
            release=OLD_RELEASE,
            boot_id="00000000-0000-4000-8000-0000000000c3",
            cmdline_id=back.id,
            name="back.json",
        ),
    )
    _, report = asyncio.run(recover(eng))
    assert [(r.id, r.state) for r in report] == [(back.id, TransitionState.COMPLETED)]


def test_no_rollback_without_the_previous_kernel(
    write_config: Callable[[str], Config], boot_dir: Path, tmp_path: Path
) -> None:
    config = write_config(ROLLBACK)
    pending(config, boot_dir, old_kernel=False)
    asyncio.run(recover(engine(config, machine(tmp_path, change=broken))))
    assert others(config, "T1") == []
    skipped = journal_data(config)["verification"]["rollback"]["skipped"]
    assert "was not found in kernel.allowed-dirs" in skipped


def test_report_policy_never_rolls_back(
    write_config: Callable[[str], Config], boot_dir: Path, tmp_path: Path
) -> None:
    config = write_config("[verify]\nsettle-timeout = 0.5\n")
    pending(config, boot_dir)
    asyncio.run(recover(engine(config, machine(tmp_path, change=broken))))
    assert others(config, "T1") == []
    assert "rollback" not in journal_data(config)["verification"]


def test_a_staging_failure_is_recorded(
    write_config: Callable[[str], Config], boot_dir: Path, tmp_path: Path
) -> None:
    config = write_config(ROLLBACK)
    pending(config, boot_dir)
    (boot_dir / f"vmlinuz-{OLD_RELEASE}").unlink()  # removed since the transition
    _, report = asyncio.run(recover(engine(config, machine(tmp_path, change=broken))))
    assert report[0].state is TransitionState.RECOVERY_FAILED
    rollback = journal_data(config)["verification"]["rollback"]
    assert rollback["error"].startswith("staging the previous kernel failed")
    # Tried once: a later verification run does not try again.
    assert rollback["requested"]
