"""Which guest kernel oopses a failed VM test is blamed on (tests/vm/conftest.py).

A failed test whose guests oopsed notes its module for rerun_defects.py: the oopses
of the guests still running, and of those stopped since the test began (a module's
guest stopped at its last test's teardown, a guest whose boot failed in setup).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm import guest_vm
from tests.vm.guest_vm import GuestVM
from tests.vm.serial import SerialConsole

OOPS = "[   44.10] Oops: general protection fault, probably for non-canonical address"


class _StoppedQemu:
    def stop(self) -> None:
        pass


def _guest(tmp_path: Path, console_text: str) -> GuestVM:
    """A GuestVM with only what stop() and kernel_oopses() touch: a console that read
    `console_text` (the writer closed), QEMU already gone."""
    ours, theirs = socket.socketpair()
    console = SerialConsole(theirs, tmp_path / f"serial-{time.monotonic_ns()}.log")
    ours.sendall(console_text.encode())
    ours.close()
    with pytest.raises(Exception, match="closed"):
        console.wait_for_marker(time.monotonic() + 30, lambda m: False)
    vm = object.__new__(GuestVM)
    vm.qemu = _StoppedQemu()  # type: ignore[assignment]
    vm.agent = None
    vm.console = console
    vm.keep_run_dir = True
    vm._run_locked = False
    guest_vm._LIVE.add(vm)
    return vm


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    guest_vm._LIVE.clear()
    guest_vm.forget_stopped_oopses()
    yield
    guest_vm._LIVE.clear()
    guest_vm.forget_stopped_oopses()


def test_a_running_guests_oops_is_seen_and_a_clean_guest_adds_nothing(tmp_path: Path) -> None:
    clean = _guest(tmp_path, "booted fine\n")
    assert guest_vm.kernel_oopses() == []
    oopsed = _guest(tmp_path, f"{OOPS}\n")
    assert guest_vm.kernel_oopses() == [OOPS.split("] ", 1)[1]]
    assert len({clean, oopsed}) == 2  # both were running (the registry holds them weakly)


def test_a_stopped_guests_oops_is_kept_until_the_next_test_begins(tmp_path: Path) -> None:
    vm = _guest(tmp_path, f"{OOPS}\n")
    vm.stop()
    vm.stop()  # twice: counted once
    assert guest_vm.kernel_oopses() == [OOPS.split("] ", 1)[1]]
    guest_vm.forget_stopped_oopses()  # what the next test's setup does
    assert guest_vm.kernel_oopses() == []
