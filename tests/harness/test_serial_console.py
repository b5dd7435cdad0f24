"""The VM harness's serial console, on a socket pair: boot markers and emulator defects."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.vm.serial import SerialConsole

BOOT = "LIVEUPD-BOOT-MARKER release={} boot_id={} uptime=1.50\n"
OLD_ID = "11111111-1111-1111-1111-111111111111"
NEW_ID = "22222222-2222-2222-2222-222222222222"


def console_reading(tmp_path: Path, text: str) -> SerialConsole:
    """A console that has read all of `text` (the writer closed: the reader ended)."""
    ours, theirs = socket.socketpair()
    console = SerialConsole(theirs, tmp_path / "serial.log")
    ours.sendall(text.encode())
    ours.close()
    with pytest.raises(Exception, match="closed"):
        console.wait_for_marker(time.monotonic() + 30, lambda m: False)
    return console


def test_markers_in_order_and_the_log_kept(tmp_path: Path) -> None:
    text = "noise\n" + BOOT.format("6.12", OLD_ID) + "more\n" + BOOT.format("7.3", NEW_ID)
    console = console_reading(tmp_path, text)
    assert [(m.release, m.boot_id) for m in console.markers] == [("6.12", OLD_ID), ("7.3", NEW_ID)]
    assert console.defects == []
    assert (tmp_path / "serial.log").read_text() == text


def test_an_int3_oops_is_placed_between_the_boots_it_came_between(tmp_path: Path) -> None:
    oops = "[    1.75] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"
    text = BOOT.format("6.12", OLD_ID) + oops + "\n" + BOOT.format("6.12", NEW_ID)
    console = console_reading(tmp_path, text)
    [defect] = console.defects
    assert defect.line.startswith("Oops: int3")
    # After the old boot's marker (index 0), before the new one (index 1).
    assert defect.after_markers == 1


def test_other_oopses_are_recorded_but_are_not_the_int3_defect(tmp_path: Path) -> None:
    text = (
        BOOT.format("6.12", OLD_ID)
        + "[   44.1] Oops: general protection fault, probably for non-canonical address\n"
        + "Oops: int31\n"
        + "[    3.2] BUG: unable to handle page fault for address: ffff\n"
        + "[    3.3] systemd[1]: Started BUG: a service's words, not the kernel's\n"
        + BOOT.format("6.12", NEW_ID)
    )
    console = console_reading(tmp_path, text)
    assert console.defects == []
    assert [(o.line.split(",")[0], o.after_markers) for o in console.oopses] == [
        ("Oops: general protection fault", 1),
        ("Oops: int31", 1),
        ("BUG: unable to handle page fault for address: ffff", 1),
    ]


def test_the_int3_oops_is_an_oops_too(tmp_path: Path) -> None:
    text = BOOT.format("6.12", OLD_ID) + "[    1.75] Oops: int3: 0000 [#1] SMP\n"
    console = console_reading(tmp_path, text)
    assert console.oopses == console.defects
    assert len(console.defects) == 1
