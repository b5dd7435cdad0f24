"""The watchdog across the jump: planning (pure), the command line, and the real device
against a sysfs tree in a temporary directory (ioctl and modprobe replaced)."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from liveupd.backends.base import Watchdog, WatchdogBusy
from liveupd.config import Config
from liveupd.devices import watchdog
from liveupd.devices.watchdog_dev import (
    WDIOC_KEEPALIVE,
    WDIOC_SETTIMEOUT,
    RealWatchdog,
    parse_manager_watchdog,
)
from liveupd.errors import Failed
from liveupd.kernel.cmdline import Additions, build_cmdline

PCI = "/sys/devices/pci0000:00"
ESB = f"{PCI}/0000:00:08.0"


def wd(name: str = "watchdog0", *, driver: str | None = "i6300ESB timer", **kw: Any) -> Watchdog:
    fields: dict[str, Any] = {
        "name": name,
        "devnode": f"/dev/{name}",
        "identity": "i6300ESB timer",
        "sys_path": ESB,
        "subsystem": "pci",
        "device": "0000:00:08.0",
        "driver": driver,
        "module": "i6300esb",
        "active": False,
        "nowayout": False,
        "bootstatus": 0,
    }
    fields.update(kw)
    return Watchdog(**fields)


def with_exec(write_config: Callable[[str], Config], body: str) -> Config:
    return write_config(f"[exec]\n{body}\n")


# ------------------------------------------------------------------ planning --


def test_no_watchdog_is_said_without_a_record(config: Config) -> None:
    plan = watchdog.plan([], config)
    assert plan.record is None
    assert plan.note == "no hardware watchdog: a hang after the jump needs a power cycle"


def test_the_lowest_numbered_watchdog_is_armed_for_watchdog_sec(
    write_config: Callable[[str], Config],
) -> None:
    config = with_exec(write_config, "watchdog-sec = 45")
    plan = watchdog.plan([wd("watchdog1", sys_path="/sys/x"), wd("watchdog0")], config)
    assert plan.record is not None
    assert (plan.record.name, plan.record.timeout, plan.record.module) == (
        "watchdog0",
        45,
        "i6300esb",
    )
    assert (
        plan.note == "watchdog0 (i6300ESB timer, module i6300esb): armed for 45 s before the jump"
    )


def test_watchdog_sec_0_turns_it_off(write_config: Callable[[str], Config]) -> None:
    plan = watchdog.plan([wd()], with_exec(write_config, "watchdog-sec = 0"))
    assert plan.record is None and plan.note.startswith("off ([exec] watchdog-sec = 0)")


def test_a_named_device_that_is_missing_is_said(write_config: Callable[[str], Config]) -> None:
    config = with_exec(write_config, 'watchdog-device = "/dev/watchdog3"')
    plan = watchdog.plan([wd()], config)
    assert plan.record is None
    assert plan.note.startswith("/dev/watchdog3 ([exec] watchdog-device) does not exist")


def test_a_watchdog_without_a_driver_cannot_be_armed(config: Config) -> None:
    plan = watchdog.plan([wd(driver=None)], config)
    assert plan.record is None and "has no driver bound" in plan.note


def test_a_bad_watchdog_device_is_refused_naming_the_key(
    write_config: Callable[[str], Config],
) -> None:
    with pytest.raises(Exception, match="watchdog-device"):
        with_exec(write_config, 'watchdog-device = "/etc/passwd"')


def test_the_driver_module_is_kept_from_loading_early(config: Config) -> None:
    record = watchdog.plan([wd()], config).record
    assert watchdog.cmdline_words(record) == ["modprobe.blacklist=i6300esb"]
    assert watchdog.cmdline_words(None) == []
    builtin = watchdog.plan([wd(module=None)], config).record
    assert watchdog.cmdline_words(builtin) == ["watchdog.open_timeout=120"]
    assert watchdog.blacklisted(["quiet", "modprobe.blacklist=foo,i6300esb"], "i6300esb")
    assert not watchdog.blacklisted(["modprobe.blacklist=i6300esbx"], "i6300esb")


def test_handover_to_systemd_only_when_pid1_watches_that_device(config: Config) -> None:
    record = watchdog.plan([wd()], config).record
    assert record is not None
    stop = watchdog.handover(record, 0, "")
    assert not stop.keep_running and "magic character" in stop.note
    keep = watchdog.handover(record, 300, "/dev/watchdog0")
    assert keep.keep_running and keep.timeout == 301  # outlives PID 1's first open
    other = watchdog.handover(record, 300, "/dev/watchdog1")
    assert not other.keep_running
    # An empty WatchdogDevice= is systemd's default: /dev/watchdog0, not any device.
    assert watchdog.handover(record, 300, "").keep_running
    assert watchdog.handover(record, 300, "/dev/watchdog").keep_running
    second = replace(record, name="watchdog1", devnode="/dev/watchdog1")
    assert not watchdog.handover(second, 300, "").keep_running
    assert not watchdog.handover(second, 300, "/dev/watchdog").keep_running
    assert watchdog.handover(second, 300, "/dev/watchdog1").keep_running


def test_the_fell_back_reason_names_a_watchdog_reset() -> None:
    assert "watchdog (watchdog0) reset the machine" in watchdog.fell_back_reason(
        [("watchdog0", watchdog.WDIOF_CARDRESET)]
    )
    assert watchdog.fell_back_reason([("watchdog0", 0)]).startswith(
        "came back on the old kernel (no watchdog reset recorded"
    )


# -------------------------------------------------------------- command line --


def build(base: str, additions: Additions) -> str:
    return build_cmdline(base, "", "T1", 2048, source="test", additions=additions)


def test_panic_is_added_unless_the_line_sets_it() -> None:
    ours = Additions(defaults=("panic=10",), extra=("modprobe.blacklist=i6300esb",))
    assert build("root=/dev/vda ro", ours) == (
        "root=/dev/vda ro panic=10 modprobe.blacklist=i6300esb liveupd.transition=T1"
    )
    assert build("root=/dev/vda panic=-1", ours) == (
        "root=/dev/vda panic=-1 modprobe.blacklist=i6300esb liveupd.transition=T1"
    )
    again = "root=/dev/vda modprobe.blacklist=i6300esb"
    assert build(again, ours).split().count("modprobe.blacklist=i6300esb") == 1


# ------------------------------------------------------------- the real device --


class Kernel:
    """What the kernel would do: ioctls recorded, modprobe registers the watchdog."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[str, Any]] = []

    def ioctl(self, fd: int, request: int, arg: bytes) -> bytes:
        name = {WDIOC_SETTIMEOUT: "settimeout", WDIOC_KEEPALIVE: "keepalive"}[request]
        self.calls.append((name, struct.unpack("i", arg)[0]))
        return arg

    def run(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(("run", tuple(argv)))
        if argv[:1] == ["modprobe"]:
            register(self.root)
        return subprocess.CompletedProcess(argv, 0, "", "")


def register(root: Path, *, parent: bool = True) -> None:
    """The driver bound and its watchdog registered (class entry, device node);
    ``parent=False``: without the class entry's ``device`` link, as i6300esb does."""
    dev = root / ESB.lstrip("/")
    drv = root / "sys/bus/pci/drivers/i6300ESB timer"
    mod = root / "sys/module/i6300esb"
    for d in (dev, drv, mod):
        d.mkdir(parents=True, exist_ok=True)
    (drv / "unbind").write_text("")
    (drv / "bind").write_text("")
    for link, target in [(dev / "driver", drv), (drv / "module", mod)]:
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(target, link.parent))
    bus = root / "sys/bus/pci"
    if not (dev / "subsystem").is_symlink():
        (dev / "subsystem").symlink_to(os.path.relpath(bus, dev))
    (drv / dev.name).unlink(missing_ok=True)
    (drv / dev.name).symlink_to(os.path.relpath(dev, drv))
    entry = root / "sys/class/watchdog/watchdog0"
    entry.mkdir(parents=True, exist_ok=True)
    if parent and not (entry / "device").is_symlink():
        (entry / "device").symlink_to(os.path.relpath(dev, entry))
    for attr, value in [("identity", "i6300ESB timer"), ("state", "inactive"),
                        ("nowayout", "0"), ("bootstatus", "32"), ("timeout", "30")]:  # fmt: skip
        (entry / attr).write_text(value + "\n")
    (root / "dev").mkdir(exist_ok=True)
    (root / "dev/watchdog0").write_bytes(b"")


