"""A stand-in for polkitd that answers CheckAuthorization with a reply of any type.

usage: python -m tests.dbus.fake_polkit ADDRESS SIGNATURE BODY_JSON

It owns org.freedesktop.PolicyKit1 on the bus at ADDRESS, prints "ready",
and answers every CheckAuthorization with a method return of SIGNATURE
holding BODY_JSON (a JSON list: the reply's arguments), the way a broken or
hostile service owning polkit's name could.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from dbus_fast import Message, MessageType, NameFlag
from dbus_fast.aio import MessageBus

NAME = "org.freedesktop.PolicyKit1"


async def main(address: str, signature: str, body: list[Any]) -> None:
    bus = await MessageBus(bus_address=address).connect()

    def answer(msg: Message) -> bool:
        if msg.message_type is MessageType.METHOD_CALL and msg.member == "CheckAuthorization":
            bus.send(Message.new_method_return(msg, signature, body))
            return True
        return False

    bus.add_message_handler(answer)
    await bus.request_name(NAME, NameFlag.DO_NOT_QUEUE)
    print("ready", flush=True)
    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
