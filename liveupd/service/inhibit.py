"""logind's inhibitors: a ``block`` lock on ``shutdown`` refuses Execute.

A kexec ends every process of the running system like a reboot does, so it
honours the same locks ``systemctl reboot`` honours.  On a system without
logind there can be no inhibitors; that is logged and Execute goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from liveupd import logs

LOG = logs.get("inhibit")

LOGIND_NAME = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
LOGIND_INTERFACE = "org.freedesktop.login1.Manager"
NO_LOGIND = (
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
)


@dataclass(frozen=True)
class Inhibitor:
    what: str
    who: str
    why: str
    mode: str
    uid: int
    pid: int

    def blocks_shutdown(self) -> bool:
        return self.mode == "block" and "shutdown" in self.what.split(":")

    def describe(self) -> str:
        return f"{self.who} (uid {self.uid}, pid {self.pid}): {self.why}"


class InhibitorsUnknown(Exception):
    """logind is there but did not answer."""


async def list_inhibitors(bus: MessageBus) -> list[Inhibitor]:
    reply = await bus.call(
        Message(
            destination=LOGIND_NAME,
            path=LOGIND_PATH,
            interface=LOGIND_INTERFACE,
            member="ListInhibitors",
        )
    )
    if reply.message_type is MessageType.ERROR:
        if reply.error_name in NO_LOGIND:
            logs.event(LOG, "inhibitors.no-logind", level=logging.WARNING)
            return []
        text = reply.body[0] if reply.body else ""
        raise InhibitorsUnknown(f"logind answered {reply.error_name}: {text}")
    return [Inhibitor(*row) for row in reply.body[0]]


async def shutdown_blockers(bus: MessageBus) -> list[Inhibitor]:
    """The inhibitors that would block a reboot right now."""
    return [i for i in await list_inhibitors(bus) if i.blocks_shutdown()]
