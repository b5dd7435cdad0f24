"""systemd units over D-Bus (org.freedesktop.systemd1): which are active, stop, start.

The remote-login listeners (``ssh.socket``, ``ssh.service``) are stopped before
the sessions are ended, so that no new login starts while the network is still
up, and started again if the transition rolls back.  Each is a method call or
two on the system bus connection the sessions backend has open (logind.py);
under emulation a ``systemctl`` process cost about a quarter of a second, and
Execute ran three (issue 19).

A stop or a start returns once systemd's job has finished, as ``systemctl
stop`` does: systemd sends ``JobRemoved`` (with the job's result) to the client
that queued the job, which it tracks, so no ``Subscribe`` is needed.  The match
for that signal is added before the job is queued, and every result is kept by
job path, so a job that ends before its reply is read is not missed.  Unit names
were validated (``validation.UNIT_NAME_PATTERN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbus_fast import Message
    from dbus_fast.aio import MessageBus

SYSTEMD1 = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
BUS = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
TIMEOUT = 30.0  # seconds for one stop or start job
JOB_REMOVED = (
    f"type='signal',sender='{SYSTEMD1}',interface='{MANAGER}',member='JobRemoved',"
    f"path='{MANAGER_PATH}'"
)
# ActiveState values (systemd.unit(5)) that `systemctl is-active` counts as active;
# every other known one is not active.
ACTIVE = frozenset({"active", "reloading", "refreshing"})
NOT_ACTIVE = frozenset({"inactive", "failed", "activating", "deactivating", "maintenance"})


async def _call(
    bus: MessageBus, member: str, signature: str = "", body: list[Any] | None = None, *,
    destination: str = SYSTEMD1, path: str = MANAGER_PATH, interface: str = MANAGER,
) -> Message:  # fmt: skip
    from dbus_fast import Message

    return await bus.call(
        Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
    )


def _failed(reply: Message) -> bool:
    from dbus_fast import MessageType

    return reply.message_type is MessageType.ERROR


def _check(reply: Message, what: str) -> Message:
    if _failed(reply):
        detail = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise OSError(errno.EIO, f"systemd: {what}: {reply.error_name} {detail[:200]}".strip())
    return reply


async def active_units(bus: MessageBus, units: Sequence[str]) -> list[str]:
    """Those of ``units`` systemd has active, in their order, from one ``ListUnitsByNames``.

    systemd answers one entry per (valid) name, in the order asked, loading a unit it
    had not loaded: one it cannot find is "not-found" and inactive, i.e. not active, as
    `systemctl is-active` says.  An entry's name is the unit's own, not an alias asked
    for, so entries are matched by position.
    """
    reply = _check(await _call(bus, "ListUnitsByNames", "as", [list(units)]), "ListUnitsByNames")
    rows = reply.body[0]
    if len(rows) != len(units):
        raise OSError(
            errno.EIO, f"systemd: ListUnitsByNames answered {len(rows)} units for {len(units)}"
        )
    active = []
    for unit, row in zip(units, rows, strict=True):
        state = str(row[3])
        if state in ACTIVE:
            active.append(unit)
        elif state not in NOT_ACTIVE:
            raise OSError(errno.EIO, f"systemd: {unit} is in an unknown state {state[:40]!r}")
    return active


async def stop_unit(bus: MessageBus, unit: str) -> None:
    await _job(bus, "StopUnit", unit)


async def start_unit(bus: MessageBus, unit: str) -> None:
    await _job(bus, "StartUnit", unit)


async def _job(bus: MessageBus, member: str, unit: str) -> None:
    """``member`` (StopUnit, StartUnit) of ``unit`` in mode "replace", and wait for its job."""
    from dbus_fast import MessageType

    results: dict[str, str] = {}  # job path -> result, of every JobRemoved seen
    ended = asyncio.Event()

    def on_message(msg: Message) -> None:
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.interface == MANAGER
            and msg.member == "JobRemoved"
            and msg.signature == "uoss"
        ):
            results[str(msg.body[1])] = str(msg.body[3])
            ended.set()

    what = f"{member}({unit})"
    bus.add_message_handler(on_message)
    try:
        _check(
            await _call(bus, "AddMatch", "s", [JOB_REMOVED], destination=BUS, path=BUS_PATH,
                        interface=BUS),
            "AddMatch for JobRemoved",
        )  # fmt: skip
        try:
            job = str(_check(await _call(bus, member, "ss", [unit, "replace"]), what).body[0])
            async with asyncio.timeout(TIMEOUT):
                while job not in results:
                    ended.clear()
                    await ended.wait()
        except TimeoutError:
            raise OSError(
                errno.ETIMEDOUT, f"systemd: {what}: its job did not finish in {TIMEOUT:.0f} s"
            ) from None
        finally:
            # A broken connection takes its matches with it.
            with contextlib.suppress(Exception):
                await _call(bus, "RemoveMatch", "s", [JOB_REMOVED], destination=BUS,
                            path=BUS_PATH, interface=BUS)  # fmt: skip
    finally:
        bus.remove_message_handler(on_message)
    if results[job] != "done":
        raise OSError(errno.EIO, f"systemd: {what}: the job ended {results[job][:40]!r}")
