"""Who is calling: the sender of the method call being handled, resolved per call.

dbus-fast does not hand a method its message.  A message handler, which the
bus runs for every incoming message before dispatching it, records the
METHOD_CALL in a ContextVar; dbus-fast then creates the task that runs the
(async) method, and a task copies the context at creation, so each method
sees its own call for its whole life, however calls interleave.  The uid is
asked of the bus (``GetConnectionUnixUser``) for every call: nothing is
cached, so no call can be attributed to another caller.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus

from liveupd.errors import AccessDenied, Failed


@dataclass(frozen=True)
class Call:
    """The METHOD_CALL being handled."""

    sender: str  # the caller's unique bus name
    serial: int
    path: str
    interface: str
    member: str
    interactive: bool = False  # the ALLOW_INTERACTIVE_AUTHORIZATION header flag


_current: ContextVar[Call | None] = ContextVar("liveupd_dbus_call", default=None)
# The uid of the current call's sender, once the bus told it (for the refusal log).
_uid: ContextVar[int | None] = ContextVar("liveupd_dbus_uid", default=None)


def _record(msg: Message) -> bool:
    if msg.message_type is MessageType.METHOD_CALL and msg.sender:
        _current.set(
            Call(
                sender=msg.sender,
                serial=msg.serial,
                path=msg.path or "",
                interface=msg.interface or "",
                member=msg.member or "",
                interactive=bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION),
            )
        )
    return False  # never "handled": dispatch goes on as usual


def install(bus: MessageBus) -> None:
    """Record every incoming method call for the method that handles it."""
    bus.add_message_handler(_record)


def current() -> Call:
    """The call the running method is handling."""
    call = _current.get()
    if call is None:
        raise Failed("internal error: no D-Bus call is being handled; report this as a bug")
    return call


def current_or_none() -> Call | None:
    return _current.get()


def known_uid() -> int | None:
    """The current call's uid if :func:`unix_user` resolved it in this call (else None)."""
    return _uid.get()


async def _ask_bus(bus: MessageBus, member: str, sender: str) -> Message:
    """The bus daemon's answer to ``member(sender)`` (GetConnectionUnixUser and the like)."""
    return await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member=member,
            signature="s",
            body=[sender],
        )
    )


async def unix_user(bus: MessageBus, sender: str) -> int:
    """The uid of the connection ``sender``, as the bus daemon saw it connect."""
    reply = await _ask_bus(bus, "GetConnectionUnixUser", sender)
    if reply.message_type is MessageType.ERROR or not reply.body:
        raise AccessDenied(
            f"cannot tell who is calling: the bus did not give the uid of {sender} "
            f"({reply.error_name}); call again from a connection that stays open"
        )
    uid = reply.body[0]
    if reply.signature != "u" or not isinstance(uid, int) or isinstance(uid, bool):
        raise AccessDenied(
            f"cannot tell who is calling: the bus answered a {reply.signature!r} for {sender}"
        )
    call = _current.get()
    if call is not None and call.sender == sender:
        _uid.set(uid)
    return uid


async def unix_pid(bus: MessageBus, sender: str) -> int | None:
    """The PID of the connection ``sender`` (None when the bus cannot tell).

    Only to find the caller's login session (ended last before the network goes
    down): never used to decide who may do what.
    """
    reply = await _ask_bus(bus, "GetConnectionUnixProcessID", sender)
    if reply.message_type is MessageType.ERROR or reply.signature != "u" or not reply.body:
        return None
    pid = reply.body[0]
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None
