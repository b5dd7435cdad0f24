"""Serve org.liveupd.LiveUpdate1: connect, export, own the name, recover, run.

Start-up order, for ``Type=notify``: connect; export the Manager object (it
holds changes back until it is ready); own the name; recover what a previous
run left behind (``Manager.start()``; ``Recovered`` is signalled for each
transition verified on this new kernel); then READY=1.  The name is owned
before recovery so that the Recovered signals go out under it.

polkit and logind are asked on the same connection: on the system bus they
are the real services; with ``--session`` or ``--bus ADDRESS`` (tests) they are
whatever serves those names on that bus (python-dbusmock's templates), and a
non-root caller is denied when nothing does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal

from dbus_fast import BusType, DBusError, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus

from liveupd import logs, memory, sdnotify
from liveupd.backends.base import Backends
from liveupd.config import Config
from liveupd.errors import ExitCode, Failed
from liveupd.manager import Manager
from liveupd.service import caller, names, writer_guard
from liveupd.service.auth import Authorizer
from liveupd.service.exec_gate import ExecGate, GatedKexec
from liveupd.service.manager_iface import ManagerInterface, ServiceParts
from liveupd.service.polkit import Authority
from liveupd.service.refusals import REFUSALS
from liveupd.service.signals import SignalRouter
from liveupd.service.transition_iface import TransitionRegistry
from liveupd.transition.history import CORRUPT
from liveupd.transition.phases import TransitionState

LOG = logs.get("server")


async def connect(bus: str) -> MessageBus:
    """``system``, ``session``, or a D-Bus address."""
    if bus == "system":
        conn = MessageBus(bus_type=BusType.SYSTEM)
    elif bus == "session":
        conn = MessageBus(bus_type=BusType.SESSION)
    else:
        conn = MessageBus(bus_address=bus)
    try:
        return await conn.connect()
    except Exception as e:
        raise Failed(
            f"cannot connect to the {bus} bus: {e}; make sure the D-Bus daemon is running "
            "(systemctl status dbus)"
        ) from e


async def serve(config: Config, backends: Backends, *, bus: str = "system") -> int:
    # Large blocks (a staged kernel, a caller's oversized message) go back to the
    # kernel when freed, instead of staying in the daemon's heap.
    memory.fixed_mmap_threshold()
    loop = asyncio.get_running_loop()
    gate = ExecGate()
    backends = dataclasses.replace(backends, kexec=GatedKexec(backends.kexec, gate, loop))
    # A dry run rehearses the new boot after the simulated jump (manager.py), unless
    # its machine's description says the jump halts it (after_jump).
    manager = Manager(config, backends, rehearse=backends.simulated_boot is not None)

    conn = await connect(bus)
    guard = writer_guard.install(conn)
    caller.install(conn)
    registry = TransitionRegistry(conn, manager)
    iface = ManagerInterface(
        ServiceParts(
            bus=conn,
            manager=manager,
            authorizer=Authorizer(conn, Authority(conn)),
            registry=registry,
            gate=gate,
            guard=guard,
            status=sdnotify.status,
        )
    )
    conn.export(names.OBJECT_PATH, iface)
    unsubscribe = manager.subscribe(SignalRouter(iface, registry))
    try:
        return await _run(conn, manager, iface, registry, bus=bus, dry_run=backends.dry_run)
    finally:
        unsubscribe()
        conn.disconnect()


async def _run(
    conn: MessageBus,
    manager: Manager,
    iface: ManagerInterface,
    registry: TransitionRegistry,
    *,
    bus: str,
    dry_run: bool,
) -> int:
    # Past transitions are objects before the name is owned: the call that
    # bus-activated us may be a Get on one of them, delivered as soon as we own it.
    for entry in manager.history():
        if entry["state"] != CORRUPT:  # a corrupt journal has no object, only a history entry
            registry.get(str(entry["id"]))
    # LatestKernel is searched for from now on, not by the reads dbus-fast makes at
    # export: it wraps an async getter in a task whose body runs on the next turn of
    # the loop, so one turn runs them (unnamed: no search) before the flag is set.
    # The flag must be set before the name is requested: the call that
    # bus-activated us is dispatched as soon as the name is ours, before the code
    # after _request_name runs (it read "" there: CI, test_fleet).
    await asyncio.sleep(0)
    iface.named = True
    reply = await _request_name(conn, bus)
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        raise Failed(
            f"{names.BUS_NAME} is owned by another process already; is liveupd running "
            "(systemctl status liveupd)? Stop it first."
        )
    logs.event(
        LOG,
        "service.name-owned",
        name=names.BUS_NAME,
        unique=conn.unique_name,
        bus=bus,
        dry_run=dry_run,
    )

    # Those liveupd-verify.service verified on this boot before we started are
    # announced with Recovered at once: update managers wait for it, and our own
    # recovery (below) may take long.
    boot_id = manager.backends.system.boot_id()
    announced = _announce_verified(manager, registry, iface, boot_id, set())
    sdnotify.status("Recovering unfinished transitions")
    iface.seen()
    await manager.start()
    # Transitions recovery created are objects too, and those it verified on this
    # boot are announced as well.
    _announce_verified(manager, registry, iface, boot_id, announced)
    iface.set_ready()
    iface.publish()
    sdnotify.ready(iface.status_text())
    logs.event(LOG, "service.ready", state=str(manager.state))

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    watchdog = asyncio.create_task(sdnotify.watchdog())
    stopped = asyncio.create_task(stop.wait())
    dropped = asyncio.create_task(_disconnected(conn))
    try:
        await asyncio.wait({stopped, dropped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        iface.stopping = True
        sdnotify.stopping("Stopping")
        for task in (watchdog, stopped, dropped):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await dropped
    REFUSALS.flush()  # the refusals counted but not logged yet
    if stop.is_set():
        logs.event(LOG, "service.stopping", state=str(manager.state))
        await manager.shutdown()
        return int(ExitCode.OK)
    logs.event(
        LOG,
        "service.bus-lost",
        level=logging.ERROR,
        state=str(manager.state),
        hint="systemd restarts liveupd; a running transition is rolled back",
    )
    await manager.shutdown()
    return int(ExitCode.FAILED)


def _announce_verified(
    manager: Manager,
    registry: TransitionRegistry,
    iface: ManagerInterface,
    boot_id: str,
    announced: set[str],
) -> set[str]:
    """Recovered for each transition verified on this boot and not in ``announced``."""
    done = set(announced)
    for entry in reversed(manager.history()):
        tid = str(entry["id"])
        if entry["state"] == CORRUPT:
            continue
        obj = registry.get(tid)
        verification = entry.get("verification") or {}
        if (
            tid not in done
            and verification.get("boot_id") == boot_id
            and "finished" in verification
        ):
            ok = entry["state"] == TransitionState.COMPLETED
            iface.Recovered(obj.path, ok, obj.report())
            logs.event(
                LOG,
                "service.recovered-signalled",
                level=logging.INFO if ok else logging.WARNING,
                transition=tid,
                ok=ok,
                state=str(entry["state"]),
            )
            done.add(tid)
    return done


async def _request_name(conn: MessageBus, bus: str) -> RequestNameReply:
    """Own the name; a refusal by the bus (its policy) is a clear error, not a traceback."""
    try:
        return await conn.request_name(names.BUS_NAME, NameFlag.DO_NOT_QUEUE)
    except DBusError as e:
        where = f"the {bus} bus" if bus in ("system", "session") else f"the bus at {bus}"
        raise Failed(
            f"{where} refused liveupd the name {names.BUS_NAME} ({e.type}: {e.text}). "
            "On the system bus only root may own it: run liveupd as root, and check that "
            f"its bus policy is installed (/usr/share/dbus-1/system.d/{names.BUS_NAME}.conf) "
            "and that dbus has reloaded it (systemctl reload dbus)"
        ) from None


async def _disconnected(conn: MessageBus) -> None:
    await conn.wait_for_disconnect()  # type: ignore[no-untyped-call]
