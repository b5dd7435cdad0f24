"""A plain D-Bus client of org.liveupd.LiveUpdate1 (nothing in-process).

Errors from the daemon come back as ``RemoteError`` carrying the D-Bus error
name, the daemon's message (which says what to do) and the exit code that
name maps to (``liveupd.errors``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from liveupd.errors import ExitCode, error_for_dbus_name
from liveupd.service import names

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
PROPERTIES = "org.freedesktop.DBus.Properties"

# The daemon is not there (not installed, not running, crashed, or went into the new kernel).
UNREACHABLE = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoReply",
        "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.TimedOut",
        "org.freedesktop.DBus.Error.Spawn.ChildExited",
        "org.freedesktop.DBus.Error.Spawn.Failed",
    }
)
NOT_AUTHORIZED = frozenset(
    {names.ACCESS_DENIED, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"}
)

# dbus-daemon gives up on a bus activation after 25 s (service_start_timeout) and
# answers TimedOut without delivering the call; systemd keeps starting the service.
# On a slow or loaded machine liveupd can need longer to own its name, so such a
# call is sent again (it never reached liveupd: nothing is done twice).
ACTIVATION_ATTEMPTS = 3
CALL_TIMEOUT = 120.0  # Stage checks and loads a kernel; Cancel rolls back
INTERACTIVE_TIMEOUT = 330.0  # a human types a password into a polkit agent


class RemoteError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message

    @property
    def exit_code(self) -> ExitCode:
        if self.name in NOT_AUTHORIZED:
            return ExitCode.NOT_AUTHORIZED
        if self.name in UNREACHABLE:
            return ExitCode.FAILED
        return error_for_dbus_name(self.name).exit_code

    @property
    def unreachable(self) -> bool:
        return self.name in UNREACHABLE


@dataclass(frozen=True)
class BusChoice:
    """``system`` (default), ``session``, or a D-Bus address."""

    kind: str = "system"
    address: str = ""

    def describe(self) -> str:
        return f"bus at {self.address}" if self.address else f"{self.kind} bus"


@dataclass(frozen=True)
class Kernel:
    release: str
    kernel: str
    initrd: str
    running: bool
    source: str = ""  # uki, bls, boot, modules
    title: str = ""
    profiles: tuple[str, ...] = ()
    image: str = ""
    stageable: bool = True
    problem: str = ""  # why Stage would refuse it
    warnings: tuple[str, ...] = ()
    latest: bool = False
    quarantined: str = ""  # why: a transition fell back from it ("" when it is not)
    quarantine_transition: str = ""  # that transition's id

    @classmethod
    def from_details(cls, row: dict[str, Any]) -> Kernel:
        """One ListKernelDetails dictionary (variants unwrapped)."""
        return cls(
            release=str(row.get("release", "")),
            kernel=str(row.get("kernel", "")),
            initrd=str(row.get("initrd", "")),
            running=bool(row.get("running", False)),
            source=str(row.get("source", "")),
            title=str(row.get("title", "")),
            profiles=tuple(str(p) for p in row.get("profiles", [])),
            image=str(row.get("image", "")),
            stageable=bool(row.get("stageable", True)),
            problem=str(row.get("problem", "")),
            warnings=tuple(str(w) for w in row.get("warnings", [])),
            latest=bool(row.get("latest", False)),
            quarantined=str(row.get("quarantined", "")),
            quarantine_transition=str(row.get("quarantine-transition", "")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "kernel": self.kernel,
            "initrd": self.initrd or None,
            "running": self.running,
            "source": self.source,
            "title": self.title or None,
            "profiles": list(self.profiles),
            "image": self.image or None,
            "stageable": self.stageable,
            "problem": self.problem or None,
            "warnings": list(self.warnings),
            "latest": self.latest,
            "quarantined": self.quarantined or None,
            "quarantine_transition": self.quarantine_transition or None,
        }


@dataclass(frozen=True)
class Quarantined:
    """A kernel a transition fell back from (ListQuarantine)."""

    release: str
    kernel: str
    transition: str
    reason: str
    since: float

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "kernel": self.kernel or None,
            "transition": self.transition,
            "reason": self.reason,
            "since": self.since,
        }


def unwrap(value: Any) -> Any:
    """Plain Python values from Variants (recursively)."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def _activation_timed_out(reply: Message) -> bool:
    """The bus gave up waiting for liveupd to start (the call was not delivered)."""
    return (
        reply.message_type is MessageType.ERROR
        and reply.error_name == "org.freedesktop.DBus.Error.TimedOut"
        and bool(reply.body)
        and str(reply.body[0]).startswith(("Failed to activate service", "Activation of"))
    )


