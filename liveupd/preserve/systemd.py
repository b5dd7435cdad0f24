"""The real service backend: systemctl, /proc and /sys/fs/cgroup, systemd-run.

liveupd's sandbox (units/liveupd.service) keeps CRIU from working inside it:
CRIU is run by systemd itself, as a transient unit (``systemd-run --wait``)
with the default, unconfined execution environment of a root service.
Signals to a service's processes are sent by systemd too (``systemctl kill``):
the daemon has no CAP_KILL.  Every call is an asyncio subprocess or a worker
thread: nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import stat
from pathlib import Path

from liveupd import programs
from liveupd.backends.base import ProgramRun, ServiceTask, ServiceTree, UnitStatus

SYSTEMCTL = "systemctl"
SYSTEMD_RUN = "systemd-run"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SHOW_TIMEOUT = 30.0
OUTPUT_MAX = 600  # characters of a program's output kept
OUTPUT_READ = 1 << 20  # bytes of it read (criu -v0 is terse; systemctl show is short)
STATUS_PROPERTIES = (
    "ActiveState",
    "MainPID",
    "Result",
    "InactiveExitTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
)
_SOCKET = re.compile(r"socket:\[([0-9]+)\]")


async def _run(argv: list[str], timeout: float) -> ProgramRun:
    """``argv``'s exit status and the tail of its output (stderr merged in);
    OSError when it could not start or did not finish within ``timeout``."""
    done = await programs.run_capped(
        argv, timeout=timeout, output_cap=OUTPUT_READ, merge_stderr=True
    )
    if done.returncode is None:
        raise done.error()
    return ProgramRun(rc=done.returncode, output=done.stdout.strip()[-OUTPUT_MAX:])


async def _check(argv: list[str], timeout: float) -> str:
    run = await _run(argv, timeout)
    if run.rc != 0:
        raise OSError(errno.EIO, f"{' '.join(argv[:3])}: exit {run.rc}: {run.output[-300:]}")
    return run.output


def _props(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _task(pid: int, host_mnt: str) -> ServiceTask | None:
    proc = Path(f"/proc/{pid}")
    try:
        stat_line = (proc / "stat").read_text()
        ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
        devices = []
        for fd in (proc / "fd").iterdir():
            try:
                st = fd.stat()
                target = str(fd.readlink())
            except OSError:
                continue  # closed meanwhile
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                devices.append(target)
        anon = 0
        for line in (proc / "smaps_rollup").read_text().splitlines():
            if line.startswith("Anonymous:"):
                anon = int(line.split()[1]) * 1024
        mnt = str((proc / "ns" / "mnt").readlink())
    except FileNotFoundError:
        return None  # exited meanwhile
    return ServiceTask(
        pid=pid,
        ppid=ppid,
        devices=tuple(sorted(set(devices))),
        anon_bytes=anon,
        own_mount_ns=mnt != host_mnt,
    )


def _tree(unit: str, props: dict[str, str]) -> ServiceTree:
    main = _int(props.get("MainPID"))
    cgroup = props.get("ControlGroup", "")
    tasks: list[ServiceTask] = []
    sockets: list[int] = []
    if cgroup and main > 0:
        host_mnt = str(Path("/proc/1/ns/mnt").readlink())
        procs = (CGROUP_ROOT / cgroup.lstrip("/") / "cgroup.procs").read_text().split()
        for pid in sorted({int(p) for p in procs}):
            task = _task(pid, host_mnt)
            if task is not None:
                tasks.append(task)
        for fd in (1, 2):
            try:
                m = _SOCKET.fullmatch(str(Path(f"/proc/{main}/fd/{fd}").readlink()))
            except OSError:
                continue
            if m and int(m.group(1)) not in sockets:
                sockets.append(int(m.group(1)))
    return ServiceTree(
        unit=unit,
        active=props.get("ActiveState", ""),
        main_pid=main,
        tasks=tuple(tasks),
        stdio_sockets=tuple(sockets),
    )


class SystemdServices:
    async def inspect(self, unit: str) -> ServiceTree:
        props = _props(
            await _check(
                [SYSTEMCTL, "show", "-p", "ActiveState,MainPID,ControlGroup", "--", unit],
                SHOW_TIMEOUT,
            )
        )
        return await asyncio.to_thread(_tree, unit, props)

    async def run_outside(self, name: str, argv: list[str], timeout: float) -> ProgramRun:
        return await _run(
            [
                SYSTEMD_RUN,
                "--quiet",
                "--wait",
                "--collect",
                "--service-type=exec",
                f"--unit={name}",
                "--description=liveupd: CRIU",
                "--",
                *argv,
            ],
            timeout,
        )

    async def resume(self, unit: str) -> None:
        await _check([SYSTEMCTL, "kill", "--signal=SIGCONT", "--", unit], SHOW_TIMEOUT)

    async def status(self, unit: str) -> UnitStatus:
        wanted = ",".join(STATUS_PROPERTIES)
        props = _props(await _check([SYSTEMCTL, "show", "-p", wanted, "--", unit], SHOW_TIMEOUT))
        return UnitStatus(
            active=props.get("ActiveState", ""),
            main_pid=_int(props.get("MainPID")),
            result=props.get("Result", ""),
            start_usec=_int(props.get("InactiveExitTimestampMonotonic")),
            ready_usec=_int(props.get("ActiveEnterTimestampMonotonic")),
        )

    async def start(self, unit: str, timeout: float) -> UnitStatus:
        await _run([SYSTEMCTL, "start", "--", unit], timeout)  # the status says how it went
        return await self.status(unit)

    async def reload(self) -> None:
        await _check([SYSTEMCTL, "daemon-reload"], SHOW_TIMEOUT * 4)

    async def start_fresh(self, unit: str, timeout: float) -> UnitStatus:
        await self.reload()
        await _run([SYSTEMCTL, "reset-failed", "--", unit], SHOW_TIMEOUT)
        return await self.start(unit, timeout)

    def free_bytes(self, path: str) -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize
