"""RealWatchdog: the WatchdogBackend of a real machine (/dev/watchdogN, sysfs, modprobe).

Everything is read and written below ``root`` (``/`` on a machine; a tmp tree
in tests, with ``ioctl`` and ``run`` replaced), through :class:`Sysfs`.

The recipe that keeps a timer running across a kexec, measured on QEMU's
i6300esb with Debian's 6.12 and 7.3 kernels (docs/watchdog.md):

* arm: open the device, WDIOC_SETTIMEOUT, ping, write 1 to its ``nowayout``
  attribute, then unbind the device from its driver.  The unbind removes the
  watchdog core's reboot notifier (which would stop the timer at the kexec)
  and, with nowayout set, cannot stop the timer itself.  After the unbind the
  descriptor can no longer ping: it must be the last thing before the jump;
* disarm (the jump did not happen): a registered watchdog that is not ours
  (another process holds it: EBUSY) or does not run is left alone; one
  still bound without nowayout is closed with the magic character; otherwise
  the device is unbound and bound again: the fresh probe stops the timer
  (i6300esb) or the core's
  handling of a running watchdog takes it, and a watchdog still active after
  that is opened and closed with the magic character.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liveupd import logs, safeopen
from liveupd.backends.base import Watchdog, WatchdogBusy, WatchdogRecord
from liveupd.devices.sysfs import Sysfs
from liveupd.errors import Failed

LOG = logs.get("watchdog")

WDIOC_KEEPALIVE = 0x80045705
WDIOC_SETTIMEOUT = 0xC0045706
CLASS = "/sys/class/watchdog"
SOFTWARE = frozenset({"Software Watchdog"})  # softdog: it dies with the kernel
MAGIC = b"V"
APPEAR_TIMEOUT = 10.0  # seconds for the device to register after modprobe
MODPROBE_TIMEOUT = 60  # seconds
TIMELEFT_SLACK = 1  # seconds: timeleft, read just after a ping, may be rounded down
POLL = 0.05
BUSCTL = (
    "busctl",
    "get-property",
    "org.freedesktop.systemd1",
    "/org/freedesktop/systemd1",
    "org.freedesktop.systemd1.Manager",
    "RuntimeWatchdogUSec",
    "WatchdogDevice",
)
UINT64_MAX = (1 << 64) - 1
HOST_TEST_ENV = "LIVEUPD_HOST_TEST"  # set in every host test process (tests/conftest.py)

Ioctl = Callable[[int, int, bytes], bytes]
Run = Callable[..., "subprocess.CompletedProcess[str]"]


def _ioctl(fd: int, request: int, arg: bytes) -> bytes:
    result: bytes = fcntl.ioctl(fd, request, arg)
    return result


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)


class RealWatchdog:
    def __init__(self, root: Path = Path("/"), *, ioctl: Ioctl = _ioctl, run: Run = _run) -> None:
        self.root = root
        self.sysfs = Sysfs(root)
        self._ioctl = ioctl
        self._run = run
        self._armed: dict[str, int] = {}  # devnode -> descriptor kept open across the jump
        self._held: int | None = None  # take_over's descriptor

    # ---------------------------------------------------------------- facts --

    def watchdogs(self) -> list[Watchdog]:
        out = []
        for name in self.sysfs.listdir(CLASS):
            w = self._watchdog(name)
            if w is not None:
                out.append(w)
        return out

    def _by_driver(self, identity: str) -> str | None:
        """The one device bound to a driver named like the watchdog's identity.

        Some drivers register their watchdog without a parent device (i6300esb
        does, in 6.12: /sys/class/watchdog/watchdogN has no ``device`` link),
        but name the watchdog like their driver ("i6300ESB timer").  More than
        one device bound to it: which one is the watchdog cannot be told.
        """
        if not identity or "/" in identity or identity in (".", ".."):
            return None
        found = []
        for bus in self.sysfs.listdir("/sys/bus"):
            driver_dir = f"/sys/bus/{bus}/drivers/{identity}"
            for entry in self.sysfs.listdir(driver_dir):
                target = self.sysfs.resolve(f"{driver_dir}/{entry}") or ""
                # A bound device's link is named after it; "module" points elsewhere.
                if target.startswith("/sys/devices/") and target.rsplit("/", 1)[-1] == entry:
                    found.append(target)
        return found[0] if len(found) == 1 else None

    def _watchdog(self, name: str) -> Watchdog | None:
        entry = f"{CLASS}/{name}"
        identity = self.sysfs.read(entry, "identity") or ""
        device = self.sysfs.resolve(f"{entry}/device") or self._by_driver(identity)
        if device is None or identity in SOFTWARE:
            return None  # no hardware behind it (softdog): it cannot outlive the kernel
        subsystem = self.sysfs.resolve(f"{device}/subsystem")
        driver = self.sysfs.driver(device)
        module = self.sysfs.resolve(f"{device}/driver/module") if driver else None

        def number(attr: str) -> int | None:
            try:
                return int(self.sysfs.read(entry, attr) or "", 0)
            except ValueError:
                return None

        return Watchdog(
            name=name,
            devnode=f"/dev/{name}",
            identity=identity,
            sys_path=device,
            subsystem=subsystem.rsplit("/", 1)[-1] if subsystem else "",
            device=device.rsplit("/", 1)[-1],
            driver=driver,
            module=module.rsplit("/", 1)[-1] if module else None,
            active=self.sysfs.read(entry, "state") == "active",
            nowayout=self.sysfs.read(entry, "nowayout") == "1",
            bootstatus=number("bootstatus") or 0,
            timeout=number("timeout"),
        )

    def _of_device(self, sys_path: str) -> Watchdog | None:
        return next((w for w in self.watchdogs() if w.sys_path == sys_path), None)

    # ------------------------------------------------------------ old kernel --

    def _open(self, devnode: str) -> int:
        try:
            return os.open(self.root / devnode.lstrip("/"), os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise WatchdogBusy(
                    errno.EBUSY,
                    f"{devnode} is held open by another process (systemd's "
                    "RuntimeWatchdogSec=, or a watchdog daemon)",
                ) from None
            raise

    def _set_timeout(self, fd: int, seconds: int) -> int:
        got = self._ioctl(fd, WDIOC_SETTIMEOUT, struct.pack("i", seconds))
        self._ioctl(fd, WDIOC_KEEPALIVE, struct.pack("i", 0))
        actual: int = struct.unpack("i", got[:4])[0]
        return actual

    def _magic_close(self, fd: int) -> None:
        try:
            os.write(fd, MAGIC)
        finally:
            os.close(fd)

    def _guard(self, what: str, record: WatchdogRecord) -> None:
        """A host test never arms or takes over this machine's watchdog (it would reset
        it): with LIVEUPD_HOST_TEST set, only a fake root (a sysfs tree) is acted on."""
        if os.environ.get(HOST_TEST_ENV) and self.root.resolve() == Path("/"):
            raise Failed(
                f"refusing to {what} {record.devnode}: {HOST_TEST_ENV} is set, so this is a "
                "host test, and this machine's watchdog would reset it"
            )

    def arm(self, record: WatchdogRecord) -> int:
        self._guard("arm", record)
        fd = self._open(record.devnode)
        try:
            actual = self._set_timeout(fd, record.timeout)
            self._check_timeleft(record)
            self.sysfs.write(f"{CLASS}/{record.name}/nowayout", "1")
        except OSError:
            self._magic_close(fd)  # stops it unless nowayout got set (disarm sees to that)
            raise
        self._armed[record.devnode] = fd
        # The last step: from here on nothing can ping it, and nothing stops it.
        self.sysfs.write(
            f"/sys/bus/{record.subsystem}/drivers/{record.driver}/unbind", record.device
        )
        LOG.warning("%s armed for %d s and unbound from %s", record.devnode, actual, record.driver)
        return actual

    def _check_timeleft(self, record: WatchdogRecord) -> None:
        """The hardware must count the whole timeout by itself: once unbound nothing pings
        it.  A driver with max_hw_heartbeat_ms (sbsa_gwdt, dw_wdt, ...) accepts a longer
        timeout and has the core ping the hardware in between, which ends at the unbind;
        its ``timeleft`` (where the driver reports it), just after a ping, shows that."""
        try:
            left = int(self.sysfs.read(f"{CLASS}/{record.name}", "timeleft") or "")
        except ValueError:
            return  # not reported by this driver
        if left < record.timeout - TIMELEFT_SLACK:
            raise OSError(
                errno.EINVAL,
                f"its hardware timer runs for only {left} s (sysfs timeleft right after a "
                f"ping), not the {record.timeout} s asked for: the driver tops it up from the "
                "kernel, which stops across the jump, so the machine would reset after "
                f"{left} s. Set [exec] watchdog-sec to at most {left}",
            )

    def disarm(self, record: WatchdogRecord) -> None:
        fd = self._armed.pop(record.devnode, None)
        current = self._of_device(record.sys_path)
        if current is not None and fd is None:
            # Registered, and not held by us: nothing to stop unless it runs, and a
            # device another process holds (systemd's RuntimeWatchdogSec=) is theirs.
            if not current.active:
                return
            try:
                fd = self._open(current.devnode)
            except WatchdogBusy:
                LOG.info("%s is held by another process: left alone", current.devnode)
                return
        if current is not None and not current.nowayout:
            assert fd is not None
            self._magic_close(fd)
            return
        # nowayout is set, or the device is unbound: a fresh probe stops the timer.
        driver_dir = f"/sys/bus/{record.subsystem}/drivers/{record.driver}"
        if self.sysfs.driver(record.sys_path) is not None:
            self.sysfs.write(f"{driver_dir}/unbind", record.device)
        self.sysfs.write(f"{driver_dir}/bind", record.device)
        if fd is not None:
            os.close(fd)
        again = self._wait_for(record.sys_path, APPEAR_TIMEOUT)
        if again is not None and again.active:
            self._magic_close(self._open(again.devnode))
        LOG.info("%s disarmed (%s bound again)", record.devnode, record.driver)

    # ------------------------------------------------------------ new kernel --

    def _wait_for(self, sys_path: str, timeout: float) -> Watchdog | None:
        deadline = time.monotonic() + timeout
        while True:
            found = self._of_device(sys_path)
            if found is not None and self.root.joinpath(found.devnode.lstrip("/")).exists():
                return found
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL)

    def load(self, record: WatchdogRecord) -> Watchdog:
        found = self._of_device(record.sys_path)
        if found is None:
            if record.module is None:
                raise OSError(
                    errno.ENODEV,
                    f"no watchdog is registered for {record.sys_path}, and its driver "
                    f"{record.driver} is built in",
                )
            try:
                result = self._run(["modprobe", "--", record.module], timeout=MODPROBE_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise OSError(
                    errno.ETIMEDOUT,
                    f"modprobe {record.module} did not finish within {MODPROBE_TIMEOUT} s",
                ) from None
            if result.returncode != 0:
                raise OSError(
                    errno.EIO,
                    f"modprobe {record.module} failed (exit {result.returncode}): "
                    f"{(result.stderr or result.stdout).strip()[:300]}",
                )
            found = self._wait_for(record.sys_path, APPEAR_TIMEOUT)
            if found is None:
                raise OSError(
                    errno.ENODEV,
                    f"{record.module} is loaded, but no watchdog appeared for "
                    f"{record.sys_path} within {APPEAR_TIMEOUT:g} s",
                )
        return found

    def take_over(self, record: WatchdogRecord, timeout: int) -> int:
        self._guard("take over", record)
        found = self.load(record)
        fd = self._open(found.devnode)
        try:
            actual = self._set_timeout(fd, timeout)
        except OSError:
            self._magic_close(fd)
            raise
        self._held = fd
        return actual

    def feed(self) -> None:
        if self._held is None:
            raise OSError(errno.EBADF, "no watchdog is held")
        self._ioctl(self._held, WDIOC_KEEPALIVE, struct.pack("i", 0))

    def release(self, *, keep_running: bool, timeout: int = 0) -> None:
        fd, self._held = self._held, None
        if fd is None:
            return
        if not keep_running:
            self._magic_close(fd)
            return
        try:
            if timeout:
                self._set_timeout(fd, timeout)
        finally:
            os.close(fd)  # "watchdog did not stop!": it runs on, for PID 1 to open

    def module_index(self, release: str) -> tuple[str, str]:
        if "/" in release or release in ("", ".", ".."):
            raise OSError(errno.EINVAL, f"{release[:80]!r} is not a kernel release")
        texts: list[str] = []
        errors: list[str] = []
        for name in ("modules.dep", "modules.builtin"):
            path = str(self.root / "usr/lib/modules" / release / name)
            try:
                with safeopen.open_file(path, safeopen.Kind.MODULE_INDEX) as f:
                    texts.append(safeopen.read_text(f))
            except safeopen.UnsafeFile as e:
                if e.refusal is not safeopen.Refusal.MISSING:
                    raise
                texts.append("")
                errors.append(str(e))
        if len(errors) == 2:
            where = f"/usr/lib/modules/{release}/modules.dep"
            raise OSError(errno.ENOENT, f"{where} and modules.builtin are missing ({errors[0]})")
        return texts[0], texts[1]

    def manager_watchdog(self) -> tuple[float, str]:
        try:
            result = self._run(list(BUSCTL), timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return 0.0, ""
        if result.returncode != 0:
            return 0.0, ""
        return parse_manager_watchdog(result.stdout)


def parse_manager_watchdog(text: str) -> tuple[float, str]:
    """busctl's ``t USEC`` and ``s "DEVICE"`` lines -> (seconds, device)."""
    seconds, device = 0.0, ""
    for line in text.splitlines():
        kind, _, value = line.strip().partition(" ")
        if kind == "t":
            try:
                usec = int(value)
            except ValueError:
                continue
            seconds = float("inf") if usec == UINT64_MAX else usec / 1e6
        elif kind == "s":
            device = value.strip().strip('"')
    return seconds, device