class Client:
    def __init__(self, bus: MessageBus, choice: BusChoice | None = None) -> None:
        self.bus = bus
        self.choice = choice or BusChoice()

    @classmethod
    async def connect(cls, choice: BusChoice) -> Client:
        try:
            # Creating the bus parses its address (DBUS_SESSION_BUS_ADDRESS for the
            # session bus): a missing or bad one fails here, not in connect().
            if choice.address:
                bus = MessageBus(bus_address=choice.address)
            elif choice.kind == "session":
                bus = MessageBus(bus_type=BusType.SESSION)
            else:
                bus = MessageBus(bus_type=BusType.SYSTEM)
            await bus.connect()
        except Exception as e:
            raise RemoteError(
                "org.freedesktop.DBus.Error.Disconnected",
                f"cannot connect to the {choice.describe()}: {e}; is D-Bus running?",
            ) from e
        return cls(bus, choice)

    def close(self) -> None:
        self.bus.disconnect()

    # -------------------------------------------------------------- calls --

    async def call(
        self,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        path: str = names.OBJECT_PATH,
        interface: str = names.MANAGER_INTERFACE,
        destination: str = names.BUS_NAME,
        interactive: bool = False,
        timeout: float | None = None,
    ) -> list[Any]:
        def message() -> Message:
            return Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
                flags=(
                    MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag.NONE
                ),
            )

        limit = timeout or (INTERACTIVE_TIMEOUT if interactive else CALL_TIMEOUT)
        reply = await self._send(message(), member, limit)
        for _ in range(ACTIVATION_ATTEMPTS - 1):
            if not _activation_timed_out(reply):
                break
            reply = await self._send(message(), member, limit)
        if reply.message_type is MessageType.ERROR:
            text = str(reply.body[0]) if reply.body else (reply.error_name or "")
            name = reply.error_name or ""
            if name in UNREACHABLE and destination == names.BUS_NAME:
                text = (
                    f"cannot reach liveupd ({names.BUS_NAME}) on the {self.choice.describe()}: "
                    f"{text}. Is it installed and running (systemctl status liveupd)?"
                )
            raise RemoteError(name, text)
        return list(reply.body)

    async def _send(self, msg: Message, member: str, limit: float) -> Message:
        try:
            reply = await asyncio.wait_for(self.bus.call(msg), limit)
        except TimeoutError:
            raise RemoteError(
                "org.freedesktop.DBus.Error.TimedOut",
                f"{member}: no answer from liveupd within {limit:.0f} s; "
                "check 'systemctl status liveupd'",
            ) from None
        except Exception as e:
            raise RemoteError(
                "org.freedesktop.DBus.Error.Disconnected",
                f"{member}: the connection to the bus was lost ({e})",
            ) from e
        return reply

    async def properties(
        self, path: str = names.OBJECT_PATH, interface: str = names.MANAGER_INTERFACE
    ) -> dict[str, Any]:
        body = await self.call("GetAll", "s", [interface], path=path, interface=PROPERTIES)
        props = unwrap(body[0])
        assert isinstance(props, dict)
        return props

    async def transition(self, path: str) -> dict[str, Any]:
        return await self.properties(path, names.TRANSITION_INTERFACE)

    async def can_live_update(self) -> str:
        return str((await self.call("CanLiveUpdate"))[0])

    async def list_kernels(self) -> list[tuple[str, str, str, bool]]:
        """ListKernels: (release, kernel, initrd, running) of each installed kernel."""
        rows = (await self.call("ListKernels"))[0]
        return [(str(r), str(k), str(i), bool(u)) for r, k, i, u in rows]

    async def kernels(self) -> list[Kernel]:
        """Installed kernels, UKIs included, with whether Stage would take each."""
        rows = (await self.call("ListKernelDetails"))[0]
        return [Kernel.from_details(unwrap(r)) for r in rows]

    async def stage(
        self,
        kernel: str = "",
        *,
        initrd: str = "",
        cmdline: str = "",
        append: str = "",
        sha256: str = "",
        interactive: bool = False,
        profile: str = "",
    ) -> tuple[str, str]:
        options: dict[str, Variant] = {}
        if append:
            options["append"] = Variant("s", append)
        if sha256:
            options["sha256"] = Variant("s", sha256)
        if profile:
            options["profile"] = Variant("s", profile)
        if interactive:
            options["interactive"] = Variant("b", True)
        tid, path = await self.call(
            "Stage",
            "sssa{sv}",
            [kernel, initrd, cmdline, options],
            interactive=interactive,
        )
        return str(tid), str(path)

    async def execute(
        self, *, mode: str = "direct", ignore_inhibitors: bool = False, interactive: bool = False
    ) -> tuple[str, str]:
        options: dict[str, Variant] = {"mode": Variant("s", mode)}
        if ignore_inhibitors:
            options["ignore-inhibitors"] = Variant("b", True)
        if interactive:
            options["interactive"] = Variant("b", True)
        tid, path = await self.call("Execute", "a{sv}", [options], interactive=interactive)
        return str(tid), str(path)

    async def cancel(self, *, interactive: bool = False) -> None:
        await self.call("Cancel", interactive=interactive)

    async def quarantine(self) -> tuple[list[Quarantined], str]:
        """Kernels transitions fell back from, and why the list cannot be read ("")."""
        rows, problem = await self.call("ListQuarantine")
        kernels = [Quarantined(str(r), str(k), str(t), str(w), float(s)) for r, k, t, w, s in rows]
        return kernels, str(problem)

    async def clear_quarantine(self, release: str = "", *, interactive: bool = False) -> list[str]:
        """Lift the quarantine of ``release`` ("": every kernel); the releases lifted."""
        body = await self.call("ClearQuarantine", "s", [release], interactive=interactive)
        return [str(r) for r in body[0]]

    async def blockers(self) -> list[tuple[str, str]]:
        rows = (await self.call("ListBlockers"))[0]
        return [(str(kind), str(message)) for kind, message in rows]

    async def history(self, limit: int = 0) -> list[dict[str, Any]]:
        text = (await self.call("GetHistory", "u", [limit]))[0]
        data = json.loads(text)
        assert isinstance(data, list)
        return data

    # ------------------------------------------------------------ signals --

    async def watch(self, handler: Callable[[Message], None]) -> None:
        """Deliver liveupd's signals, and its name vanishing, to ``handler``."""
        rules = [
            f"type='signal',sender='{names.BUS_NAME}',path_namespace='{names.OBJECT_PATH}'",
            f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',"
            f"member='NameOwnerChanged',arg0='{names.BUS_NAME}'",
        ]

        def on_message(msg: Message) -> bool:
            if msg.message_type is MessageType.SIGNAL:
                handler(msg)
            return False

        self.bus.add_message_handler(on_message)
        for rule in rules:
            await self.call(
                "AddMatch", "s", [rule], destination=DBUS_NAME, path=DBUS_PATH, interface=DBUS_NAME
            )

    async def disconnected(self) -> None:
        """Return when the bus connection is gone (for any reason)."""
        try:
            await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        except Exception:
            return
