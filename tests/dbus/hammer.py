"""Many concurrent calls from one connection (run as some uid), for the caller tests.

usage: python -m tests.dbus.hammer ADDRESS {can|stage} COUNT

Prints one JSON list: for each call, its answer (CanLiveUpdate) or "ok", or
the D-Bus error name.
"""

from __future__ import annotations

import asyncio
import json
import sys

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

CALLS = {
    "can": ("CanLiveUpdate", "", []),
    "stage": ("Stage", "sssa{sv}", ["", "", "", {}]),
}


async def main(address: str, kind: str, count: int) -> None:
    bus = await MessageBus(bus_address=address).connect()
    member, signature, body = CALLS[kind]

    async def one() -> str:
        reply = await bus.call(
            Message(
                destination="org.liveupd.LiveUpdate1",
                path="/org/liveupd/LiveUpdate1",
                interface="org.liveupd.LiveUpdate1.Manager",
                member=member,
                signature=signature,
                body=body,
            )
        )
        if reply.message_type is MessageType.ERROR:
            return str(reply.error_name)
        return str(reply.body[0]) if kind == "can" else "ok"

    results = await asyncio.gather(*(one() for _ in range(count)))
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
