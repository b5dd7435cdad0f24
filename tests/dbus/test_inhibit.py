"""logind inhibitors (python-dbusmock's logind, systemd-inhibit as the lock holder)."""

from __future__ import annotations

import subprocess

from tests.dbus.buses import NOBODY, Daemon, PrivateBus, Processes, wait_until
from tests.dbus.fixtures import Polkit

M = "org.liveupd.LiveUpdate1.Manager."
INHIBITED = "org.liveupd.LiveUpdate1.Error.Inhibited"
DENIED = "org.freedesktop.DBus.Error.AccessDenied"
IGNORE = "{'ignore-inhibitors': <true>}"


def inhibit(procs: Processes, bus: PrivateBus, mode: str, what: str = "shutdown") -> None:
    """Hold a logind inhibitor (systemd-inhibit, talking to the mock) until the test ends."""
    procs.start(
        [
            "systemd-inhibit",
            f"--what={what}",
            "--who=db-migration",
            "--why=moving tables",
            f"--mode={mode}",
            "sleep",
            "600",
        ],
        env=bus.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listed() -> bool:
        out = bus.busctl(
            "call",
            "org.freedesktop.login1",
            "/org/freedesktop/login1",
            "org.freedesktop.login1.Manager",
            "ListInhibitors",
        )
        return "db-migration" in out

    wait_until(listed, "the inhibitor to be registered")


def test_block_inhibitor_refuses_execute(
    daemon: Daemon, bus: PrivateBus, logind: PrivateBus, procs: Processes
) -> None:
    inhibit(procs, bus, "block", "sleep:shutdown")
    bus.call("Stage", "sssa{sv}", "", "", "", "0")
    refused = bus.gdbus(M + "Execute", "{}")
    assert refused.error == INHIBITED
    assert "db-migration (uid 1000, pid 123456): moving tables" in refused.message
    assert "ignore-inhibitors" in refused.message
    assert bus.get("State") == "staged"  # nothing started
    ok = bus.gdbus(M + "Execute", IGNORE)  # root may ignore them
    assert ok.returncode == 0, ok.stderr
    assert "event=inhibitors.ignored" in daemon.log()


def test_delay_inhibitor_and_other_locks_do_not_block(
    daemon: Daemon, bus: PrivateBus, logind: PrivateBus, procs: Processes
) -> None:
    inhibit(procs, bus, "delay")
    inhibit(procs, bus, "block", "sleep:idle")
    bus.call("Stage", "sssa{sv}", "", "", "", "0")
    assert bus.gdbus(M + "Execute", "{}").returncode == 0


def test_ignoring_inhibitors_needs_its_own_authorization(
    daemon: Daemon, bus: PrivateBus, logind: PrivateBus, polkit: Polkit, procs: Processes
) -> None:
    polkit.allow("org.liveupd.stage", "org.liveupd.execute")
    inhibit(procs, bus, "block")
    assert bus.gdbus(M + "Stage", "", "", "", "{}", uid=NOBODY).returncode == 0
    assert bus.gdbus(M + "Execute", "{}", uid=NOBODY).error == INHIBITED
    denied = bus.gdbus(M + "Execute", IGNORE, uid=NOBODY)
    assert denied.error == DENIED
    assert "org.liveupd.execute-ignore-inhibitors" in denied.message
    polkit.allow(
        "org.liveupd.stage", "org.liveupd.execute", "org.liveupd.execute-ignore-inhibitors"
    )
    assert bus.gdbus(M + "Execute", IGNORE, uid=NOBODY).returncode == 0