@pytest.fixture
def machine(tmp_path: Path) -> tuple[RealWatchdog, Kernel]:
    kernel = Kernel(tmp_path)
    return RealWatchdog(tmp_path, ioctl=kernel.ioctl, run=kernel.run), kernel


@pytest.mark.parametrize("parent", [True, False], ids=["device-link", "by-driver-name"])
def test_the_real_watchdog_is_read_from_sysfs(
    machine: tuple[RealWatchdog, Kernel], tmp_path: Path, parent: bool
) -> None:
    real, _ = machine
    assert real.watchdogs() == []
    register(tmp_path, parent=parent)
    [w] = real.watchdogs()
    assert (w.devnode, w.subsystem, w.device, w.driver, w.module, w.bootstatus) == (
        "/dev/watchdog0",
        "pci",
        "0000:00:08.0",
        "i6300ESB timer",
        "i6300esb",
        32,
    )


def test_arming_sets_the_timeout_then_nowayout_then_unbinds_last(
    machine: tuple[RealWatchdog, Kernel], tmp_path: Path, config: Config
) -> None:
    real, kernel = machine
    register(tmp_path)
    record = watchdog.plan(real.watchdogs(), config).record
    assert record is not None
    assert real.arm(record) == record.timeout
    assert kernel.calls == [("settimeout", record.timeout), ("keepalive", 0)]
    entry = tmp_path / "sys/class/watchdog/watchdog0"
    assert (entry / "nowayout").read_text() == "1"
    drv = tmp_path / "sys/bus/pci/drivers/i6300ESB timer"
    assert (drv / "unbind").read_text() == "0000:00:08.0"
    # The descriptor stays open across the jump: nothing was written to the device.
    assert (tmp_path / "dev/watchdog0").read_bytes() == b""


