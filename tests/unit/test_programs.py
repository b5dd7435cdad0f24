"""``programs.run_capped``: the one way the daemon runs systemctl, systemd-run and
cryptsetup (hooks have their own runner).  Real programs, run on the host."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from liveupd import programs
from liveupd.programs import Completed, run_capped


def run(argv: list[str], **kw: object) -> Completed:
    kw.setdefault("timeout", 60.0)
    kw.setdefault("output_cap", 4096)
    return asyncio.run(run_capped(argv, **kw))  # type: ignore[arg-type]


def test_exit_status_and_both_streams() -> None:
    done = run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert done == Completed(3, "out\n", "err\n")


def test_the_program_gets_only_the_environment_given_stdin_null_and_cwd_root() -> None:
    done = run(["sh", "-c", "env; pwd; cat; echo eof"])
    env = dict(line.split("=", 1) for line in done.stdout.splitlines()[:-2] if "=" in line)
    env.pop("PWD", None)  # the shell's own
    env.pop("SHLVL", None)
    env.pop("_", None)
    assert env == programs.ENV
    assert done.stdout.splitlines()[-2:] == ["/", "eof"]  # cat read /dev/null: nothing


def test_stderr_merged_into_stdout_in_order() -> None:
    done = run(["sh", "-c", "echo one; echo two >&2; echo three"], merge_stderr=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "one\ntwo\nthree\n", "")


def test_output_past_the_cap_is_read_to_the_end_but_not_kept() -> None:
    done = run(
        ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo; exit 0"], output_cap=1000
    )
    assert done.returncode == 0 and done.stdout == "x" * 1000
    assert done.problem == "sh printed more than 1000 bytes"


def test_a_program_past_its_deadline_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    done = run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 600"], timeout=1.0, name="sleeper")
    assert done.returncode is None and done.timed_out
    assert done.problem == "sleeper did not finish within 1 s"
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)
    assert done.error().errno == errno.ETIMEDOUT
    assert str(done.error()) == "[Errno 110] sleeper did not finish within 1 s"


def test_a_program_that_cannot_start_is_named() -> None:
    done = run(["/nonexistent/liveupd-helper", "x"])
    assert done.returncode is None and not done.timed_out
    assert done.problem == "cannot run /nonexistent/liveupd-helper: No such file or directory"
    assert done.error().errno == errno.EIO
