"""liveupctl and a liveupd that is slow to start: dbus-daemon's activation timeout.

dbus-daemon answers a call that bus-activates a service with TimedOut, without
delivering it, when the service has not taken its name within
service_start_timeout (25 s on the system bus; on a loaded machine liveupd can
need longer). The client sends such a call again. Here a private bus with a 1 s
limit activates a stand-in service that takes its name only once the test lets
it, after the first activation has timed out.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from liveupd.ctl.client import ACTIVATION_ATTEMPTS, BusChoice, Client, RemoteError
from liveupd.service import names
from tests.dbus.buses import SESSION_STYLE, PrivateBus, Processes, wait_until

# The tests' session-style bus, with a service directory and a 1 s activation limit.
ACTIVATABLE = SESSION_STYLE.replace(
    "</busconfig>",
    "  <servicedir>{services}</servicedir>\n"
    '  <limit name="service_start_timeout">1000</limit>\n'
    "</busconfig>",
)

# Records each start, waits for the gate, then serves CanLiveUpdate (one copy
# wins the name; a later copy finds it taken and exits).
STAND_IN = """
import asyncio, os, sys
from dbus_fast import RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, method

starts, gate = sys.argv[1], sys.argv[2]

class Manager(ServiceInterface):
    @method()
    def CanLiveUpdate(self) -> "s":
        return "yes"

async def main():
    with open(starts, "a") as f:
        f.write("start\\n")
    while not os.path.exists(gate):
        await asyncio.sleep(0.02)
    bus = await MessageBus().connect()
    bus.export("{path}", Manager("{interface}"))
    if await bus.request_name("{name}") is not RequestNameReply.PRIMARY_OWNER:
        return
    await bus.wait_for_disconnect()

asyncio.run(main())
"""


def activatable_bus(procs: Processes, tmp_path: Path) -> tuple[PrivateBus, Path, Path]:
    services = tmp_path / "services"
    services.mkdir()
    starts, gate = tmp_path / "starts", tmp_path / "gate"
    script = tmp_path / "stand_in.py"
    script.write_text(
        STAND_IN.format(
            path=names.OBJECT_PATH, interface=names.MANAGER_INTERFACE, name=names.BUS_NAME
        )
    )
    (services / f"{names.BUS_NAME}.service").write_text(
        f"[D-BUS Service]\nName={names.BUS_NAME}\nExec={sys.executable} {script} {starts} {gate}\n"
    )
    return PrivateBus(procs, ACTIVATABLE.replace("{services}", str(services))), starts, gate


async def can_live_update(address: str) -> str:
    client = await Client.connect(BusChoice(address=address))
    try:
        return await client.can_live_update()
    finally:
        client.close()


def test_a_call_whose_activation_timed_out_is_sent_again(procs: Processes, tmp_path: Path) -> None:
    bus, starts, gate = activatable_bus(procs, tmp_path)

    async def scenario() -> str:
        call = asyncio.ensure_future(can_live_update(bus.address))
        # A second start means the first activation timed out and the call was sent again.
        await asyncio.to_thread(
            wait_until,
            lambda: starts.exists() and starts.read_text().count("start") >= 2,
            "a second activation",
        )
        gate.touch()
        return await call

    assert asyncio.run(scenario()) == "yes"


def test_a_service_that_never_starts_is_reported_after_the_retries(
    procs: Processes, tmp_path: Path
) -> None:
    bus, starts, gate = activatable_bus(procs, tmp_path)
    try:
        with pytest.raises(RemoteError) as raised:
            asyncio.run(can_live_update(bus.address))
    finally:
        gate.touch()  # the stand-ins still waiting end (the bus is gone or taken)
    assert raised.value.name == "org.freedesktop.DBus.Error.TimedOut"
    assert "cannot reach liveupd" in raised.value.message
    assert starts.read_text().count("start") == ACTIVATION_ATTEMPTS