def test_the_new_kernel_loads_the_driver_feeds_and_closes_with_the_magic_character(
    machine: tuple[RealWatchdog, Kernel], tmp_path: Path, config: Config
) -> None:
    real, kernel = machine
    register(tmp_path)
    record = watchdog.plan(real.watchdogs(), config).record
    assert record is not None
    # The new kernel: the driver is not loaded (the command line kept udev from it).
    shutil.rmtree(tmp_path / "sys/class/watchdog")
    assert real.take_over(record, 60) == 60
    assert kernel.calls[0] == ("run", ("modprobe", "--", "i6300esb"))
    real.feed()
    assert kernel.calls[1:] == [("settimeout", 60), ("keepalive", 0), ("keepalive", 0)]
    real.release(keep_running=False)
    assert (tmp_path / "dev/watchdog0").read_bytes() == b"V"
    with pytest.raises(OSError, match="no watchdog is held"):
        real.feed()


def test_keep_running_closes_without_the_magic_character(
    machine: tuple[RealWatchdog, Kernel], tmp_path: Path, config: Config
) -> None:
    real, kernel = machine
    register(tmp_path)
    record = watchdog.plan(real.watchdogs(), config).record
    assert record is not None
    real.take_over(record, 60)
    real.release(keep_running=True, timeout=301)
    assert (tmp_path / "dev/watchdog0").read_bytes() == b""
    assert kernel.calls[-2:] == [("settimeout", 301), ("keepalive", 0)]
    assert not [c for c in kernel.calls if c[0] == "run"]  # it was registered


def test_busctl_output_is_parsed() -> None:
    assert parse_manager_watchdog('t 30000000\ns "/dev/watchdog0"\n') == (30.0, "/dev/watchdog0")
    assert parse_manager_watchdog('t 0\ns ""\n') == (0.0, "")
    assert parse_manager_watchdog("garbage") == (0.0, "")


def test_without_a_device_link_two_devices_on_the_driver_are_ambiguous(
    machine: tuple[RealWatchdog, Kernel], tmp_path: Path
) -> None:
    real, _ = machine
    register(tmp_path, parent=False)
    other = tmp_path / "sys/devices/pci0000:00/0000:00:09.0"
    other.mkdir(parents=True)
    drv = tmp_path / "sys/bus/pci/drivers/i6300ESB timer"
    (drv / other.name).symlink_to(os.path.relpath(other, drv))
    assert real.watchdogs() == []


def test_the_target_kernels_module_index_is_read_and_searched(
    machine: tuple[RealWatchdog, Kernel], tmp_path: Path
) -> None:
    real, _ = machine
    modules = tmp_path / "usr/lib/modules/7.3.4-cloud-amd64"
    with pytest.raises(OSError, match=r"modules\.dep"):
        real.module_index("7.3.4-cloud-amd64")
    modules.mkdir(parents=True)
    (modules / "modules.dep").write_text(
        "kernel/drivers/net/virtio_net.ko.xz: kernel/net/core/failover.ko.xz\n"
    )
    dep, builtin = real.module_index("7.3.4-cloud-amd64")
    assert builtin == ""
    assert not watchdog.module_listed("i6300esb", dep, builtin)
    (modules / "modules.builtin").write_text("kernel/drivers/watchdog/i6300esb.ko\n")
    assert watchdog.module_listed("i6300esb", *real.module_index("7.3.4-cloud-amd64"))
    assert watchdog.module_listed("virtio-net", dep)
    with pytest.raises(OSError, match="not a kernel release"):
        real.module_index("../../etc")


