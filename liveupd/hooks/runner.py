"""Run one hook program: own process group, clean environment, capped output, deadline.

The hook runs in a new session (so its process group is its own), with stdin
from /dev/null, in ``/``, with only the documented environment.  Past its
timeout, or on cancel, the whole process group gets SIGTERM and, a moment
later, SIGKILL, so a grandchild it started is gone too.  When the hook's main
process exits, whatever it left in its process group is killed as well: a hook
that wants something to outlive it must start it elsewhere (``systemd-run``).

What runs is what was verified: right before the start, the program is
verified again (:func:`liveupd.hooks.trust.verify_program`: every directory
from ``/`` down, the file itself) in a worker thread with a time bound, and the
child executes that open descriptor (``/proc/self/fd/N``, its ``argv[0]``
unchanged), so a file renamed over the path meanwhile is not what runs.  The
same holds for an ``undo`` replayed from the journal after a crash.

Nothing of the hook runs before its caller has recorded who it is: the child
starts as a small gate (bash, Essential on Debian) that waits on a pipe, and
execs the program (``exec -a``: its ``argv[0]`` unchanged) only once
``on_start`` has returned, i.e. once the daemon has journaled the process group
a restarted daemon must kill. If the daemon dies before that, the pipe closes
and the gate exits without running anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from liveupd.bounded import TimedOut, run_bounded
from liveupd.hooks import trust
from liveupd.hooks.trust import HOOK_PATH, UntrustedProgram
from liveupd.programs import read_capped
from liveupd.quoting import clip

OUTPUT_CAP = 64 * 1024  # bytes kept per stream
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL
DRAIN_DEADLINE = 2.0  # seconds to wait for output after the group is gone
VERIFY_TIMEOUT = 10.0  # seconds to verify the program before it starts
PROGRAM_ENV = "LIVEUPD_HOOK_PROGRAM"  # the verified program's real path


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"  # exited non-zero or was killed by a signal
    TIMEOUT = "timeout"
    ERROR = "error"  # could not be started
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ProgramResult:
    outcome: Outcome
    returncode: int | None
    usec: int
    stdout: str
    stderr: str
    truncated: bool
    message: str  # one line: what happened


def hook_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The whole environment a hook gets: PATH, a locale, and the LIVEUPD_* variables."""
    env = {"PATH": HOOK_PATH, "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leader_start_time(pid: int) -> float | None:
    """When the process ``pid`` started (psutil's create_time), or None if it is gone."""
    import psutil  # imported by run_program before the first spawn (not at liveupd's start)

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


async def _kill_group(pgid: int, proc: asyncio.subprocess.Process) -> None:
    if _signal_group(pgid, signal.SIGTERM):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), KILL_GRACE)
        _signal_group(pgid, signal.SIGKILL)
    await proc.wait()


# $0: the program's argv[0]; $1: the verified descriptor's path; the rest: its arguments.
GATE_SHELL = "/bin/bash"
GATE_EXIT = 125  # the gate's pipe closed without the go-ahead: nothing ran
_GATE = 'read -r -u {fd} _ || exit {exit}; exec {fd}<&-; p=$1; shift; exec -a "$0" "$p" "$@"'


async def _start(
    argv: list[str], env: Mapping[str, str], gate: int
) -> asyncio.subprocess.Process | str:
    """Verify the program (off the event loop, bounded in time) and start that very
    descriptor behind the gate read from ``gate``; the process, or why it was not
    started."""
    try:
        program = await run_bounded(
            lambda: trust.verify_program(argv[0]),
            timeout=VERIFY_TIMEOUT,
            what="program verification",
        )
    except UntrustedProgram as e:
        return f"not started: {e}"
    except TimedOut as e:
        return f"not started: {clip(argv[0])}: {e}"
    try:
        script = _GATE.format(fd=gate, exit=GATE_EXIT)
        return await asyncio.create_subprocess_exec(
            GATE_SHELL,
            "-c",
            script,
            argv[0],
            program.exec_path,
            *argv[1:],
            pass_fds=(program.fd, gate),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**env, PROGRAM_ENV: program.real},
            cwd="/",
            start_new_session=True,
        )
    except OSError as e:
        return f"cannot start {clip(argv[0])}: {e.strerror}"
    finally:
        program.close()


