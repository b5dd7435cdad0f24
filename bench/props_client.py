"""Load generator: CLIENTS connections, each reading one property in a loop.

Standalone on purpose (standard library and dbus-fast only): the benchmark
also copies it into the guest and runs it with the guest's python3.

    python3 props_client.py ADDRESS|system CLIENTS SECONDS [PROPERTY] [--procs N]

Each connection calls org.freedesktop.DBus.Properties.Get on the manager and
waits for the reply before the next call (one call in flight per client).
After a 0.5 s warm-up the calls completed in SECONDS are counted.  With
``--procs N`` the clients are spread over N processes (so the client side is
not one Python thread).  Prints one JSON object: calls, seconds, rate,
errors, median and 99th percentile latency in ms.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

NAME = "org.liveupd.LiveUpdate1"
PATH = "/org/liveupd/LiveUpdate1"
MANAGER = "org.liveupd.LiveUpdate1.Manager"
WARMUP = 0.5


async def _connect(address: str) -> MessageBus:
    if address == "system":
        return await MessageBus(bus_type=BusType.SYSTEM).connect()
    return await MessageBus(bus_address=address).connect()


async def _client(
    bus: MessageBus, prop: str, start: float, stop: float, lat: list[float], errors: list[str]
) -> None:
    msg = Message(
        destination=NAME,
        path=PATH,
        interface="org.freedesktop.DBus.Properties",
        member="Get",
        signature="ss",
        body=[MANAGER, prop],
    )
    while True:
        t0 = time.monotonic()
        if t0 >= stop:
            return
        reply = await bus.call(msg)
        t1 = time.monotonic()
        if reply is None or reply.message_type is MessageType.ERROR:
            errors.append(str(reply.error_name if reply else "no reply"))
        elif t0 >= start:
            lat.append(t1 - t0)


async def _run(address: str, clients: int, seconds: float, prop: str) -> dict[str, Any]:
    buses = [await _connect(address) for _ in range(clients)]
    lat: list[float] = []
    errors: list[str] = []
    start = time.monotonic() + WARMUP
    stop = start + seconds
    await asyncio.gather(*(_client(b, prop, start, stop, lat, errors) for b in buses))
    for b in buses:
        b.disconnect()
    return {"calls": len(lat), "seconds": seconds, "errors": len(errors), "latencies": lat}


def _finish(parts: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    lat = sorted(x for p in parts for x in p["latencies"])
    calls = len(lat)
    return {
        "calls": calls,
        "seconds": seconds,
        "rate": calls / seconds if seconds else 0.0,
        "errors": sum(int(p["errors"]) for p in parts),
        "latency_median_ms": statistics.median(lat) * 1000 if lat else None,
        "latency_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else None,
    }


def main(argv: list[str]) -> int:
    procs = 1
    if "--procs" in argv:
        i = argv.index("--procs")
        procs = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
    if "--raw" in argv:  # a worker: print its raw result
        argv = [a for a in argv if a != "--raw"]
        address, clients, seconds = argv[0], int(argv[1]), float(argv[2])
        prop = argv[3] if len(argv) > 3 else "State"
        print(json.dumps(asyncio.run(_run(address, clients, seconds, prop))))
        return 0
    address, clients, seconds = argv[0], int(argv[1]), float(argv[2])
    prop = argv[3] if len(argv) > 3 else "State"
    if procs <= 1:
        parts = [asyncio.run(_run(address, clients, seconds, prop))]
    else:
        shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, address, str(n), str(seconds), prop, "--raw"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in shares
            if n > 0
        ]
        parts = [json.loads(w.communicate()[0]) for w in workers]
    out = _finish(parts, seconds)
    out.update(clients=clients, procs=procs, property=prop)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