def test_disarm_leaves_alone_a_running_watchdog_another_process_holds(
    machine: tuple[RealWatchdog, Kernel], tmp_path: Path, config: Config
) -> None:
    """Busy at arm (systemd's RuntimeWatchdogSec=, here with nowayout): not ours to stop,
    and never unbound from its driver."""
    real, _ = machine
    register(tmp_path)
    entry = tmp_path / "sys/class/watchdog/watchdog0"
    (entry / "state").write_text("active\n")
    (entry / "nowayout").write_text("1\n")
    record = watchdog.plan(real.watchdogs(), config).record
    assert record is not None

    def busy(devnode: str) -> int:
        raise WatchdogBusy(errno.EBUSY, f"{devnode} is held open by another process")

    real._open = busy  # type: ignore[method-assign]
    with pytest.raises(WatchdogBusy):
        real.arm(record)
    real.disarm(record)
    drv = tmp_path / "sys/bus/pci/drivers/i6300ESB timer"
    assert (drv / "unbind").read_text() == "" and (drv / "bind").read_text() == ""


def test_a_modprobe_that_hangs_is_an_error_naming_it(tmp_path: Path, config: Config) -> None:
    """TimeoutExpired would escape verification's handlers (a traceback): an OSError."""
    register(tmp_path)
    real = RealWatchdog(tmp_path)
    record = watchdog.plan(real.watchdogs(), config).record
    assert record is not None
    shutil.rmtree(tmp_path / "sys/class/watchdog")  # the new kernel: not loaded yet

    def hangs(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        assert argv == ["modprobe", "--", "i6300esb"]
        raise subprocess.TimeoutExpired(argv, kw["timeout"])

    real = RealWatchdog(tmp_path, ioctl=Kernel(tmp_path).ioctl, run=hangs)
    with pytest.raises(OSError, match="modprobe i6300esb did not finish within 60 s") as e:
        real.take_over(record, 60)
    assert e.value.errno == errno.ETIMEDOUT


def test_a_host_test_never_arms_or_takes_over_this_machines_watchdog(config: Config) -> None:
    assert os.environ.get("LIVEUPD_HOST_TEST")  # tests/conftest.py sets it for every test
    record = watchdog.plan([wd()], config).record
    assert record is not None

    def refuse(*args: Any, **kw: Any) -> Any:
        raise AssertionError(f"reached the machine: {args}")

    real = RealWatchdog(ioctl=refuse, run=refuse)  # the real root, /
    with pytest.raises(Failed, match="refusing to arm /dev/watchdog0: LIVEUPD_HOST_TEST"):
        real.arm(record)
    with pytest.raises(Failed, match="refusing to take over /dev/watchdog0: LIVEUPD_HOST"):
        real.take_over(record, 60)


@pytest.mark.parametrize(("timeleft", "armed"), [("120", True), ("119", True), ("30", False)])
def test_a_hardware_timer_shorter_than_watchdog_sec_is_not_armed(
    machine: tuple[RealWatchdog, Kernel], tmp_path: Path, config: Config, timeleft: str, armed: bool
) -> None:
    """max_hw_heartbeat_ms drivers: the core pings the hardware in between, which ends
    at the unbind; timeleft shows the hardware's own period."""
    real, _ = machine
    register(tmp_path)
    entry = tmp_path / "sys/class/watchdog/watchdog0"
    (entry / "timeleft").write_text(timeleft + "\n")
    record = watchdog.plan(real.watchdogs(), config).record
    assert record is not None and record.timeout == 120
    drv = tmp_path / "sys/bus/pci/drivers/i6300ESB timer"
    if armed:
        real.arm(record)
        assert (drv / "unbind").read_text() == "0000:00:08.0"
        return
    with pytest.raises(OSError, match=r"runs for only 30 s .* watchdog-sec to at most 30"):
        real.arm(record)
    assert (entry / "nowayout").read_text() == "0\n"  # never set: the magic close stops it
    assert (drv / "unbind").read_text() == ""
    assert (tmp_path / "dev/watchdog0").read_bytes() == b"V"
