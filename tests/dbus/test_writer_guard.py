"""Regression: a burst of signals that fills the send buffer must not drop the connection.

dbus-fast (like dbus-next, issue 153) treats EAGAIN from ``send()`` as fatal.
The bus daemon is the reader of the sender's socket: stopping it (SIGSTOP)
while thousands of signals are sent makes the send buffer fill for certain,
and a small SO_SNDBUF makes it fill at once.  With the guard the connection
survives and a (slow) subscriber receives every signal, in order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any, cast

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from liveupd.service import writer_guard
from tests.dbus.buses import PrivateBus

COUNT = 5000
PAYLOAD = "x" * 1024
DEADLINE = 60.0


async def burst(bus: PrivateBus, *, guarded: bool) -> tuple[bool, list[int], int]:
    """(sender still connected, sequence numbers received, EAGAINs the guard absorbed)."""
    sender = await MessageBus(bus_address=bus.address).connect()
    guard = writer_guard.install(sender) if guarded else None
    assert not guarded or guard is not None, "the guard does not fit this dbus-fast"
    assert sender._sock is not None, "a connected bus has a socket"
    sender._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    reader = await MessageBus(bus_address=bus.address).connect()
    received: list[int] = []
    all_in = asyncio.get_running_loop().create_future()

    def on_message(msg: Message) -> bool:
        if msg.message_type is MessageType.SIGNAL and msg.member == "Burst":
            received.append(msg.body[0])
            if len(received) == COUNT and not all_in.done():
                all_in.set_result(None)
        return False

    reader.add_message_handler(on_message)
    reply = await reader.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="AddMatch",
            signature="s",
            body=[f"type='signal',sender='{sender.unique_name}',member='Burst'"],
        )
    )
    assert reply.message_type is MessageType.METHOD_RETURN

    sent: list[asyncio.Future[None]] = []
    if not guarded:
        # dbus-fast fails the send future of the message it dropped the connection on
        # and then raises from send() itself, so that future is nobody's to collect.
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
    # dbus-fast leaves wait_for_disconnect unannotated; it resolves to None on disconnect.
    wait_for_disconnect = cast(Callable[[], Coroutine[Any, Any, None]], sender.wait_for_disconnect)
    dropped = asyncio.ensure_future(wait_for_disconnect())
    os.kill(bus.proc.pid, signal.SIGSTOP)  # the bus daemon stops reading our socket
    try:
        for i in range(COUNT):
            msg = Message.new_signal("/burst", "org.liveupd.Test", "Burst", "us", [i, PAYLOAD])
            try:
                sent.append(sender.send(msg))
            except OSError:  # the connection is gone (its socket closed)
                break
    finally:
        os.kill(bus.proc.pid, signal.SIGCONT)

    await asyncio.wait({all_in, dropped}, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED)
    connected = not dropped.done()
    if connected:
        dropped.cancel()
    elif not dropped.cancelled():
        dropped.exception()
    eagain = guard.eagain_count if guard is not None else 0
    for fut in sent:  # collect the send errors of a dropped connection
        if fut.done() and not fut.cancelled():
            fut.exception()
    if connected:
        sender.disconnect()
    reader.disconnect()
    return connected, received, eagain


def test_burst_keeps_the_connection_and_every_signal(bus: PrivateBus) -> None:
    connected, received, eagain = asyncio.run(burst(bus, guarded=True))
    assert eagain > 0, "the burst never filled the send buffer: the test proves nothing"
    assert connected
    assert received == list(range(COUNT))


def test_without_the_guard_the_burst_drops_the_connection(bus: PrivateBus) -> None:
    """The control: the same burst on dbus-fast's own writer (the bug the guard fixes)."""
    connected, received, _ = asyncio.run(burst(bus, guarded=False))
    if connected:
        pytest.skip("this dbus-fast no longer drops the connection on EAGAIN; the guard may go")
    assert len(received) < COUNT
