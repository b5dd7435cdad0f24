"""Where liveupctl's output goes: the terminal rules of systemctl and friends.

* Escape codes (the progress bar redrawn in place) only on a terminal whose
  ``TERM`` is set and is not ``dumb`` (``escapes_ok``).
* Long output on a terminal goes through a pager, as systemctl's does:
  ``$LIVEUPCTL_PAGER``, else ``$PAGER``, else ``less`` (with ``LESS=FRSXMK``
  unless ``LESS`` is set); an empty value or ``cat`` means none, and so does
  ``--no-pager``, a dumb terminal, or output that fits on the screen.
* Standard output that goes away (``liveupctl status | head -1``) or fills
  up (``> /dev/full``) is no traceback: ``GuardedStdout`` notes the error,
  sends the rest to /dev/null, and ``exit_status`` turns it into the exit
  status: 141 (as if killed by SIGPIPE, like C programs) for a closed pipe,
  1 with a message for any other write error.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import subprocess
import sys
from typing import Any, TextIO, cast

PAGER_ENV = "LIVEUPCTL_PAGER"
DEFAULT_LESS = "FRSXMK"
EXIT_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a program killed by it


def escapes_ok(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that understands escape codes."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
    term = os.environ.get("TERM", "")
    return tty and term not in ("", "dumb")


class GuardedStdout:
    """Standard output whose write errors end the output, not the program."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.error: OSError | None = None

    def _failed(self, error: OSError) -> None:
        if self.error is None:
            self.error = error
        # The rest goes nowhere, including what is still buffered: flushing it again at
        # exit would fail again (and Python would print that).
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.stream.fileno())
        except (OSError, ValueError):
            pass
        finally:
            os.close(devnull)

    def write(self, text: str) -> int:
        if self.error is not None:
            return len(text)
        try:
            return self.stream.write(text)
        except OSError as e:
            self._failed(e)
            return len(text)

    def flush(self) -> None:
        if self.error is not None:
            return
        try:
            self.stream.flush()
        except OSError as e:
            self._failed(e)

    def isatty(self) -> bool:
        return self.error is None and self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def guard_stdout() -> GuardedStdout:
    guarded = GuardedStdout(sys.stdout)
    sys.stdout = cast(TextIO, guarded)
    return guarded


def exit_status(guarded: GuardedStdout, status: int) -> int:
    """The program's exit status, once its output was flushed (or failed)."""
    guarded.flush()
    error = guarded.error
    if error is None:
        return status
    if error.errno == errno.EPIPE:
        return EXIT_PIPE
    print(
        f"liveupctl: cannot write to standard output: {error.strerror or error}",
        file=sys.stderr,
    )
    return 1 if status == 0 else status


# ------------------------------------------------------------------ pager --


def pager_command() -> list[str] | None:
    """The pager to run, or None for none."""
    for name in (PAGER_ENV, "PAGER"):
        if name in os.environ:
            value = os.environ[name].strip()
            if not value or value == "cat":
                return None
            return shlex.split(value)
    less = shutil.which("less")
    return [less] if less else None


def page(text: str, *, enabled: bool = True, out: TextIO | None = None) -> None:
    """Print ``text`` (a final newline is added), through a pager when that helps."""
    stream = out or sys.stdout
    argv = pager_command() if enabled and escapes_ok(stream) else None
    lines = text.count("\n") + 1
    if argv is not None and lines < shutil.get_terminal_size((80, 24)).lines:
        argv = None  # it fits: no pager (less -F would quit at once anyway)
    if argv is None:
        stream.write(text + "\n")
        stream.flush()
        return
    env = dict(os.environ)
    env.setdefault("LESS", DEFAULT_LESS)
    stream.flush()
    try:
        subprocess.run(argv, input=text + "\n", text=True, env=env, check=False)
    except OSError:  # no such pager: print it as it is
        stream.write(text + "\n")
        stream.flush()
