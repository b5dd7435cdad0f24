"""The checkpoint record: complete, atomic, durable; a torn or partial record is never used."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from liveupd.assembly.checkpoint_step import CheckpointStep
from liveupd.backends.base import Binding, NetInterface, WatchdogRecord
from liveupd.config import Config
from liveupd.devices.steps import BINDINGS
from liveupd.transition.checkpoint import (
    CHECKPOINT_NAME,
    STAMP_NAME,
    Checkpoint,
    InvalidCheckpoint,
    load_checkpoint,
    pending_path,
    read_pending,
    undo_checkpoint,
    write_checkpoint,
)
from liveupd.transition.undo import CheckpointUndo
from tests.devices.fakes import MAC, TARGET, FakeStorage, checkpoint_record, context, prepare

ROOT = Path(__file__).resolve().parents[2]
BINDING = Binding(
    "/sys/devices/pci0000:00/0000:00:03.0/virtio0",
    "virtio",
    "virtio0",
    "virtio_net",
    driver_override=None,
    net=(NetInterface("eth0", MAC, True),),
)


def test_the_record_holds_everything_the_new_kernel_needs(
    write_config: Callable[[str], Config], boot_dir: Path
) -> None:
    config = write_config('[storage]\nfreeze = ["/", "/data", "/run"]\n')
    ctx = context(config, storage=FakeStorage())
    ctx.facts.set(BINDINGS, (BINDING,))
    ctx.hook_state_dir("10-db").mkdir(parents=True)
    prepare(CheckpointStep(), ctx)
    asyncio.run(CheckpointStep().apply(ctx))

    path = ctx.dir / CHECKPOINT_NAME
    data = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert data["id"] == "T1" and data["version"] == 1 and data["mode"] == "direct"
    assert data["old"] == {
        "release": "6.1.0-55-cloud-amd64",
        "boot_id": "00000000-0000-4000-8000-000000000001",
        "cmdline": "root=/dev/vda rw console=ttyS0",
        "kernel_path": str(boot_dir / "vmlinuz-6.1.0-55-cloud-amd64"),
        "initrd_path": str(boot_dir / "initrd.img-6.1.0-55-cloud-amd64"),
    }
    assert data["new"] == TARGET.to_json()
    assert data["bindings"] == [
        {
            "sys_path": BINDING.sys_path,
            "subsystem": "virtio",
            "name": "virtio0",
            "driver": "virtio_net",
            "driver_override": None,
            "net": [{"ifname": "eth0", "mac": MAC, "up": True}],
        }
    ]
    assert data["freeze"] == ["/data", "/"]
    assert data["freeze_skipped"] == [["/run", "tmpfs cannot be frozen"]]
    assert data["hook_state_dirs"] == {"10-db": str(ctx.dir / "hooks" / "10-db")}
    assert read_pending(config.state_dir) == "T1"
    assert load_checkpoint(ctx.dir) == Checkpoint.from_json(data)


def test_undo_drops_the_pending_pointer_and_the_stamp(config: Config) -> None:
    ctx = context(config, storage=FakeStorage())
    prepare(CheckpointStep(), ctx)
    asyncio.run(CheckpointStep().apply(ctx))
    (ctx.dir / STAMP_NAME).write_text("1\n")
    asyncio.run(undo_checkpoint(ctx, CheckpointUndo()))
    assert read_pending(config.state_dir) is None
    assert not pending_path(config.state_dir).exists() and not (ctx.dir / STAMP_NAME).exists()


CRASHING_WRITER = textwrap.dedent(
    """
    import os, pathlib, sys
    from liveupd.transition.checkpoint import write_checkpoint
    from tests.devices.fakes import checkpoint_record, TARGET
    from dataclasses import replace

    tdir = pathlib.Path(sys.argv[1])
    # The power goes out after the new record is written and fsync'd, before the rename.
    pathlib.Path.replace = lambda self, target: os._exit(9)
    write_checkpoint(tdir, checkpoint_record("T1", target=replace(TARGET, release="NEW")))
    """
)


def test_a_crash_between_write_and_rename_leaves_the_previous_valid_record(
    tmp_path: Path,
) -> None:
    tdir = tmp_path / "transitions" / "T1"
    write_checkpoint(tdir, checkpoint_record("T1"))
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(tdir)],
        cwd=ROOT,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 9, proc.stderr.decode()
    leftovers = [p.name for p in tdir.iterdir() if p.name != CHECKPOINT_NAME]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".{CHECKPOINT_NAME}.tmp")
    assert '"NEW"' in (tdir / leftovers[0]).read_text()  # the new record, never renamed
    record = load_checkpoint(tdir)
    assert record is not None and record.new.release == TARGET.release  # the old one


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d.pop("bindings"),
        lambda d: d.update(version=2),
        lambda d: d.update(id="T2"),  # a record copied from another transition
        lambda d: d["old"].pop("boot_id"),
        lambda d: d.update(bindings=[{"sys_path": "/sys/x"}]),
    ],
)
def test_an_incomplete_or_foreign_record_is_not_used(
    tmp_path: Path, spoil: Callable[[dict[str, object]], object]
) -> None:
    tdir = tmp_path / "T1"
    write_checkpoint(tdir, checkpoint_record("T1"))
    data = json.loads((tdir / CHECKPOINT_NAME).read_text())
    spoil(data)
    (tdir / CHECKPOINT_NAME).write_text(json.dumps(data))
    assert load_checkpoint(tdir) is None


def test_torn_json_is_not_used(tmp_path: Path) -> None:
    tdir = tmp_path / "T1"
    write_checkpoint(tdir, checkpoint_record("T1"))
    text = (tdir / CHECKPOINT_NAME).read_text()
    (tdir / CHECKPOINT_NAME).write_text(text[: len(text) // 2])
    assert load_checkpoint(tdir) is None


def test_round_trip() -> None:
    record = replace(checkpoint_record("T1"), bindings=(BINDING,))
    assert Checkpoint.from_json(json.loads(json.dumps(record.to_json()))) == record


WATCHDOG = WatchdogRecord(
    name="watchdog0",
    devnode="/dev/watchdog0",
    identity="i6300ESB timer",
    sys_path="/sys/devices/pci0000:00/0000:00:08.0",
    subsystem="pci",
    device="0000:00:08.0",
    driver="i6300ESB timer",
    module="i6300esb",
    timeout=120,
)


def test_the_watchdog_armed_for_the_jump_round_trips() -> None:
    record = checkpoint_record("T1", watchdog=WATCHDOG)
    assert Checkpoint.from_json(json.loads(json.dumps(record.to_json()))) == record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timeout": "120"}, "watchdog.timeout: expected an integer"),
        ({"timeout": 0}, "watchdog.timeout: expected 1 to 3600 seconds"),
        ({"devnode": "/etc/shadow"}, "watchdog.devnode: expected /dev/"),
        ({"module": 3}, "watchdog.module: expected a string or null"),
        ({"name": "../watchdog0"}, "watchdog.name: expected watchdogN"),
        ({"name": "watchdog"}, "watchdog.name: expected watchdogN"),
        ({"subsystem": "../../kernel"}, "watchdog.subsystem: expected a name without"),
        ({"driver": "x/../../unbind"}, "watchdog.driver: expected a name without"),
        ({"device": ".."}, "watchdog.device: expected a name without"),
        ({"device": ""}, "watchdog.device: expected a name without"),
        ({"module": "-r"}, "watchdog.module: expected letters"),
        ({"module": "i6300esb; reboot"}, "watchdog.module: expected letters"),
        ({"extra": 1}, "unexpected keyword argument"),
    ],
)
def test_a_bad_watchdog_in_the_record_is_reported(change: dict[str, object], message: str) -> None:
    data = checkpoint_record("T1", watchdog=WATCHDOG).to_json()
    data["watchdog"].update(change)
    with pytest.raises(InvalidCheckpoint, match=message):
        Checkpoint.from_json(data)
