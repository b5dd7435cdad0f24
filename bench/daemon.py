"""The daemon on the host: start-up to bus name, idle memory, property reads per second.

A private dbus-daemon (tests/dbus/buses.py) and ``liveupd --dry-run --bus
ADDRESS``, as the D-Bus tests start it.  For each start: the host time from
spawning the process to its bus name appearing (a NameOwnerChanged signal we
subscribed to beforehand) and to READY=1 on its notify socket; then, idle,
its RSS and PSS.  Then property reads (``Get State``) with 1 and 16
concurrent clients (bench/props_client.py), with the CPU time the daemon and
the bus daemon used meanwhile, so one can tell which side was the limit.

    python -m bench.daemon [--starts N] [--seconds S] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dbus_fast import Message
from dbus_fast.aio import MessageBus

from bench.stats import Summary
from tests.dbus.buses import BUS_NAME, PrivateBus, processes
from tests.kernels import install_kernel

PROPS_CLIENT = Path(__file__).with_name("props_client.py")
TARGET = "6.1.0-56-cloud-amd64"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory(pid: int) -> dict[str, float]:
    """RSS (status VmRSS) and PSS (smaps_rollup) in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_mib"] = int(line.split()[1]) / 1024
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def _write_config(root: Path) -> Path:
    boot = root / "boot"
    install_kernel(boot, TARGET)
    hooks = root / "hooks.d"
    hooks.mkdir()
    conf = root / "liveupd.conf"
    conf.write_text(
        f'[kernel]\nallowed-dirs = ["{boot}"]\n[hooks]\ndirs = ["{hooks}"]\n'
        f'[daemon]\nstate-dir = "{root / "state"}"\n'
    )
    return conf


async def _start_once(address: str, conf: Path, state: Path, log: Path) -> dict[str, Any]:
    """Spawn the daemon; host seconds to its name on the bus and to READY=1."""
    watcher = await MessageBus(bus_address=address).connect()
    owned = asyncio.get_running_loop().create_future()
    spawned: list[int] = []  # the daemon's pid, once spawned

    def on_message(msg: Message) -> None:
        if (
            msg.member == "NameOwnerChanged"
            and msg.body
            and msg.body[0] == BUS_NAME
            and msg.body[2]
            and not owned.done()
        ):
            # Its CPU time then too: on a busy host less noisy than the wall time.
            owned.set_result((time.monotonic(), cpu_seconds(spawned[0]) if spawned else None))

    watcher.add_message_handler(on_message)
    await watcher.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="AddMatch",
            signature="s",
            body=[
                "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
                f"arg0='{BUS_NAME}'"
            ],
        )
    )
    notify_path = Path(tempfile.mkdtemp(prefix="liveupd-bench-notify-")) / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.setblocking(False)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), DBUS_SYSTEM_BUS_ADDRESS=address)
    argv = [
        sys.executable,
        "-m",
        "liveupd.daemon.main",
        "--dry-run",
        "--bus",
        address,
        "--config",
        str(conf),
        "--state-dir",
        str(state),
    ]
    with log.open("a") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    spawned.append(proc.pid)
    loop = asyncio.get_running_loop()
    ready_at: float | None = None
    deadline = t0 + 60
    try:
        while ready_at is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"liveupd exited ({proc.returncode}); see {log}")
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.5)
            except TimeoutError:
                continue
            if b"READY=1" in data:
                ready_at = time.monotonic()
        owned_at, owned_cpu = await asyncio.wait_for(owned, max(0.1, deadline - time.monotonic()))
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        sock.close()
        notify_path.unlink(missing_ok=True)
        notify_path.parent.rmdir()
        watcher.disconnect()
    return {
        "proc": proc,
        "name_owned_s": owned_at - t0,
        "name_owned_cpu_s": owned_cpu,
        "ready_s": (ready_at - t0) if ready_at is not None else None,
    }


def parse_importtime(text: str, top: int = 10) -> dict[str, Any]:
    """``python -X importtime`` output -> self time by top-level package and liveupd module."""
    by_package: dict[str, float] = {}
    modules: list[tuple[float, str]] = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            self_us = int(parts[0].split(":", 1)[1])
        except ValueError:
            continue  # the header line
        name = parts[2].strip()
        root = name.split(".")[0]
        by_package[root] = by_package.get(root, 0.0) + self_us / 1000
        if root == "liveupd":
            modules.append((self_us / 1000, name))
    total = sum(by_package.values())
    packages = sorted(by_package.items(), key=lambda kv: -kv[1])[:top]
    return {
        "total_ms": total,
        "by_package": [{"package": k, "self_ms": v} for k, v in packages],
        "liveupd_modules": [
            {"module": n, "self_ms": ms} for ms, n in sorted(modules, reverse=True)[:top]
        ],
    }


