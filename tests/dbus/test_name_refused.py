"""The bus policy denies liveupd its name: one clear error, no traceback (issue 18, case 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.dbus.buses import DEADLINE, SESSION_STYLE, Daemon, PrivateBus, Processes

DENY_OWN = SESSION_STYLE.replace(
    '<allow own="*"/>', '<allow own="*"/>\n    <deny own="org.liveupd.LiveUpdate1"/>'
)


def test_a_refused_name_is_a_clear_error(
    procs: Processes, write_config: Any, tmp_path: Path
) -> None:
    assert DENY_OWN != SESSION_STYLE
    bus = PrivateBus(procs, DENY_OWN)
    config = write_config("")
    daemon = Daemon(procs, bus, tmp_path / "liveupd.conf", config.state_dir).start(wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(DEADLINE) == 1
    log = daemon.log()
    assert "Traceback" not in log and "DBusError" not in log, log
    assert "liveupd: the bus at unix:path=" in log
    assert "refused liveupd the name org.liveupd.LiveUpdate1 " in log
    assert "org.freedesktop.DBus.Error.AccessDenied" in log
    assert "run liveupd as root" in log and "org.liveupd.LiveUpdate1.conf" in log
