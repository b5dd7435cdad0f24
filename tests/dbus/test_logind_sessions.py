"""The real logind backend (liveupd/sessions/logind.py) against python-dbusmock's logind.

The mock's ``TerminateSession`` is made to remove the session (as logind does
once the scope stopped), ``GetSession`` to answer ``NoSuchSession`` for a
session that is gone, and ``GetSessionByPID`` to know one PID.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from liveupd.sessions.logind import LogindSessions
from tests.dbus.buses import PrivateBus

LOGIN1 = "org.freedesktop.login1"
MANAGER_PATH = "/org/freedesktop/login1"
MANAGER = "org.freedesktop.login1.Manager"
MOCK = "org.freedesktop.DBus.Mock"
SESSIONS = "/org/freedesktop/login1/session/"
CALLER_PID = 4242

TERMINATE = f"self.RemoveObject('{SESSIONS}' + args[0])"
GET_SESSION = f"""
path = '{SESSIONS}' + args[0]
if path not in objects:
    raise dbus.exceptions.DBusException('No session ' + args[0], name='{LOGIN1}.NoSuchSession')
ret = dbus.ObjectPath(path)
"""
BY_PID = f"""
if args[0] != {CALLER_PID}:
    raise dbus.exceptions.DBusException('not in a session', name='{LOGIN1}.NoSessionForPID')
ret = dbus.ObjectPath('{SESSIONS}c3')
"""

DENY = (
    "raise dbus.exceptions.DBusException('denied', name='org.freedesktop.DBus.Error.AccessDenied')"
)


def add_method(bus: PrivateBus, name: str, in_sig: str, out_sig: str, code: str) -> None:
    bus.busctl(
        "call", LOGIN1, MANAGER_PATH, MOCK, "AddMethod", "sssss",
        MANAGER, name, in_sig, out_sig, code,
    )  # fmt: skip


def add_session(bus: PrivateBus, sid: str, uid: int, user: str, **props: Any) -> None:
    bus.busctl(
        "call", LOGIN1, MANAGER_PATH, MOCK, "AddSession", "ssusb", sid, "seat0", str(uid), user,
        "true",
    )  # fmt: skip
    args: list[str] = []
    for key, value in props.items():
        if isinstance(value, bool):
            args += [key, "b", "true" if value else "false"]
        elif isinstance(value, int):
            args += [key, "u", str(value)]
        else:
            args += [key, "s", str(value)]
    bus.busctl(
        "call", LOGIN1, SESSIONS + sid, MOCK, "UpdateProperties", "sa{sv}",
        "org.freedesktop.login1.Session", str(len(props)), *args,
    )  # fmt: skip


def test_lists_finds_ends_and_sees_sessions_go(
    logind: PrivateBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = logind
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    add_method(bus, "TerminateSession", "s", "", TERMINATE)
    add_method(bus, "GetSession", "s", "o", GET_SESSION)
    add_method(bus, "GetSessionByPID", "u", "o", BY_PID)
    add_session(bus, "c3", 0, "root", Remote=True, Service="sshd", RemoteHost="10.0.2.2",
                Leader=1234, State="active")  # fmt: skip
    add_session(bus, "c1", 1000, "tester", Service="login", State="online")

    async def scenario() -> None:
        backend = LogindSessions()
        found = {s.id: s for s in await backend.sessions()}
        assert set(found) == {"c1", "c3"}
        c3 = found["c3"]
        assert (c3.uid, c3.user, c3.remote, c3.service, c3.leader, c3.state, c3.remote_host) == (
            0, "root", True, "sshd", 1234, "active", "10.0.2.2",
        )  # fmt: skip
        assert (found["c1"].remote, found["c1"].service) == (False, "login")
        assert await backend.session_of(CALLER_PID) == "c3"
        assert await backend.session_of(1) is None  # NoSessionForPID: in no session
        assert await backend.gone("c3") is False
        await backend.terminate("c3")
        assert await backend.gone("c3") is True
        assert [s.id for s in await backend.sessions()] == ["c1"]
        # logind refusing (polkit): an OSError naming the call and the error.
        add_method(bus, "TerminateSession", "s", "", DENY)
        with pytest.raises(OSError, match=r"TerminateSession\(c1\): .*AccessDenied"):
            await backend.terminate("c1")

    asyncio.run(scenario())
