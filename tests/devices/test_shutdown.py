"""The system-shutdown helper: unbinds what the pending checkpoint recorded, writes nothing."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from liveupd.backends.base import Binding, NetInterface, WatchdogRecord
from liveupd.devices import shutdown
from liveupd.devices.machine import SysfsDevices
from liveupd.devices.root import root_devices
from liveupd.transition import late_failures
from tests.devices.fakes import checkpoint_record, write_pending
from tests.devices.tree import MAC, NIC, VIRTIO0, FakeKernel, build

NET = Binding(VIRTIO0, "virtio", "virtio0", "virtio_net", net=(NetInterface("eth0", MAC, True),))
PCI_NIC = Binding(NIC, "pci", "0000:00:03.0", "virtio-pci")


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(build(tmp_path / "root"))


def devices(kernel: FakeKernel, links: list[tuple[str, bool]]) -> SysfsDevices:
    return SysfsDevices(
        kernel,
        uevents=kernel.source,
        root_devices=lambda: root_devices(kernel, (254, 0), "ext4"),
        set_link=lambda ifname, up: links.append((ifname, up)),
    )


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(directory)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


THIS_BOOT = "00000000-0000-4000-8000-000000000001"  # checkpoint_record's old boot


def run(
    state: Path,
    kernel: FakeKernel,
    links: list[tuple[str, bool]],
    *args: str,
    boot: str = THIS_BOOT,
) -> int:
    argv = [*args, "--state-dir", str(state), "--timeout", "5"]
    return shutdown.run(argv, devices=devices(kernel, links), boot_id=boot)


def test_a_transition_left_pending_by_another_boot_is_not_acted_on(
    tmp_path: Path, kernel: FakeKernel
) -> None:
    """A failed verification keeps its record pending; a later kexec is not its jump."""
    state = tmp_path / "state"
    write_pending(state, checkpoint_record(bindings=(NET, PCI_NIC), mode="systemd"))
    links: list[tuple[str, bool]] = []
    other = "00000000-0000-4000-8000-000000000002"
    assert run(state, kernel, links, "kexec", boot=other) == 0
    assert kernel.writes == [] and links == []


def test_unbinds_in_recorded_order_link_down_first_and_writes_nothing(
    tmp_path: Path, kernel: FakeKernel
) -> None:
    state = tmp_path / "state"
    write_pending(state, checkpoint_record(bindings=(NET, PCI_NIC), mode="systemd"))
    before = snapshot(state)
    links: list[tuple[str, bool]] = []

    assert run(state, kernel, links, "kexec") == 0

    assert links == [("eth0", False)]
    assert kernel.writes == [
        ("/sys/bus/virtio/drivers/virtio_net/unbind", "virtio0"),
        ("/sys/bus/pci/drivers/virtio-pci/unbind", "0000:00:03.0"),
    ]
    assert kernel.driver(VIRTIO0) is None and kernel.driver(NIC) is None
    assert snapshot(state) == before  # not a byte written to the state directory


@pytest.mark.parametrize("action", ["reboot", "poweroff", "halt"])
def test_other_actions_do_nothing(tmp_path: Path, kernel: FakeKernel, action: str) -> None:
    state = tmp_path / "state"
    write_pending(state, checkpoint_record(bindings=(NET,), mode="systemd"))
    assert run(state, kernel, [], action) == 0
    assert kernel.writes == []


@pytest.mark.parametrize(
    "record",
    [
        checkpoint_record(bindings=(NET,), mode="direct"),  # the daemon unbound them itself
        checkpoint_record(bindings=(NET,), mode="systemd", dry_run=True),
    ],
)
def test_records_that_are_not_for_it_do_nothing(
    tmp_path: Path, kernel: FakeKernel, record: object
) -> None:
    state = tmp_path / "state"
    write_pending(state, record)  # type: ignore[arg-type]
    assert run(state, kernel, [], "kexec") == 0
    assert kernel.writes == []


def test_nothing_pending_does_nothing(tmp_path: Path, kernel: FakeKernel) -> None:
    assert run(tmp_path / "state", kernel, [], "kexec") == 0
    assert kernel.writes == []


def test_unreadable_checkpoint_is_an_error(tmp_path: Path, kernel: FakeKernel) -> None:
    state = tmp_path / "state"
    tdir = write_pending(state, checkpoint_record(bindings=(NET,), mode="systemd"))
    (tdir / "checkpoint.json").write_text("{not json")
    assert run(state, kernel, [], "kexec") == 2
    assert kernel.writes == []
    # ... left for the new kernel's verification (a warning in its report).
    [message] = late_failures.read(state, tdir.name)
    assert message.startswith("the system-shutdown helper could not read ")


def test_a_failure_is_reported_and_the_others_are_still_unbound(
    tmp_path: Path, kernel: FakeKernel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liveupd")
    state = tmp_path / "state"
    gone = Binding("/sys/devices/pci0000:00/0000:00:09.0", "pci", "0000:00:09.0", "e1000e")
    write_pending(state, checkpoint_record(bindings=(gone, NET), mode="systemd"))
    (kernel.root / "sys/bus/pci/drivers/virtio-pci/unbind").unlink()  # unbind will fail
    bad = Binding(NIC, "pci", "0000:00:03.0", "virtio-pci")
    write_pending(state, checkpoint_record(bindings=(gone, NET, bad), mode="systemd"))

    assert run(state, kernel, [], "kexec") == 1

    assert kernel.driver(VIRTIO0) is None  # unbound despite the failure after it
    events = {r.getMessage(): r.__dict__["fields"] for r in caplog.records}
    assert events["shutdown.skipped"]["sys_path"].endswith("0000:00:09.0")  # not bound
    assert events["shutdown.unbind-failed"]["sys_path"] == NIC
    [tid] = [p.name for p in (state / "transitions").iterdir()]
    [message] = late_failures.read(state, tid)
    assert message.startswith(
        f"the system-shutdown helper's last steps before the jump failed: {NIC} (virtio-pci): "
    )
    assert late_failures.read(state, "another") == []


def test_dry_run_only_says(
    tmp_path: Path, kernel: FakeKernel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liveupd")
    state = tmp_path / "state"
    write_pending(state, checkpoint_record(bindings=(NET,), mode="systemd"))
    assert run(state, kernel, [], "kexec", "--dry-run") == 0
    assert kernel.writes == []
    assert "shutdown.would-unbind" in [r.getMessage() for r in caplog.records]


def test_the_state_directory_can_come_from_the_environment(
    tmp_path: Path, kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    write_pending(state, checkpoint_record(bindings=(NET,), mode="systemd"))
    monkeypatch.setenv("LIVEUPD_STATE_DIR", str(state))
    links: list[tuple[str, bool]] = []
    assert shutdown.run(["--timeout", "5"], devices=devices(kernel, links), boot_id=THIS_BOOT) == 0
    assert kernel.driver(VIRTIO0) is None and links == [("eth0", False)]


def test_the_installed_program_says_what_it_does_on_stderr(tmp_path: Path) -> None:
    """The entry point `make install` writes (`sys.exit(main())`) logs its events.

    systemd-shutdown gives the helper only the console: the events are the admin's
    only account of the last unbind. They once went nowhere, because logging was
    set up only under `python -m`.
    """
    import subprocess
    import sys

    program = "import sys\nfrom liveupd.devices.shutdown import main\nsys.exit(main())\n"
    state = tmp_path / "state"
    state.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", program, "kexec", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "event=shutdown.nothing-pending" in result.stderr


class FakeWatchdog:
    """Only ``arm`` is used by the helper."""

    def __init__(self, error: OSError | None = None) -> None:
        self.armed: list[str] = []
        self.error = error

    def arm(self, record: WatchdogRecord) -> int:
        if self.error is not None:
            raise self.error
        self.armed.append(record.devnode)
        return record.timeout


ESB = WatchdogRecord(
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


def test_the_watchdog_is_armed_after_the_last_unbind(
    tmp_path: Path, kernel: FakeKernel, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    write_pending(state, checkpoint_record(bindings=(NET,), mode="systemd", watchdog=ESB))
    watchdog = FakeWatchdog()
    links: list[tuple[str, bool]] = []
    argv = ["kexec", "--state-dir", str(state), "--timeout", "5"]
    with caplog.at_level(logging.INFO):
        assert shutdown.run(argv, devices(kernel, links), watchdog, THIS_BOOT) == 0  # type: ignore[arg-type]
    assert watchdog.armed == ["/dev/watchdog0"]
    events = [r.getMessage() for r in caplog.records]
    unbound = next(i for i, m in enumerate(events) if "shutdown.unbound" in m)
    armed = next(i for i, m in enumerate(events) if "shutdown.watchdog-armed" in m)
    assert unbound < armed


def test_a_watchdog_that_cannot_be_armed_is_reported(tmp_path: Path, kernel: FakeKernel) -> None:
    state = tmp_path / "state"
    write_pending(state, checkpoint_record(mode="systemd", watchdog=ESB))
    watchdog = FakeWatchdog(OSError(16, "Device or resource busy"))
    argv = ["kexec", "--state-dir", str(state), "--timeout", "5"]
    assert shutdown.run(argv, devices(kernel, []), watchdog, THIS_BOOT) == 1  # type: ignore[arg-type]
    assert watchdog.armed == []
