"""Login sessions through logind (org.freedesktop.login1) on the system bus.

``ListSessions`` gives the ids; each session's properties (``Remote``,
``Service``, ``Leader``, ``State``, ...) are read with ``GetAll``.
``GetSessionByPID`` finds the session of the process that called Execute
(``NoSessionForPID``: it is in none, e.g. a command run from a container or a
service).  ``TerminateSession`` stops the session's scope (SIGTERM and SIGHUP
to every process in it); the session is gone once ``GetSession`` answers
``NoSuchSession``.  The connection is opened, and dbus-fast imported, at first
use (only Execute needs it: the verify path, which makes the same backends,
imports no D-Bus library).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from liveupd.backends.base import Session

if TYPE_CHECKING:
    from dbus_fast import Message
    from dbus_fast.aio import MessageBus

LOGIN1 = "org.freedesktop.login1"
MANAGER_PATH = "/org/freedesktop/login1"
MANAGER = "org.freedesktop.login1.Manager"
SESSION = "org.freedesktop.login1.Session"
NO_SESSION_FOR_PID = "org.freedesktop.login1.NoSessionForPID"
NO_SUCH_SESSION = "org.freedesktop.login1.NoSuchSession"


class LogindSessions:
    def __init__(self) -> None:
        self._bus: MessageBus | None = None

    async def _connection(self) -> MessageBus:
        from dbus_fast import BusType
        from dbus_fast.aio import MessageBus

        if self._bus is None or not self._bus.connected:
            try:
                self._bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
            except Exception as e:
                raise OSError(errno.ECONNREFUSED, f"cannot reach the system bus: {e}") from e
        return self._bus

    async def _call(
        self, member: str, signature: str = "", body: list[Any] | None = None, *,
        path: str = MANAGER_PATH, interface: str = MANAGER,
    ) -> Message:  # fmt: skip
        from dbus_fast import Message

        bus = await self._connection()
        return await bus.call(
            Message(
                destination=LOGIN1,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body or [],
            )
        )

    @staticmethod
    def _check(reply: Message, what: str) -> Message:
        if _error(reply):
            detail = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise OSError(errno.EIO, f"logind: {what}: {reply.error_name} {detail[:200]}".strip())
        return reply

    async def sessions(self) -> list[Session]:
        reply = self._check(await self._call("ListSessions"), "ListSessions")
        out = []
        for entry in reply.body[0]:
            sid, uid, user, _seat, path = entry
            props = self._check(
                await self._call(
                    "GetAll", "s", [SESSION], path=path, interface="org.freedesktop.DBus.Properties"
                ),
                f"the properties of session {sid}",
            ).body[0]
            out.append(
                Session(
                    id=str(sid),
                    uid=int(uid),
                    user=str(user),
                    remote=bool(_value(props, "Remote", False)),
                    service=str(_value(props, "Service", "")),
                    leader=int(_value(props, "Leader", 0)),
                    state=str(_value(props, "State", "")),
                    remote_host=str(_value(props, "RemoteHost", "")),
                    scope=str(_value(props, "Scope", "")),
                )
            )
        return out

    async def session_of(self, pid: int) -> str | None:
        reply = await self._call("GetSessionByPID", "u", [pid])
        if _error(reply) and reply.error_name == NO_SESSION_FOR_PID:
            return None
        path = str(self._check(reply, f"GetSessionByPID({pid})").body[0])
        props = self._check(
            await self._call(
                "Get", "ss", [SESSION, "Id"], path=path, interface="org.freedesktop.DBus.Properties"
            ),
            f"the id of session {path}",
        ).body[0]
        return str(getattr(props, "value", props))

    async def terminate(self, session_id: str) -> None:
        self._check(
            await self._call("TerminateSession", "s", [session_id]),
            f"TerminateSession({session_id})",
        )

    async def gone(self, session_id: str) -> bool:
        reply = await self._call("GetSession", "s", [session_id])
        if _error(reply) and reply.error_name == NO_SUCH_SESSION:
            return True
        self._check(reply, f"GetSession({session_id})")
        return False

    # The listeners are systemd units: systemd over the same connection (sessions/units.py).
    async def active_units(self, units: Sequence[str]) -> list[str]:
        from liveupd.sessions import units as systemd_units

        return await systemd_units.active_units(await self._connection(), units)

    async def stop_unit(self, unit: str) -> None:
        from liveupd.sessions import units

        await units.stop_unit(await self._connection(), unit)

    async def start_unit(self, unit: str) -> None:
        from liveupd.sessions import units

        await units.start_unit(await self._connection(), unit)


def _error(reply: Message) -> bool:
    from dbus_fast import MessageType

    return reply.message_type is MessageType.ERROR


def _value(props: dict[str, Any], name: str, default: Any) -> Any:
    from dbus_fast import Variant

    v = props.get(name)
    return v.value if isinstance(v, Variant) else default
