"""systemd units through systemctl: is one active, stop it, start it (async).

The remote-login listeners (``ssh.socket``, ``ssh.service``) are stopped before
the sessions are ended, so that no new login starts while the network is still
up, and started again if the transition rolls back.  A subprocess, as for
``kexec.target`` (``kernel/loader.py``), but an asyncio one: the event loop is
never blocked, and ``systemctl stop``/``start`` return once systemd's job has
finished, which is what the step waits for.  Unit names were validated
(``validation.UNIT_NAME_PATTERN``) and follow ``--``.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Sequence

SYSTEMCTL = "systemctl"
TIMEOUT = 30.0  # seconds for one systemctl (a stop or start job included)
SHOWN = 200  # characters of systemctl's output kept in an error
# What ``systemctl is-active`` prints for a unit that is not active (exit status 3;
# 4 for a unit systemd does not know, which it prints as inactive too).
NOT_ACTIVE = frozenset({"inactive", "failed", "activating", "deactivating", "maintenance"})


async def _systemctl(args: Sequence[str], timeout: float = TIMEOUT) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            SYSTEMCTL,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"},
        )
    except OSError as e:
        raise OSError(e.errno, f"cannot run {SYSTEMCTL}: {e.strerror or e}") from e
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise OSError(
            errno.ETIMEDOUT, f"{SYSTEMCTL} {' '.join(args)} did not finish within {timeout:.0f} s"
        ) from None
    assert proc.returncode is not None
    text = out.decode(errors="replace").strip()[:SHOWN], err.decode(errors="replace").strip()
    return proc.returncode, text[0], text[1][-SHOWN:]


async def unit_active(unit: str) -> bool:
    rc, out, err = await _systemctl(["is-active", "--", unit])
    if rc == 0:
        return True
    if out in NOT_ACTIVE:
        return False
    raise OSError(errno.EIO, f"{SYSTEMCTL} is-active {unit} exited {rc}: {err or out}")


async def stop_unit(unit: str) -> None:
    rc, out, err = await _systemctl(["stop", "--", unit])
    if rc != 0:
        raise OSError(errno.EIO, f"{SYSTEMCTL} stop {unit} exited {rc}: {err or out}")


async def start_unit(unit: str) -> None:
    rc, out, err = await _systemctl(["start", "--", unit])
    if rc != 0:
        raise OSError(errno.EIO, f"{SYSTEMCTL} start {unit} exited {rc}: {err or out}")
