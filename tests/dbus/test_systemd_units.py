"""The remote-login listeners through systemd's D-Bus API (liveupd/sessions/units.py),
against python-dbusmock's systemd template on a private bus.

The template queues a job for StartUnit/StopUnit and ends it with ``JobRemoved``
("done") from its main loop, after the reply.  Methods replaced below end a job
*before* its reply (the signal arrives first: it must not be missed), with a
result other than "done", or never; ``GetUnit`` of a unit systemd has not
loaded answers ``NoSuchUnit`` as systemd does.  The real systemd is met in the
VM (tests/vm/test_fleet.py: the listeners stopped, then started on rollback).
"""

from __future__ import annotations

import asyncio

import pytest

from liveupd.sessions import units
from liveupd.sessions.logind import LogindSessions
from tests.dbus.buses import PrivateBus, Processes, dbusmock

SYSTEMD1 = "org.freedesktop.systemd1"
PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
MOCK = "org.freedesktop.DBus.Mock"


def add_method(bus: PrivateBus, name: str, in_sig: str, out_sig: str, code: str) -> None:
    bus.busctl("call", SYSTEMD1, PATH, MOCK, "AddMethod", "sssss", MANAGER, name, in_sig,
               out_sig, code)  # fmt: skip


def job_ending_first(result: str) -> str:
    """A StopUnit whose JobRemoved (with ``result``) is sent before its reply."""
    return f"""
job = dbus.ObjectPath('{PATH}/job/77')
self.EmitSignal('{MANAGER}', 'JobRemoved', 'uoss', [dbus.UInt32(77), job, args[0], '{result}'])
ret = job
"""


GET_UNIT = f"""
if args[0] not in self.units:
    raise dbus.exceptions.DBusException('Unit ' + args[0] + ' not loaded.',
                                        name='{SYSTEMD1}.NoSuchUnit')
ret = dbus.ObjectPath(self.units[args[0]])
"""


@pytest.fixture
def systemd(procs: Processes, bus: PrivateBus, monkeypatch: pytest.MonkeyPatch) -> PrivateBus:
    dbusmock(procs, bus, "systemd", SYSTEMD1)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    for unit in ("ssh.socket", "ssh.service"):
        bus.busctl("call", SYSTEMD1, PATH, MOCK, "AddMockUnit", "s", unit)
    add_method(bus, "GetUnit", "s", "o", GET_UNIT)
    return bus


def test_active_stop_and_start_wait_for_their_jobs(systemd: PrivateBus) -> None:
    backend = LogindSessions()

    async def scenario() -> None:
        assert await backend.unit_active("ssh.socket") is False
        await backend.start_unit("ssh.socket")
        assert await backend.unit_active("ssh.socket") is True
        assert await backend.unit_active("ssh.service") is False
        await backend.stop_unit("ssh.socket")
        assert await backend.unit_active("ssh.socket") is False
        # Not loaded: not active, as `systemctl is-active` says.
        assert await backend.unit_active("telnet.socket") is False

    asyncio.run(scenario())


def test_a_job_that_ends_before_its_reply_is_not_missed(systemd: PrivateBus) -> None:
    add_method(systemd, "StopUnit", "ss", "o", job_ending_first("done"))
    asyncio.run(LogindSessions().stop_unit("ssh.service"))


def test_a_job_that_fails_is_an_error_naming_the_unit(systemd: PrivateBus) -> None:
    add_method(systemd, "StopUnit", "ss", "o", job_ending_first("failed"))
    with pytest.raises(OSError, match=r"StopUnit\(ssh.service\): the job ended 'failed'"):
        asyncio.run(LogindSessions().stop_unit("ssh.service"))


def test_systemd_refusing_is_an_error_naming_the_call(systemd: PrivateBus) -> None:
    deny = (
        "raise dbus.exceptions.DBusException('denied', "
        "name='org.freedesktop.DBus.Error.AccessDenied')"
    )
    add_method(systemd, "StartUnit", "ss", "o", deny)
    with pytest.raises(OSError, match=r"StartUnit\(ssh.socket\): .*AccessDenied"):
        asyncio.run(LogindSessions().start_unit("ssh.socket"))


def test_a_job_that_never_ends_times_out(
    systemd: PrivateBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_method(systemd, "StopUnit", "ss", "o", f"ret = dbus.ObjectPath('{PATH}/job/78')")
    monkeypatch.setattr(units, "TIMEOUT", 0.3)
    with pytest.raises(OSError, match=r"StopUnit\(ssh.socket\): its job did not finish"):
        asyncio.run(LogindSessions().stop_unit("ssh.socket"))
