"""Run a helper program (systemctl, systemd-run, cryptsetup) from the event loop.

One way for every short-lived program the daemon runs that is not a hook:
stdin is /dev/null, the environment is the one given (never the daemon's),
the working directory is ``/``, the output kept is capped while it is read
(a program that prints without end costs no memory), and a program that
does not finish within its deadline is killed.  Awaited on the event loop,
which it never blocks.  Hooks have their own runner (``hooks/runner.py``:
process groups, the journal), which shares :func:`read_capped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

KILL_WAIT = 2.0  # seconds to wait for a killed program (one in D state stays)
STDERR_CAP = 4096
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
ENV = {"PATH": PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


@dataclass(frozen=True)
class Completed:
    """How a program run ended."""

    returncode: int | None  # None: it did not finish (timed out, or could not start)
    stdout: str
    stderr: str
    problem: str = ""  # why there is no return code, or why stdout is unusable (too large)
    timed_out: bool = False  # killed at its deadline

    def error(self) -> OSError:
        """A run with no return code, as the OSError callers that raise want."""
        return OSError(errno.ETIMEDOUT if self.timed_out else errno.EIO, self.problem)


async def read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Read ``stream`` to its end, keeping at most ``cap`` bytes; and whether it had more."""
    kept = bytearray()
    over = False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        kept += chunk[: max(room, 0)]
        over = over or len(chunk) > room
    return bytes(kept), over


async def run_capped(
    argv: Sequence[str],
    *,
    timeout: float,
    output_cap: int,
    env: Mapping[str, str] = ENV,
    name: str = "",
    merge_stderr: bool = False,
) -> Completed:
    """Run ``argv``; how it ended.  Never raises for the program's sake: a program that
    cannot start or does not finish within ``timeout`` seconds has no return code and a
    ``problem`` naming it (``name``, else ``argv[0]``).  ``merge_stderr``: standard error
    goes into ``stdout``, interleaved as the program wrote them."""
    shown = name or argv[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
            env=dict(env),
            cwd="/",
        )
    except OSError as e:
        return Completed(None, "", "", f"cannot run {shown}: {e.strerror or e}")
    assert proc.stdout is not None
    streams = [read_capped(proc.stdout, output_cap)]
    if proc.stderr is not None:
        streams.append(read_capped(proc.stderr, STDERR_CAP))
    reads = asyncio.gather(*streams)
    try:
        outputs = await asyncio.wait_for(reads, timeout)
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), KILL_WAIT)
        reads.cancel()
        return Completed(
            None, "", "", f"{shown} did not finish within {timeout:g} s", timed_out=True
        )
    (out, over), err = outputs[0], (outputs[1][0] if len(outputs) > 1 else b"")
    problem = f"{shown} printed more than {output_cap} bytes" if over else ""
    return Completed(
        proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), problem
    )
