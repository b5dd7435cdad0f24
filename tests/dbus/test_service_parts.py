"""The service's small parts on their own: boundary, exec gate, coalescing, sd_notify, options."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from liveupd import sdnotify
from liveupd.backends.base import Refusal
from liveupd.errors import Busy, InvalidArgument
from liveupd.service import caller, names, options, writer_guard
from liveupd.service.boundary import dbus_errors
from liveupd.service.dbustypes import Str, dbus_method
from liveupd.service.exec_gate import ExecGate, GatedKexec
from liveupd.service.transition_iface import COALESCE_INTERVAL, TransitionInterface
from liveupd.transition.phases import ExecMode, TransitionState
from tests.dbus.buses import PrivateBus

# --------------------------------------------------------------- boundary --


class Demo(ServiceInterface):
    def __init__(self, guard: writer_guard.GuardedWriter | None = None) -> None:
        super().__init__("org.liveupd.Demo")
        self.guard = guard
        self.replies: list[asyncio.Future[None]] = []
        self.done_at_return: list[bool] = []

    @dbus_method()
    @dbus_errors
    async def Crash(self) -> Str:
        raise RuntimeError("secret internals")

    @dbus_method()
    @dbus_errors
    async def Refuse(self) -> Str:
        raise Busy("busy now; try again later")

    @dbus_method()
    @dbus_errors
    async def Who(self) -> Str:
        call = caller.current()
        await asyncio.sleep(0)  # another call may run meanwhile
        return call.sender

    @dbus_method()
    @dbus_errors
    async def Reply(self) -> Str:
        assert self.guard is not None
        call = caller.current()
        fut = self.guard.reply_written(call.sender, call.serial)
        self.replies.append(fut)
        self.done_at_return.append(fut.done())
        return "here"


async def call(bus: MessageBus, member: str) -> Message:
    return await bus.call(
        Message(destination=SERVICE, path="/demo", interface="org.liveupd.Demo", member=member)
    )


SERVICE = "org.liveupd.Demo"


async def serve_demo(address: str) -> tuple[MessageBus, Demo]:
    bus = await MessageBus(bus_address=address).connect()
    guard = writer_guard.install(bus)
    caller.install(bus)
    demo = Demo(guard)
    bus.export("/demo", demo)
    await bus.request_name(SERVICE)
    return bus, demo


def test_unexpected_exceptions_become_named_errors(bus: PrivateBus) -> None:
    async def run() -> tuple[Message, Message]:
        server, _ = await serve_demo(bus.address)
        client = await MessageBus(bus_address=bus.address).connect()
        try:
            return await call(client, "Crash"), await call(client, "Refuse")
        finally:
            client.disconnect()
            server.disconnect()

    crash, refuse = asyncio.run(run())
    assert crash.message_type is MessageType.ERROR
    assert crash.error_name == "org.liveupd.LiveUpdate1.Error.Failed"
    assert "RuntimeError" in crash.body[0] and "journalctl -u liveupd" in crash.body[0]
    assert "secret internals" not in crash.body[0]
    assert refuse.error_name == "org.liveupd.LiveUpdate1.Error.Busy"
    assert refuse.body[0] == "busy now; try again later"


def unique_name(client: MessageBus) -> str:
    assert client.unique_name is not None, "a connected bus has a unique name"
    return client.unique_name


def test_each_call_sees_its_own_sender(bus: PrivateBus) -> None:
    async def run() -> list[tuple[str, str]]:
        server, _ = await serve_demo(bus.address)
        clients = [await MessageBus(bus_address=bus.address).connect() for _ in range(5)]
        try:
            replies = await asyncio.gather(*(call(c, "Who") for _ in range(20) for c in clients))
            expected = [unique_name(c) for _ in range(20) for c in clients]
            return [(r.body[0], e) for r, e in zip(replies, expected, strict=True)]
        finally:
            for c in clients:
                c.disconnect()
            server.disconnect()

    for got, want in asyncio.run(run()):
        assert got == want


def test_reply_written_resolves_once_the_reply_is_out(bus: PrivateBus) -> None:
    async def run() -> tuple[Demo, Message]:
        server, demo = await serve_demo(bus.address)
        client = await MessageBus(bus_address=bus.address).connect()
        try:
            reply = await call(client, "Reply")
            await asyncio.wait_for(demo.replies[0], 10)
            return demo, reply
        finally:
            client.disconnect()
            server.disconnect()

    demo, reply = asyncio.run(run())
    assert reply.body == ["here"]
    assert demo.done_at_return == [False]  # not before the method returned
    assert demo.replies[0].done() and demo.replies[0].exception() is None


# -------------------------------------------------------------- exec gate --


class FakeKexec:
    def __init__(self) -> None:
        self.jumped = threading.Event()
        self.gate_open_at_jump: bool | None = None
        self.watch: asyncio.Future[None] | None = None

    def refusals(self) -> list[Refusal]:
        return []

    def load(self, kernel: Any, cmdline: str) -> None:
        pass

    def unload(self) -> None:
        pass

    def is_loaded(self) -> bool:
        return True

    def jump(self, mode: ExecMode) -> None:
        assert self.watch is not None
        self.gate_open_at_jump = self.watch.done()
        self.jumped.set()


class WatchedGate(ExecGate):
    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        self.waiting.set()
        return await super().wait(timeout)


def test_the_jump_waits_for_the_reply() -> None:
    async def run() -> FakeKexec:
        loop = asyncio.get_running_loop()
        inner = FakeKexec()
        gate = WatchedGate()
        reply: asyncio.Future[None] = loop.create_future()
        inner.watch = reply
        gate.hold(reply)
        kexec = GatedKexec(inner, gate, loop, timeout=30)
        jump = asyncio.ensure_future(asyncio.to_thread(kexec.jump, ExecMode.DIRECT))
        await asyncio.wait_for(gate.waiting.wait(), 10)  # the jump is at the gate
        assert not inner.jumped.is_set()  # and held back by the reply
        reply.set_result(None)
        await asyncio.wait_for(jump, 10)
        return inner

    inner = asyncio.run(run())
    assert inner.gate_open_at_jump is True


def test_a_stuck_reply_delays_the_jump_only_until_the_timeout() -> None:
    async def run() -> tuple[FakeKexec, float]:
        loop = asyncio.get_running_loop()
        inner = FakeKexec()
        gate = ExecGate()
        stuck: asyncio.Future[None] = loop.create_future()
        inner.watch = stuck
        gate.hold(stuck)
        start = time.monotonic()
        await asyncio.wait_for(
            asyncio.to_thread(GatedKexec(inner, gate, loop, timeout=0.2).jump, ExecMode.DIRECT), 10
        )
        return inner, time.monotonic() - start

    inner, took = asyncio.run(run())
    assert inner.jumped.is_set() and inner.gate_open_at_jump is False
    assert took >= 0.2


# ------------------------------------------------------------- coalescing --


def test_progress_alone_is_coalesced_state_is_not() -> None:
    live = SimpleNamespace(
        phase="quiesce",
        progress=0,
        ctx=SimpleNamespace(
            target=None,
            journal=SimpleNamespace(
                state=TransitionState.RUNNING, record=SimpleNamespace(target=None)
            ),
        ),
    )
    registry = SimpleNamespace(
        manager=SimpleNamespace(transitions={"t1": live}), journal=lambda tid: None
    )

    async def run() -> list[dict[str, Any]]:
        obj = TransitionInterface("t1", registry)  # type: ignore[arg-type]
        sent: list[dict[str, Any]] = []
        flushed = asyncio.get_running_loop().create_future()

        def emit(
            changed_properties: dict[str, Any], invalidated_properties: list[str] | None = None
        ) -> None:
            sent.append(dict(changed_properties))
            if changed_properties.get("Progress") == 40 and not flushed.done():
                flushed.set_result(None)

        obj.emit_properties_changed = emit  # type: ignore[method-assign]
        obj.seen()
        for p in range(1, 41):
            live.progress = p
            obj.publish(coalesce=True)
        assert sent == []  # all held back
        await asyncio.wait_for(flushed, 10 * COALESCE_INTERVAL + 5)
        live.progress = 50
        obj.publish(coalesce=True)
        live.phase = "unbind"
        obj.publish()  # a phase change goes out at once, with the pending progress
        live.ctx.journal.state = TransitionState.EXEC
        obj.publish(coalesce=True)  # so does a state change, even when asked to coalesce
        return sent

    sent = asyncio.run(run())
    assert sent == [
        {"Progress": 40},
        {"Phase": "unbind", "Progress": 50},
        {"State": "exec"},
    ]


# --------------------------------------------------------------- sdnotify --


def test_sd_notify_datagrams(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.ready("x")  # outside systemd: nothing, no error
    for address in (str(tmp_path / "notify"), "@liveupd-test-notify-" + str(time.time_ns())):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        try:
            monkeypatch.setenv("NOTIFY_SOCKET", address)
            assert sdnotify.ready("Idle; running 6.1")
            assert sock.recv(4096) == b"READY=1\nSTATUS=Idle; running 6.1"
            assert sdnotify.status("two\nlines")
            assert sock.recv(4096) == b"STATUS=two lines"
        finally:
            sock.close()


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # for another process
    assert sdnotify.watchdog_interval() is None


# ---------------------------------------------------------------- options --


def test_options_are_checked() -> None:
    spec = {"append": "s", "interactive": "b"}
    assert options.parse("Stage", {"append": Variant("s", "quiet")}, spec) == {"append": "quiet"}
    with pytest.raises(InvalidArgument, match="unknown option 'apend'; the options are: append"):
        options.parse("Stage", {"apend": Variant("s", "x")}, spec)
    with pytest.raises(InvalidArgument, match="must be a boolean"):
        options.parse("Stage", {"interactive": Variant("s", "yes")}, spec)


def test_transition_paths() -> None:
    path = names.transition_path("20250101T000000_abcdef")
    assert path == "/org/liveupd/LiveUpdate1/transition/20250101T000000_abcdef"
    assert names.transition_id(path) == "20250101T000000_abcdef"
    assert names.transition_id("/org/liveupd/LiveUpdate1") is None
    with pytest.raises(ValueError, match="object path element"):
        names.transition_path("../x")


def test_dbus_error_passes_through() -> None:
    error = DBusError("org.example.Error.Mine", "mine")

    @dbus_errors
    async def raises() -> None:
        raise error

    with pytest.raises(DBusError) as info:
        asyncio.run(raises())
    assert info.value is error
