"""An unprivileged caller's flood: Stage calls carrying a huge argument.

usage: python -m tests.dbus.flood ADDRESS COUNT SIZE [option|kernel]

Sends COUNT Stage calls one after another, each with a SIZE-character
string as an option value (``append``) or as the kernel path, and prints
one JSON list with, for each call, [error name, length of the error message].
Used by the confinement tests and by bench/confinement.py.
"""

from __future__ import annotations

import asyncio
import json
import sys

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus


async def main(address: str, count: int, size: int, where: str) -> None:
    bus = await MessageBus(bus_address=address).connect()
    big = "x" * size
    as_option = ["", "", "", {"append": Variant("s", big)}]
    body = [big, "", "", {}] if where == "kernel" else as_option
    out = []
    for _ in range(count):
        reply = await bus.call(
            Message(
                destination="org.liveupd.LiveUpdate1",
                path="/org/liveupd/LiveUpdate1",
                interface="org.liveupd.LiveUpdate1.Manager",
                member="Stage",
                signature="sssa{sv}",
                body=body,
            )
        )
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body else ""
            out.append([str(reply.error_name), len(text)])
        else:
            out.append(["ok", 0])
    print(json.dumps(out))
    bus.disconnect()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0], int(args[1]), int(args[2]), args[3] if len(args) > 3 else "option"))