async def _start_recorded(
    argv: list[str],
    env: Mapping[str, str],
    on_start: Callable[[int, float | None], None] | None,
) -> asyncio.subprocess.Process | str:
    """Start the program behind its gate, call ``on_start``, then let the program run;
    the process, or why it was not started. If ``on_start`` raises, the group is killed
    (nothing of the program ran) and the exception goes up."""
    gate_r, gate_w = os.pipe()  # both close-on-exec; the child gets gate_r alone
    try:
        try:
            started = await _start(argv, env, gate_r)
        finally:
            os.close(gate_r)
        if isinstance(started, str):
            return started
        proc = started
        try:
            if on_start is not None:
                on_start(proc.pid, leader_start_time(proc.pid))
            with contextlib.suppress(BrokenPipeError):  # the gate died: its status tells
                os.write(gate_w, b"go\n")
        except BaseException:
            os.close(gate_w)
            gate_w = -1
            await _kill_group(proc.pid, proc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.communicate(), DRAIN_DEADLINE)
            raise
        return proc
    finally:
        if gate_w >= 0:
            os.close(gate_w)


async def run_program(
    argv: list[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    cancel: asyncio.Event | None = None,
    on_start: Callable[[int, float | None], None] | None = None,
    output_cap: int = OUTPUT_CAP,
) -> ProgramResult:
    """Run ``argv`` to completion, timeout or cancel; never raises for the program's faults.

    ``on_start(pgid, started)`` gets the process group and its leader's start time
    (psutil's create_time; None if it already exited): together they identify the
    group after a crash, when the pid may have been reused.  If ``on_start`` raises,
    the group is killed and the exception goes up.
    """
    # psutil (leader_start_time) is imported before the spawn, not between the spawn
    # and on_start: a crash there would leave a group recovery cannot identify.
    import psutil  # noqa: F401

    start = time.monotonic()

    def usec() -> int:
        return int((time.monotonic() - start) * 1e6)

    def error(message: str) -> ProgramResult:
        return ProgramResult(Outcome.ERROR, None, usec(), "", "", False, message)

    started = await _start_recorded(argv, env, on_start)
    if isinstance(started, str):
        return error(started)
    proc = started
    pgid = proc.pid
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        asyncio.ensure_future(read_capped(proc.stdout, output_cap)),
        asyncio.ensure_future(read_capped(proc.stderr, output_cap)),
    ]
    waiter = asyncio.ensure_future(proc.wait())
    waits: set[asyncio.Future[object]] = {waiter}  # type: ignore[arg-type]
    canceller = None
    if cancel is not None:
        canceller = asyncio.ensure_future(cancel.wait())
        waits.add(canceller)  # type: ignore[arg-type]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if canceller is not None:
            canceller.cancel()
    outcome: Outcome | None = None
    if not waiter.done():
        outcome = Outcome.CANCELLED if cancel is not None and cancel.is_set() else Outcome.TIMEOUT
        await _kill_group(pgid, proc)
    else:
        # The main process is gone: kill whatever it left behind in its group.
        _signal_group(pgid, signal.SIGKILL)
    done, pending = await asyncio.wait(readers, timeout=DRAIN_DEADLINE)
    for task in pending:
        task.cancel()
    outputs = [t.result() if t in done else (b"", True) for t in readers]
    rc = proc.returncode
    if outcome is None:
        outcome = Outcome.SUCCESS if rc == 0 else Outcome.FAILED
    message = {
        Outcome.SUCCESS: "exited 0",
        Outcome.FAILED: (
            f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with status {rc}"
        ),
        Outcome.TIMEOUT: f"timed out after {timeout:g}s; its process group was killed",
        Outcome.CANCELLED: "cancelled; its process group was killed",
        Outcome.ERROR: "",
    }[outcome]
    return ProgramResult(
        outcome=outcome,
        returncode=rc,
        usec=usec(),
        stdout=outputs[0][0].decode(errors="replace"),
        stderr=outputs[1][0].decode(errors="replace"),
        truncated=outputs[0][1] or outputs[1][1],
        message=message,
    )
