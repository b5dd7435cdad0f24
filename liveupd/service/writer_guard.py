"""Keep the bus connection when its send buffer fills (dbus-next issue 153).

dbus-fast's message writer treats every exception from ``socket.send`` as
fatal, EAGAIN included: a burst of signals that fills the socket's send buffer
(a slow or busy bus daemon) drops the whole connection, and with it the bus
name.  ``GuardedWriter`` is the same writer with one change: EAGAIN (and EINTR)
means "wait until the socket is writable", nothing is lost and order is kept.

It also reports when a given reply has been written to the socket, which the
Execute method uses to hold the jump until its reply is out.

``_MessageWriter`` is private to dbus-fast, but the same (attributes and
methods) from 2.44 (Debian 13's) to 5.x: ``install`` checks what the guard
relies on and otherwise leaves the connection unguarded, saying why.  The
signal-burst test (tests/dbus/test_writer_guard.py) runs against both ends,
in the project's virtualenv and in the one pinned to Debian 13's versions
(``make check-debian13``).
"""

from __future__ import annotations

import array
import asyncio
import socket
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.aio.message_bus import _MessageWriter

from liveupd import logs

LOG = logs.get("writer")

_REQUIRED = (
    "messages",
    "buf",
    "offset",
    "unix_fds",
    "fut",
    "sock",
    "fd",
    "loop",
    "bus",
    "negotiate_unix_fd",
    "schedule_write",
)


def _resolve(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _fail(fut: asyncio.Future[None] | None, error: Exception) -> None:
    if fut is not None and not fut.done():
        fut.set_exception(error)


class GuardedWriter(_MessageWriter):
    """dbus-fast's writer, with EAGAIN meaning 'wait for POLLOUT', not 'disconnect'."""

    def __init__(self, bus: MessageBus) -> None:
        super().__init__(bus)
        self.eagain_count = 0
        self._reply_waiters: dict[tuple[str, int], asyncio.Future[None]] = {}

    # ------------------------------------------------------------- replies --

    def reply_written(self, destination: str, reply_serial: int) -> asyncio.Future[None]:
        """A future resolved once the reply to call ``reply_serial`` is in the socket."""
        fut: asyncio.Future[None] = self.loop.create_future()
        self._reply_waiters[(destination, reply_serial)] = fut
        return fut

    def buffer_message(self, msg: Message, future: asyncio.Future[None] | None = None) -> None:
        if self._reply_waiters and msg.message_type in (
            MessageType.METHOD_RETURN,
            MessageType.ERROR,
        ):
            waiter = self._reply_waiters.pop((msg.destination or "", msg.reply_serial), None)
            if waiter is not None:
                if future is None:
                    future = self.loop.create_future()
                future.add_done_callback(lambda f: _chain(f, waiter))
        super().buffer_message(msg, future)

    # --------------------------------------------------------------- write --

    def write_callback(self, remove_writer: bool = True) -> None:
        sock, fd = self.sock, self.fd
        if sock is None or fd is None:  # disconnected: nothing to write to
            return
        try:
            while True:
                if self.buf is None:
                    if not self.messages:
                        if remove_writer:
                            self.loop.remove_writer(fd)
                        return
                    buf, unix_fds, fut = self.messages.popleft()
                    self.unix_fds = unix_fds
                    self.buf = memoryview(buf)
                    self.offset = 0
                    self.fut = fut
                try:
                    if self.unix_fds and self.negotiate_unix_fd:
                        ancdata = [
                            (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", self.unix_fds))
                        ]
                        sent = sock.sendmsg([self.buf[self.offset :]], ancdata)
                        self.unix_fds = None  # the descriptors went with the first bytes
                    else:
                        sent = sock.send(self.buf[self.offset :])
                except (BlockingIOError, InterruptedError):
                    # The send buffer is full: resume when the socket is writable.
                    self.eagain_count += 1
                    self.loop.add_writer(fd, self.write_callback)
                    return
                self.offset += sent
                if self.offset < len(self.buf):
                    self.loop.add_writer(fd, self.write_callback)
                    return
                self.buf = None
                _resolve(self.fut)
        except Exception as e:
            if self.bus._user_disconnect:
                _resolve(self.fut)
            else:
                _fail(self.fut, e)
            self.bus._finalize(e)


def _chain(done: asyncio.Future[Any], waiter: asyncio.Future[None]) -> None:
    if waiter.done():
        return
    if done.cancelled():
        waiter.cancel()
    elif (error := done.exception()) is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(None)


def install(bus: MessageBus) -> GuardedWriter | None:
    """Replace ``bus``'s writer (after ``connect()``) with a GuardedWriter.

    Returns None, and logs why, if this dbus-fast's writer is not the one the
    guard was written for; the connection then works as before, unguarded.
    """
    old = getattr(bus, "_writer", None)
    if not isinstance(old, _MessageWriter) or not all(hasattr(old, a) for a in _REQUIRED):
        logs.event(LOG, "writer.unguarded", reason="unexpected dbus-fast message writer")
        return None
    if isinstance(old, GuardedWriter):
        return old
    new = GuardedWriter(bus)
    # Take over whatever the old writer still holds, in order.
    new.messages = old.messages
    new.buf, new.offset, new.unix_fds, new.fut = old.buf, old.offset, old.unix_fds, old.fut
    bus._writer = new
    if new.fd is not None:
        loop = asyncio.get_running_loop()
        loop.remove_writer(new.fd)
        if new.buf is not None or new.messages:
            loop.add_writer(new.fd, new.write_callback)
    return new
