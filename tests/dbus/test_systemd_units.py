"""The remote-login listeners through systemd's D-Bus API (liveupd/sessions/units.py),
against python-dbusmock's systemd template on a private bus.

The template queues a job for StartUnit/StopUnit and ends it with ``JobRemoved``
("done") from its main loop, after the reply.  Methods replaced below end a job
*before* its reply (the signal arrives first: it must not be missed), with a
result other than "done", or never.  The template has no ``ListUnitsByNames``:
the one added answers as systemd does (one entry per name, in order; a unit it
cannot find is "not-found" and inactive).  The real systemd is met in the
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


# systemd's answer: one entry per name, in order; a unit it cannot find is loaded as
# "not-found" and inactive, under its own path.
LIST_UNITS_BY_NAMES = f"""
ret = []
for name in args[0]:
    path = self.units.get(name)
    state = objects[path].Get('{SYSTEMD1}.Unit', 'ActiveState') if path else 'inactive'
    ret.append((name, '', 'loaded' if path else 'not-found', state, '', '',
                dbus.ObjectPath(path or '{PATH}/unit/none'), dbus.UInt32(0), '',
                dbus.ObjectPath('/')))
"""


def answering_list_units_by_names(rows: str) -> str:
    """A ListUnitsByNames that answers ``rows`` (Python source of a list of states)."""
    return f"""
ret = [(n, '', 'loaded', st, '', '', dbus.ObjectPath('{PATH}/unit/x'), dbus.UInt32(0), '',
        dbus.ObjectPath('/')) for n, st in zip(['a.socket', 'b.socket', 'c.socket'], {rows})]
"""


@pytest.fixture
def systemd(procs: Processes, bus: PrivateBus, monkeypatch: pytest.MonkeyPatch) -> PrivateBus:
    dbusmock(procs, bus, "systemd", SYSTEMD1)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    for unit in ("ssh.socket", "ssh.service"):
        bus.busctl("call", SYSTEMD1, PATH, MOCK, "AddMockUnit", "s", unit)
    add_method(bus, "ListUnitsByNames", "as", "a(ssssssouso)", LIST_UNITS_BY_NAMES)
    return bus


def test_active_stop_and_start_wait_for_their_jobs(systemd: PrivateBus) -> None:
    backend = LogindSessions()

    async def scenario() -> None:
        both = ("ssh.socket", "ssh.service")
        assert await backend.active_units(both) == []
        await backend.start_unit("ssh.socket")
        assert await backend.active_units(both) == ["ssh.socket"]
        await backend.start_unit("ssh.service")
        # Their order, not systemd's.
        assert await backend.active_units(("ssh.service", "ssh.socket")) == list(both)[::-1]
        await backend.stop_unit("ssh.socket")
        assert await backend.active_units(both) == ["ssh.service"]
        # Not loaded: not active, as `systemctl is-active` says.
        assert await backend.active_units(("telnet.socket", "ssh.service")) == ["ssh.service"]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        ("['active', 'inactive']", r"answered 2 units for 3"),
        ("['active', 'exploded', 'active']", r"b.socket is in an unknown state 'exploded'"),
    ],
)
def test_an_answer_that_does_not_fit_the_question_is_an_error(
    systemd: PrivateBus, rows: str, error: str
) -> None:
    add_method(systemd, "ListUnitsByNames", "as", "a(ssssssouso)",
               answering_list_units_by_names(rows))  # fmt: skip
    with pytest.raises(OSError, match=error):
        asyncio.run(LogindSessions().active_units(("a.socket", "b.socket", "c.socket")))


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
