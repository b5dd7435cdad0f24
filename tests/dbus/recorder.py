"""Record liveupd's signals as JSON lines (a real D-Bus client, for the tests).

usage: python -m tests.dbus.recorder ADDRESS OUT

Writes ``ready`` once its match rules are in place, then one line per signal
from org.liveupd.LiveUpdate1: {"path", "interface", "member", "body"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, cast

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus


def plain(value: Any) -> Any:
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


async def main(address: str, out_path: str) -> None:
    bus = await MessageBus(bus_address=address).connect()
    out = open(out_path, "w")  # noqa: SIM115 - kept open for the life of the process

    def on_message(msg: Message) -> bool:
        if msg.message_type is MessageType.SIGNAL and msg.sender != "org.freedesktop.DBus":
            record = {
                "path": msg.path,
                "interface": msg.interface,
                "member": msg.member,
                "body": plain(msg.body),
            }
            out.write(json.dumps(record) + "\n")
            out.flush()
        return False

    bus.add_message_handler(on_message)
    owner = await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="AddMatch",
            signature="s",
            body=["type='signal',path_namespace='/org/liveupd/LiveUpdate1'"],
        )
    )
    assert owner.message_type is MessageType.METHOD_RETURN
    out.write("ready\n")
    out.flush()
    # dbus-fast leaves wait_for_disconnect unannotated; it resolves to None on disconnect.
    wait_for_disconnect = cast(Callable[[], Coroutine[Any, Any, None]], bus.wait_for_disconnect)
    await wait_for_disconnect()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