def importtime(address: str, conf: Path, state: Path, log: Path) -> dict[str, Any]:
    """Start the daemon once under ``-X importtime``; what its imports cost."""
    argv = [sys.executable, "-X", "importtime", "-m", "liveupd.daemon.main", "--dry-run"]
    argv += ["--bus", address, "--config", str(conf), "--state-dir", str(state)]
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=out, env=env)
    try:
        deadline = time.monotonic() + 60
        while "service.name-owned" not in log.read_text() and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        _stop(proc)
    return parse_importtime(log.read_text())


IMPORT_SETS = (
    ("the interpreter", ""),
    ("+ asyncio, dbus_fast", "asyncio,dbus_fast.aio"),
    ("+ liveupd.config", "asyncio,dbus_fast.aio,liveupd.config.load"),
    ("+ liveupd.service.server (the daemon)", "liveupd.service.server,liveupd.backends.dryrun"),
)


def import_rss(repeat: int = 3) -> list[dict[str, Any]]:
    """RSS and import time of a fresh interpreter after importing each set of modules."""
    code = (
        "import importlib, sys, time; t = time.perf_counter()\n"
        "for m in filter(None, sys.argv[1].split(',')): importlib.import_module(m)\n"
        "t = time.perf_counter() - t\n"
        "rss = next(l for l in open('/proc/self/status') if l.startswith('VmRSS'))\n"
        "print(t, int(rss.split()[1]) / 1024)"
    )
    out = []
    for label, mods in IMPORT_SETS:
        times, rss = [], []
        for _ in range(repeat):
            res = subprocess.run(
                [sys.executable, "-c", code, mods], capture_output=True, text=True, check=True
            )
            t, r = res.stdout.split()
            times.append(float(t) * 1000)
            rss.append(float(r))
        out.append(
            {
                "modules": label,
                "import_ms": min(times),
                "rss_mib": min(rss),
            }
        )
    return out


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _load(address: str, clients: int, seconds: float, procs: int, prop: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(PROPS_CLIENT),
            address,
            str(clients),
            str(seconds),
            prop,
            "--procs",
            str(procs),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run_all(starts: int = 5, seconds: float = 5.0, idle_wait: float = 3.0) -> dict[str, Any]:
    name_owned: list[float] = []
    owned_cpu: list[float | None] = []
    ready: list[float] = []
    rss: list[float] = []
    pss: list[float] = []
    loads: list[dict[str, Any]] = []
    with processes() as procs, tempfile.TemporaryDirectory(prefix="liveupd-bench-") as tmp:
        root = Path(tmp)
        bus = PrivateBus(procs)
        conf = _write_config(root)
        log = root / "daemon.log"
        proc: subprocess.Popen[Any] | None = None
        for i in range(starts):
            started = asyncio.run(_start_once(bus.address, conf, root / "state", log))
            proc = started["proc"]
            name_owned.append(started["name_owned_s"])
            owned_cpu.append(started["name_owned_cpu_s"])
            if started["ready_s"] is not None:
                ready.append(started["ready_s"])
            time.sleep(idle_wait)
            mem = memory(proc.pid)
            rss.append(mem["rss_mib"])
            if "pss_mib" in mem:
                pss.append(mem["pss_mib"])
            if i < starts - 1:
                _stop(proc)
        assert proc is not None
        bus_pid = bus.proc.pid
        for clients, nprocs, prop in ((1, 1, "State"), (16, 1, "State"), (16, 2, "State")):
            d0, b0, t0 = cpu_seconds(proc.pid), cpu_seconds(bus_pid), time.monotonic()
            result = _load(bus.address, clients, seconds, nprocs, prop)
            wall = time.monotonic() - t0
            d1, b1 = cpu_seconds(proc.pid), cpu_seconds(bus_pid)
            calls = max(1, int(result["calls"]))
            result.update(
                wall_s=wall,
                daemon_cpu_s=d1 - d0,
                bus_cpu_s=b1 - b0,
                # The daemon's CPU per call, over the whole run (warm-up included).
                daemon_cpu_us_per_call=(d1 - d0) / (calls * wall / seconds) * 1e6,
            )
            loads.append(result)
        after = memory(proc.pid)
        _stop(proc)
        imports = importtime(bus.address, conf, root / "state", root / "importtime.log")

    def s(values: list[float] | list[float | None]) -> dict[str, Any] | None:
        summ = Summary.of(values)
        return summ.to_json() if summ else None

    return {
        "starts": starts,
        "name_owned_s": s(name_owned),
        "name_owned_cpu_s": s(owned_cpu),
        "ready_s": s(ready),
        "idle_rss_mib": s(rss),
        "idle_pss_mib": s(pss),
        "rss_after_load_mib": after.get("rss_mib"),
        "imports": imports,
        "import_rss": import_rss(),
        "loads": loads,
        "python": sys.version.split()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--starts", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = run_all(args.starts, args.seconds)
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
