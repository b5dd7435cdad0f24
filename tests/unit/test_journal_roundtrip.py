"""A journal reads back exactly what was written, optional fields included.

Journal lines are written without their None fields; a target without an
initrd (a unified kernel image staged with its own initrd, or none) once read
back as "set.target.initrd_path: Field required" and verification on the new
kernel quarantined the journal of a transition that had succeeded.

Until issue 19 the records were models of a validation library; a journal
written then (an unfinished transition's, across the upgrade) reads, and is
written, the same.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from liveupd import schema
from liveupd.backends.base import WatchdogRecord
from liveupd.transition.journal import JOURNAL_NAME, Journal, read
from liveupd.transition.phases import ExecMode, Phase, StepStatus, TransitionState
from liveupd.transition.records import JournalEvent, Target, TransitionRecord
from liveupd.transition.undo import StartUnitsUndo, WatchdogUndo

UKI = Target(
    release="7.3.4+deb13-cloud-amd64",
    kernel_path="/boot/efi/EFI/Linux/debian-7.3.4.efi",
    cmdline="root=/dev/vda ro liveupd.transition=T1",
    sha256="1" * 64,
    profile="@0",
)


@pytest.mark.parametrize("initrd", [None, "/boot/initrd.img-7.3.4+deb13-cloud-amd64"])
def test_a_target_reads_back_as_written(tmp_path: Path, initrd: str | None) -> None:
    target = replace(UKI, initrd_path=initrd)
    journal = Journal.create(tmp_path, "T1", boot_id="b1", old_release="r")
    journal.update(target=target)
    loaded = Journal.load(journal.path)
    assert loaded.record.target == target
    assert loaded.record.target is not None and loaded.record.target.initrd_path == initrd


def test_a_target_in_the_first_line_reads_back_as_written(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "T1", boot_id="b1", old_release="r", target=UKI)
    assert Journal.load(journal.path).record.target == UKI


# Written by liveupd before issue 19 (by the validation library it used then): every
# record and every undo kind, non-ASCII text, None fields left out.
JOURNAL_BEFORE_19 = (
    '{"id":"T1","state":"staged","created":1796201115.6042428,"boot_id":"b1","old_release":'
    '"6.1","request":{"kernel":"7.3.4","initrd":"","cmdline":"","append":"x","sha256":"","p'
    'rofile":""},"dry_run":false,"steps":[],"phases":{},"undone":[],"undo_failures":[],"ses'
    'sions_ended":[],"units_stopped":[],"preserved":[],"journal_errors":[]}\n'
    '{"event":"set","target":{"release":"7.3.4","kernel_path":"/boot/x.efi","cmdline":"root'
    '=/dev/vda ro é","sha256":"111111111111111111111111111111111111111111111111111111111111'
    '1111","profile":"@0","uki_initrd":false,"added":["panic=10","liveupd.transition=T1"]}}\n'
    '{"event":"started","at":1796201115.6097338,"steps":[{"key":"hook:10-db","phase":"quies'
    'ce","undo":{"kind":"hook","hook":"10-db","phase":"quiesce","argv":["/bin/true","ü"],"t'
    'imeout":1.5}},{"key":"devices:devices","phase":"unbind","undo":{"kind":"rebind","bindi'
    'ngs":[{"sys_path":"/sys/a","subsystem":"pci","name":"0000:00:03.0","driver":"virtio-pc'
    'i","net":[]},{"sys_path":"/sys/a/b","subsystem":"virtio","name":"virtio0","driver":"vi'
    'rtio_net","driver_override":"x","net":[{"ifname":"eth0","mac":"52:54:00:12:34:56","up"'
    ':true}]}]}},{"key":"storage:storage","phase":"flush","undo":{"kind":"thaw","mountpoint'
    's":["/","/data"]}},{"key":"kernel:load","phase":"load","undo":{"kind":"kexec-unload"}}'
    ',{"key":"checkpoint:checkpoint","phase":"checkpoint","undo":{"kind":"checkpoint"}},{"k'
    'ey":"watchdog:watchdog","phase":"exec","undo":{"kind":"watchdog","watchdog":{"name":"w'
    'atchdog0","devnode":"/dev/watchdog0","identity":"i6300ESB timer","sys_path":"/sys/devi'
    'ces/pci0000:00/0000:00:08.0","subsystem":"pci","device":"0000:00:08.0","driver":"i6300'
    'esb","module":"i6300esb","timeout":30}}},{"key":"preserve:preserve","phase":"quiesce",'
    '"undo":{"kind":"preserve","units":["kv.service"]}},{"key":"sessions:sessions","phase":'
    '"quiesce"}]}\n'
    '{"event":"step","key":"sessions:sessions","undo":{"kind":"start-units","units":["ssh.s'
    'ocket","ssh.service"]}}\n'
    '{"event":"step","key":"hook:10-db","pgid":1234,"leader_started":1700000000.25}\n'
    '{"event":"step","key":"hook:10-db","status":"done","usec":12345}\n'
    '{"event":"step","key":"storage:storage","warning":"syncfs /data: EIO"}\n'
    '{"event":"step","key":"storage:storage","status":"failed","error":"boom","partial":tru'
    "e}\n"
    '{"event":"phase","phase":"quiesce","usec":100}\n'
    '{"event":"phase","phase":"quiesce","usec":23}\n'
    '{"event":"set","sessions_ended":[{"id":"3","user":"u","uid":1000,"service":"sshd","rem'
    'ote_host":"h","leader":5,"caller":true,"gone":true},{"id":"4","user":"v","uid":0,"serv'
    'ice":"sshd","remote_host":"","leader":0,"caller":false,"gone":false,"error":"no"}]}\n'
    '{"event":"set","units_stopped":["ssh.socket"]}\n'
    '{"event":"set","preserved":[{"unit":"kv.service","dump_usec":5,"image_bytes":6,"outcom'
    'e":"dumped"},{"unit":"w@1.service","dump_usec":1,"image_bytes":2,"outcome":"restored",'
    '"restore_usec":3}]}\n'
    '{"event":"set","state":"running","mode":"systemd","execute_requested":1700000001.5}\n'
    '{"event":"set","rollback_of":"T0"}\n'
    '{"event":"set","verification":{"started":1.0,"running_release":"7.3.4","boot_id":"b2",'
    '"target_release":"7.3.4","finished":2.5,"problems":[{"check":"device","message":"m","s'
    'ys_path":"/sys/a"},{"check":"hook","message":"h","step":"hook:x"}],"warnings":["w1"],"'
    'watchdog":"taken over","downtime":{"exec_stamp":1.0,"exec_stamp_source":"exec-stamp","'
    'kernel_started":1.5,"verified":2.0,"uptime_at_verified":0.5,"downtime_s":1.0,"exec_to_'
    'kernel_s":0.5,"kernel_to_verified_s":0.5},"policy":"rollback","rollback":{"requested":'
    '2.0,"transition":"T3","mode":"direct","state":"completed"}}}\n'
    '{"event":"set","error":{"kind":"HookFailed","dbus_name":"x.HookFailed","message":"m"},'
    '"undone":["hook:10-db"],"undo_failures":["storage:storage: EIO"]}\n'
).encode()


def test_a_journal_written_before_issue_19_reads_and_is_written_the_same(tmp_path: Path) -> None:
    path = tmp_path / "transitions" / "T1" / JOURNAL_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(JOURNAL_BEFORE_19)
    first, *events = JOURNAL_BEFORE_19.splitlines()
    # Line by line: read, then encoded again, the same bytes.
    assert schema.dump_json(schema.load_json(TransitionRecord, first)) == first
    event: Any = JournalEvent  # an annotation, not a class
    for line in events:
        assert schema.dump_json(schema.load(event, json.loads(line))) == line
    # Folded.
    record = read(path)
    assert (record.state, record.mode, record.rollback_of) == (
        TransitionState.RUNNING,
        ExecMode.SYSTEMD,
        "T0",
    )
    assert record.target is not None and record.target.initrd_path is None
    assert record.target.added == ("panic=10", "liveupd.transition=T1")
    assert [s.key for s in record.steps][:2] == ["hook:10-db", "devices:devices"]
    hook = record.steps[0]
    assert (hook.status, hook.usec, hook.pgid, hook.phase) == (
        StepStatus.DONE,
        12345,
        1234,
        Phase.QUIESCE,
    )
    storage = record.steps[2]
    assert (storage.status, storage.partial, storage.warnings) == (
        StepStatus.FAILED,
        True,
        ["syncfs /data: EIO"],
    )
    assert isinstance(record.steps[5].undo, WatchdogUndo)
    assert record.steps[7].undo == StartUnitsUndo(units=("ssh.socket", "ssh.service"))
    assert record.phases == {"quiesce": 123}
    assert record.error is not None and record.error.kind == "HookFailed"
    assert record.verification is not None and record.verification.rollback is not None
    assert record.verification.problems[0].sys_path == "/sys/a"
    assert [p.unit for p in record.preserved] == ["kv.service", "w@1.service"]
    assert [s.id for s in record.sessions_ended] == ["3", "4"]
    assert record.units_stopped == ["ssh.socket"]
    # Compacted (as a finished transition's is), it reads back as it was.
    Journal(path, record).flush()
    assert len(path.read_bytes().splitlines()) == 1
    assert read(path) == record


def test_changes_are_validated_before_they_are_written(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "T1", boot_id="b1", old_release="r")
    journal.update(target=UKI.to_json())  # as the kernel step gives it
    assert journal.record.target == UKI
    before = journal.path.read_bytes()
    with pytest.raises(schema.Invalid, match="units_stopped"):
        journal.update(units_stopped=["../x.service"])
    with pytest.raises(schema.Invalid, match="usec: Input should be a valid integer"):
        journal.step_update("kernel:load", usec="5")
    with pytest.raises(schema.Invalid, match="bogus: unknown key"):
        journal.set_state(TransitionState.FAILED, bogus=1)
    assert journal.path.read_bytes() == before
    assert journal.record.units_stopped == [] and journal.state is TransitionState.STAGED
    assert Journal.load(journal.path).record.target == UKI


def test_a_watchdog_with_a_built_in_driver_reads_back(tmp_path: Path) -> None:
    """A driver built into the kernel has no module (None): journal lines leave None
    out, so the record needs a default for it, or the journal reads back as corrupt."""
    built_in = WatchdogRecord(
        name="watchdog0",
        devnode="/dev/watchdog0",
        identity="iTCO_wdt",
        sys_path="/sys/devices/platform/iTCO_wdt",
        subsystem="platform",
        device="iTCO_wdt",
        driver="iTCO_wdt",
        module=None,
        timeout=120,
    )
    journal = Journal.create(tmp_path, "T1", boot_id="b1", old_release="r")
    journal.step_started("watchdog:watchdog", Phase.EXEC, WatchdogUndo(watchdog=built_in))
    assert b'"module"' not in journal.path.read_bytes()
    assert Journal.load(journal.path).record.steps[0].undo == WatchdogUndo(watchdog=built_in)
