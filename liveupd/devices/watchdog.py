"""The hardware watchdog across the jump: which one, for how long, and what to say (pure).

What each layer does with an armed watchdog across a kexec (docs/watchdog.md):

* the old kernel's watchdog core stops a running watchdog from its reboot
  notifier (``stop_on_reboot``, set by most drivers), and a kexec runs the
  reboot notifiers.  A device unbound from its driver has no notifier, and
  with ``nowayout`` set the unbind cannot stop it either: so liveupd opens the
  device, sets the timeout, sets ``nowayout`` and unbinds the device from its
  driver, as the last thing before the jump;
* the new kernel's driver, when it probes, may stop a running timer (i6300esb
  does): the new kernel's command line keeps udev from loading it
  (``modprobe.blacklist=<module>``) until ``liveupd --verify`` loads it
  itself, opens the device and feeds it;
* after verification the watchdog is handed to systemd (``RuntimeWatchdogSec=``
  set: it is closed without the magic character and PID 1 opens it) or
  stopped (closed with the magic character).

This module decides; ``watchdog_dev`` (the real device) and the dry-run
machine do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from liveupd.backends.base import Watchdog, WatchdogBackend, WatchdogRecord
from liveupd.config import Config

WDIOF_CARDRESET = 0x0020  # the watchdog reset the machine (WDIOC_GETBOOTSTATUS)
BLACKLIST_PARAM = "modprobe.blacklist"
OPEN_TIMEOUT_PARAM = "watchdog.open_timeout"
NO_WATCHDOG = "no hardware watchdog: a hang after the jump needs a power cycle"


@dataclass(frozen=True)
class Plan:
    """The watchdog a transition arms, or why none is armed (``record`` None)."""

    record: WatchdogRecord | None
    note: str  # what guards the jump, in one line (Watchdog property, liveupctl status)

    @property
    def armed(self) -> bool:
        return self.record is not None


def _describe(w: Watchdog) -> str:
    what = w.identity or w.driver or "unknown driver"
    module = f", module {w.module}" if w.module else ""
    return f"{w.name} ({what}{module})"


def plan(watchdogs: Sequence[Watchdog], config: Config) -> Plan:
    """Which watchdog guards the jump, for ``[exec] watchdog-sec`` seconds."""
    seconds = config.exec.watchdog_sec
    wanted = config.exec.watchdog_device
    if seconds == 0:
        return Plan(
            None, "off ([exec] watchdog-sec = 0): a hang after the jump needs a power cycle"
        )
    candidates = [w for w in watchdogs if not wanted or w.devnode == wanted]
    if not candidates:
        if wanted:
            return Plan(
                None,
                f"{wanted} ([exec] watchdog-device) does not exist: a hang after the jump "
                "needs a power cycle",
            )
        return Plan(None, NO_WATCHDOG)
    w = sorted(candidates, key=lambda w: _index(w.name))[0]
    if w.driver is None:
        return Plan(None, f"{_describe(w)} has no driver bound: it cannot be armed")
    record = WatchdogRecord(
        name=w.name,
        devnode=w.devnode,
        identity=w.identity,
        sys_path=w.sys_path,
        subsystem=w.subsystem,
        device=w.device,
        driver=w.driver,
        module=w.module,
        timeout=seconds,
    )
    note = f"{_describe(w)}: armed for {seconds} s before the jump"
    if w.module is None:
        note += (
            "; its driver is built into the kernel, so the new kernel may stop it when it "
            "probes, before verification"
        )
    return Plan(record, note)


def module_listed(module: str, *indexes: str) -> bool:
    """Whether ``module`` is in a modules.dep or modules.builtin text ('-' is '_')."""
    want = module.replace("-", "_")
    for text in indexes:
        for line in text.splitlines():
            path = line.partition(":")[0].strip()
            base = path.rsplit("/", 1)[-1].split(".ko", 1)[0]
            if base and base.replace("-", "_") == want:
                return True
    return False


def plan_for(backend: WatchdogBackend, config: Config, release: str | None) -> Plan:
    """``plan``, and, for a target kernel ``release``, not armed unless that kernel can load
    the driver: a watchdog the new kernel cannot take over would reset a machine whose
    new kernel is fine."""
    guard = plan(backend.watchdogs(), config)
    record = guard.record
    if release is None or record is None or record.module is None:
        return guard
    index = f"/usr/lib/modules/{release}/modules.dep or modules.builtin"
    try:
        found = module_listed(record.module, *backend.module_index(release))
    except Exception as e:  # OSError, safeopen.UnsafeFile: said, never armed blind
        why = f"{index} cannot be read ({str(e)[:200]})"
    else:
        if found:
            return guard
        why = f"{index} does not list {record.module}"
    return Plan(
        None,
        f"{record.name} ({record.identity or record.driver}, module {record.module}): not "
        f"armed: kernel {release} could not take it over: {why}; a hang after the jump "
        "needs a power cycle",
    )


def _index(name: str) -> int:
    digits = name.removeprefix("watchdog")
    return int(digits) if digits.isdigit() else 1 << 30


def cmdline_words(record: WatchdogRecord | None) -> list[str]:
    """What the new kernel's command line needs so that the timer survives until verify.

    The driver must not load before ``liveupd --verify`` takes the device over:
    udev would load it from the device's alias (in the initramfs too), and its
    probe may stop the running timer.  ``modprobe.blacklist=`` stops alias loads
    only; verification's explicit ``modprobe`` still loads it.  A built-in driver
    cannot be kept from probing; if it reports the timer as running (iTCO_wdt,
    wdat_wdt do), the watchdog core feeds it until someone opens the device,
    forever unless ``watchdog.open_timeout`` is set: so it is, to the timeout.
    """
    if record is None:
        return []
    if record.module is None:
        return [f"{OPEN_TIMEOUT_PARAM}={record.timeout}"]
    return [f"{BLACKLIST_PARAM}={record.module}"]


def blacklisted(cmdline_words_: Sequence[str], module: str) -> bool:
    """Whether a command line keeps ``module`` from being loaded by udev."""
    for word in cmdline_words_:
        key, sep, value = word.partition("=")
        if sep and key == BLACKLIST_PARAM and module in value.strip('"').split(","):
            return True
    return False


def feed_interval(timeout: int) -> float:
    """Seconds between pings: four per period, at least one a second."""
    return max(1.0, min(timeout / 4, 30.0))


@dataclass(frozen=True)
class Handover:
    keep_running: bool  # close without the magic character: PID 1 takes it
    timeout: int  # the timeout to leave it with (keep_running only)
    note: str


def handover(record: WatchdogRecord, manager_sec: float, manager_device: str) -> Handover:
    """After verification: to systemd's RuntimeWatchdogSec= if it is set for this
    device, else stopped (a magic close).

    An empty WatchdogDevice= is systemd's default, /dev/watchdog0 (257 opens it,
    then /dev/watchdog, which is watchdog0 too): not any device."""
    device = manager_device or "/dev/watchdog0"
    ours = device == record.devnode or (device == "/dev/watchdog" and record.name == "watchdog0")
    if manager_sec > 0 and ours:
        # PID 1 opens the device again within half its period (its main loop wakes up
        # at least that often and retries the open); until then the timer must run on.
        timeout = max(record.timeout, int(manager_sec) + 1)
        return Handover(
            True,
            timeout,
            f"handed over to systemd (RuntimeWatchdogSec={manager_sec:g}s): left running "
            f"for {timeout} s until PID 1 opens {record.devnode}",
        )
    return Handover(False, 0, f"{record.devnode} stopped (closed with the magic character)")


def fell_back_reason(bootstatus: Sequence[tuple[str, int]]) -> str:
    """Why the machine came back on the old kernel, from the watchdogs' boot status."""
    reset_by = [name for name, status in bootstatus if status & WDIOF_CARDRESET]
    if reset_by:
        return (
            f"the hardware watchdog ({', '.join(reset_by)}) reset the machine: the new kernel "
            "did not reach verification in time (it hung, or booted too slowly for [exec] "
            "watchdog-sec); the firmware booted the old kernel"
        )
    return (
        "came back on the old kernel (no watchdog reset recorded: a panic reboot, a power "
        "cycle or a reset)"
    )
