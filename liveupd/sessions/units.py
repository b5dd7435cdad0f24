"""systemd units through systemctl: is one active, stop it, start it (async).

The remote-login listeners (``ssh.socket``, ``ssh.service``) are stopped before
the sessions are ended, so that no new login starts while the network is still
up, and started again if the transition rolls back.  A subprocess
(``programs.run_capped``: the event loop is never blocked, the output is
capped), and ``systemctl stop``/``start`` return once systemd's job has
finished, which is what the step waits for.  Unit names were validated
(``validation.UNIT_NAME_PATTERN``) and follow ``--``.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from liveupd import programs

SYSTEMCTL = "systemctl"
TIMEOUT = 30.0  # seconds for one systemctl (a stop or start job included)
SHOWN = 200  # characters of systemctl's output kept in an error
OUTPUT_CAP = 4096  # bytes of systemctl's output read (is-active prints one word)
# What ``systemctl is-active`` prints for a unit that is not active (exit status 3;
# 4 for a unit systemd does not know, which it prints as inactive too).
NOT_ACTIVE = frozenset({"inactive", "failed", "activating", "deactivating", "maintenance"})


async def _systemctl(args: Sequence[str], timeout: float = TIMEOUT) -> tuple[int, str, str]:
    done = await programs.run_capped(
        [SYSTEMCTL, *args],
        timeout=timeout,
        output_cap=OUTPUT_CAP,
        name=f"{SYSTEMCTL} {' '.join(args)}",
    )
    if done.returncode is None:
        raise done.error()
    return done.returncode, done.stdout.strip()[:SHOWN], done.stderr.strip()[-SHOWN:]


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
