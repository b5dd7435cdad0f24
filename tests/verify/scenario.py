"""A transition left pending by the old kernel, and the new boot the verifier finds."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from liveupd.assembly import make_engine
from liveupd.backends import dryrun
from liveupd.backends.base import Binding, NetInterface, WatchdogRecord
from liveupd.config import Config
from liveupd.recovery import context_from_journal
from liveupd.transition.checkpoint import STAMP_NAME
from liveupd.transition.engine import Engine, Transition
from liveupd.transition.events import Event
from liveupd.transition.journal import Journal
from liveupd.transition.phases import TransitionState
from tests.devices.fakes import TARGET, checkpoint_record, write_pending

OLD_RELEASE = "6.1.0-55-cloud-amd64"
NEW_RELEASE = TARGET.release
OLD_BOOT = "00000000-0000-4000-8000-000000000001"
NEW_BOOT = "00000000-0000-4000-8000-0000000000b2"
VIRTIO0 = "/sys/devices/pci0000:00/0000:00:03.0/virtio0"
MAC = "52:54:00:12:34:56"
NET = Binding(VIRTIO0, "virtio", "virtio0", "virtio_net", net=(NetInterface("eth0", MAC, True),))
EXEC_AGO = 30.0  # seconds between the exec stamp and now
UPTIME = 12.5


def pending(
    config: Config,
    boot_dir: Path,
    tid: str = "T1",
    *,
    state: TransitionState = TransitionState.RUNNING,
    old_kernel: bool = True,
    checkpoint: bool = True,
    watchdog: WatchdogRecord | None = None,
    crash_loaded: bool | None = None,
) -> Journal:
    """What the old kernel left: a running journal, the checkpoint, pending, the exec stamp."""
    target = replace(TARGET, cmdline=f"root=/dev/vda rw liveupd.transition={tid}")
    journal = Journal.create(
        config.state_dir,
        tid,
        boot_id=OLD_BOOT,
        old_release=OLD_RELEASE,
        target=target.to_json(),
        mode="direct",
        dry_run=True,
    )
    journal.set_state(state)
    if checkpoint:
        kernel = str(boot_dir / f"vmlinuz-{OLD_RELEASE}") if old_kernel else None
        write_pending(
            config.state_dir,
            checkpoint_record(
                tid,
                bindings=(NET,),
                old_kernel=kernel,
                target=target,
                watchdog=watchdog,
                crash_loaded=crash_loaded,
            ),
        )
        stamp = int((time.time() - EXEC_AGO) * 1e9)
        (journal.dir / STAMP_NAME).write_text(f"{stamp}\n")
    return journal


def machine(
    tmp_path: Path,
    *,
    release: str = NEW_RELEASE,
    boot_id: str = NEW_BOOT,
    cmdline_id: str | None = "T1",
    change: Callable[[dict[str, Any]], object] | None = None,
    name: str = "new-boot.json",
) -> Path:
    """The simulated machine as the verifier finds it after the jump."""
    desc = copy.deepcopy(dryrun.DEFAULT_MACHINE)
    cmdline = "root=/dev/vda rw console=ttyS0"
    if cmdline_id:
        cmdline += f" liveupd.transition={cmdline_id}"
    desc["system"] = {"release": release, "boot_id": boot_id, "cmdline": cmdline, "uptime": UPTIME}
    if change:
        change(desc)
    path = tmp_path / name
    path.write_text(json.dumps(desc))
    return path


def device(desc: dict[str, Any], sys_path: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in desc["devices"] if d["sys_path"] == sys_path)
    return found


def engine(config: Config, machine_file: Path, events: list[Event] | None = None) -> Engine:
    backends = dryrun.make(config.state_dir, machine_file)
    sink = events.append if events is not None else (lambda e: None)
    return make_engine(config, backends, events=sink)


def transition(engine: Engine, tid: str = "T1") -> Transition:
    journal = Journal.load(engine.config.state_dir / "transitions" / tid / "journal.json")
    return Transition(context_from_journal(engine, journal))


def journal_data(config: Config, tid: str = "T1") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (config.state_dir / "transitions" / tid / "journal.json").read_text()
    )
    return data
