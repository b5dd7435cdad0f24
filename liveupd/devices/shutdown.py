"""Unbind the recorded devices late in a systemd-mode shutdown (the system-shutdown helper).

In ``systemd`` exec mode the daemon only records the bindings; systemd then
stops services and unmounts, and at the very end runs the executables in
``/usr/lib/systemd/system-shutdown/`` with the action as ``argv[1]``.
``units/liveupd-shutdown`` calls this module there::

    python3 -B -m liveupd.devices.shutdown [--state-dir DIR] [--timeout SECONDS]
                                           [--dry-run] [ACTION]

* ``ACTION`` is systemd-shutdown's argument (halt, poweroff, reboot, kexec);
  anything but ``kexec`` does nothing.  Without it, ``kexec`` is assumed.
* It reads ``<state-dir>/pending`` and that transition's ``checkpoint.json``
  (the state directory: ``--state-dir``, else ``$LIVEUPD_STATE_DIR``, else
  ``[daemon] state-dir`` from the configuration, else /var/lib/liveupd).
  Nothing pending, a ``direct``-mode record (the daemon unbound itself), a
  dry-run record, or a record of another boot (a transition whose
  verification failed stays pending; a later kexec is not its jump): nothing
  to do.
* For each recorded binding, children first: every network interface below
  the device that is up is set down, the device is written to its driver's
  ``unbind`` file, and the kernel's unbind event (udevd is gone by then) is
  awaited for at most ``--timeout`` seconds (default ``[devices] timeout``).
  A device already unbound is skipped.  A failure is reported and the others
  are still unbound.
* Then, when the checkpoint names a hardware watchdog to guard the jump
  (``[exec] watchdog-sec``), it is armed the way the daemon arms it in
  ``direct`` mode (``devices/watchdog_dev.py``: timeout, nowayout, unbound
  from its driver), as the very last thing before systemd-shutdown's kexec.
  systemd-shutdown closed its own descriptor of it before the helpers run.
  A failure to arm is reported; the jump goes on unguarded.
* It writes nothing to any filesystem (they are read-only by then), except
  when something failed: then one line for the new kernel's verification
  (``transition/late_failures.py``: a warning in the report), for which the
  state directory's filesystem is made writable for a moment.  It logs one
  logfmt line per event to stderr.
* Exit status: 0 all done (or nothing to do), 1 some device failed or the
  watchdog could not be armed, 2 usage error or unreadable checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from liveupd import logs, paths
from liveupd.backends.base import Binding, WatchdogBackend, WatchdogRecord
from liveupd.backends.system import ProcSystem
from liveupd.devices.machine import SysfsDevices
from liveupd.devices.uevents import PyudevSource

LOG = logs.get("shutdown")
DEFAULT_TIMEOUT = 10.0
STATE_DIR_ENV = "LIVEUPD_STATE_DIR"  # what units/liveupd-shutdown checks, set by tests


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="liveupd-shutdown",
        description="Unbind the devices recorded by a pending systemd-mode transition.",
    )
    p.add_argument("action", nargs="?", default="kexec", help="systemd-shutdown's action")
    p.add_argument("--state-dir", type=Path, help="liveupd's state directory")
    p.add_argument("--timeout", type=float, help="seconds to wait for each unbind")
    p.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    return p


def _settings(args: argparse.Namespace) -> tuple[Path, float]:
    if args.state_dir is None and os.environ.get(STATE_DIR_ENV):
        args.state_dir = Path(os.environ[STATE_DIR_ENV])
    state_dir: Path = args.state_dir or paths.STATE_DIR
    timeout: float = args.timeout or DEFAULT_TIMEOUT
    if args.state_dir is None or args.timeout is None:
        try:
            from liveupd.config.load import load_config

            config = load_config()
        except Exception as e:  # a broken config must not stop the unbind
            logs.event(LOG, "shutdown.config-unreadable", level=logging.WARNING, error=str(e))
        else:
            state_dir = args.state_dir or config.state_dir
            timeout = args.timeout or config.devices.timeout
    return state_dir, timeout


def unbind_recorded(
    devices: SysfsDevices, bindings: Sequence[Binding], timeout: float
) -> list[str]:
    """Link down and unbind each binding in order; one message per failure."""
    failures = []
    for b in bindings:
        current = devices.bound_driver(b.sys_path)
        if current != b.driver:
            logs.event(LOG, "shutdown.skipped", sys_path=b.sys_path, driver=b.driver, bound=current)
            continue
        try:
            for net in devices.interfaces_under(b.sys_path):
                if net.up:
                    devices.set_link(net.ifname, False)
                    logs.event(LOG, "shutdown.link-down", ifname=net.ifname, mac=net.mac)
            devices.unbind(b, timeout)
        except OSError as e:
            failures.append(f"{b.sys_path} ({b.driver}): {e.strerror or e}")
            logs.event(
                LOG,
                "shutdown.unbind-failed",
                level=logging.ERROR,
                sys_path=b.sys_path,
                driver=b.driver,
                error=e.strerror or str(e),
            )
            continue
        logs.event(LOG, "shutdown.unbound", sys_path=b.sys_path, driver=b.driver)
    return failures


def arm_watchdog(watchdog: WatchdogBackend, record: WatchdogRecord) -> str | None:
    """Arm the watchdog for the jump; a message when it could not be."""
    try:
        timeout = watchdog.arm(record)
    except OSError as e:
        logs.event(
            LOG,
            "shutdown.watchdog-failed",
            level=logging.ERROR,
            device=record.devnode,
            error=e.strerror or str(e),
        )
        return f"{record.devnode} ({record.identity}): not armed: {e.strerror or e}"
    logs.event(
        LOG,
        "shutdown.watchdog-armed",
        device=record.devnode,
        timeout=timeout,
        unbound=f"{record.subsystem}/{record.device}",
    )
    return None


def main() -> int:
    """The program (/usr/libexec/liveupd/shutdown-unbind): its events go to stderr."""
    logs.setup()
    return run()


def run(
    argv: list[str] | None = None,
    devices: SysfsDevices | None = None,
    watchdog: WatchdogBackend | None = None,
    boot_id: str | None = None,
) -> int:
    """The helper's work; `devices`, `watchdog` and `boot_id` (this boot's) for tests."""
    args = parser().parse_args(argv)
    if args.action != "kexec":
        logs.event(LOG, "shutdown.not-kexec", action=args.action)
        return 0
    from liveupd.transition.checkpoint import load_checkpoint, read_pending
    from liveupd.transition.journal import transitions_dir

    state_dir, timeout = _settings(args)
    tid = read_pending(state_dir)
    if tid is None:
        logs.event(LOG, "shutdown.nothing-pending", state_dir=state_dir)
        return 0
    record = load_checkpoint(transitions_dir(state_dir) / tid)
    if record is None:
        path = transitions_dir(state_dir) / tid / "checkpoint.json"
        logs.event(
            LOG, "shutdown.checkpoint-unreadable", level=logging.ERROR, transition=tid, path=path
        )
        _record(
            state_dir,
            tid,
            f"the system-shutdown helper could not read {path}: the devices it records were "
            "not unbound before the jump",
        )
        return 2
    if record.mode != "systemd" or record.dry_run:
        logs.event(
            LOG, "shutdown.not-ours", transition=tid, mode=record.mode, dry_run=record.dry_run
        )
        return 0
    this_boot = boot_id or ProcSystem().boot_id()
    if record.old.boot_id != this_boot:
        logs.event(
            LOG, "shutdown.other-boot", transition=tid, recorded=record.old.boot_id, boot=this_boot
        )
        return 0
    if args.dry_run:
        for b in record.bindings:
            logs.event(LOG, "shutdown.would-unbind", sys_path=b.sys_path, driver=b.driver)
        if record.watchdog is not None:
            logs.event(LOG, "shutdown.would-arm", device=record.watchdog.devnode)
        return 0
    logs.event(LOG, "shutdown.started", transition=tid, devices=len(record.bindings))
    devices = devices or SysfsDevices(uevents=PyudevSource("kernel"))
    failures = unbind_recorded(devices, record.bindings, timeout)
    if record.watchdog is not None:
        if watchdog is None:
            from liveupd.devices.watchdog_dev import RealWatchdog

            watchdog = RealWatchdog()
        problem = arm_watchdog(watchdog, record.watchdog)
        if problem is not None:
            failures.append(problem)
    logs.event(
        LOG,
        "shutdown.finished",
        level=logging.ERROR if failures else logging.INFO,
        transition=tid,
        failures="; ".join(failures) or None,
    )
    if failures:
        _record(
            state_dir,
            tid,
            "the system-shutdown helper's last steps before the jump failed: "
            + "; ".join(failures),
        )
    return 1 if failures else 0


def _record(state_dir: Path, tid: str, message: str) -> None:
    """Leave the failure for the new kernel's verification (a warning in its report)."""
    from liveupd.transition import late_failures

    try:
        late_failures.record(state_dir, tid, message)
    except Exception as e:  # the console line is all that is left
        logs.event(LOG, "shutdown.record-failed", level=logging.ERROR, error=str(e)[:200])
    else:
        logs.event(LOG, "shutdown.recorded", path=late_failures.record_path(state_dir))


if __name__ == "__main__":
    sys.exit(main())
