"""A real terminal for liveupctl: one tmux pane, its screen and the raw bytes it got.

The program runs in the pane's foreground process group, under a ``sh`` that
only waits for it and writes its exit status to a file, so Ctrl-C
(``send-keys C-c``) reaches it as it reaches a program a person runs: the
terminal driver sends SIGINT to the foreground process group.  The pane waits
on a FIFO until ``pipe-pane`` records everything the program writes (escape
codes included).  Nothing here sleeps: every wait polls what tmux or the
status file reports, with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.dbus.buses import wait_until

WIDTH, HEIGHT = 220, 50  # wide enough that no message wraps
SESSION = "liveupctl"


class Pane:
    def __init__(self, socket: Path, raw: Path, status: Path) -> None:
        self.socket = socket
        self.raw = raw
        self.status = status

    def tmux(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, f"tmux {' '.join(args)}: {out.stderr}"
        return out.stdout

    def screen(self) -> str:
        """What the terminal shows (wrapped lines joined), scrollback included."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", SESSION)

    def raw_output(self) -> bytes:
        """Every byte the program wrote to the terminal."""
        return self.raw.read_bytes() if self.raw.exists() else b""

    def raw_until(self, end: bytes) -> bytes:
        """The raw output, once it holds ``end`` (pipe-pane's copy may lag the screen)."""
        return bytes(wait_until(lambda: end in self.raw_output() and self.raw_output(), str(end)))

    def wait_for(self, text: str, what: str | None = None) -> str:
        return str(wait_until(lambda: text in self.screen() and self.screen(), what or text))

    def type(self, line: str) -> None:
        """Type ``line`` and Enter, as a person would."""
        self.tmux("send-keys", "-t", SESSION, "-l", line)
        self.tmux("send-keys", "-t", SESSION, "Enter")

    def press_ctrl_c(self) -> None:
        self.tmux("send-keys", "-t", SESSION, "C-c")

    def exit_status(self) -> int:
        """Wait for the program to end; its exit status."""

        def written() -> str | None:
            text = self.status.read_text() if self.status.exists() else ""
            return text.strip() if text.endswith("\n") else None

        return int(wait_until(written, "the program to exit"))


@contextlib.contextmanager
def terminal(
    argv: Sequence[str], *, term: str, env: dict[str, str], height: int = HEIGHT
) -> Iterator[Pane]:
    """Run ``argv`` in a fresh tmux server's pane (``height`` lines), ``TERM=term``, ``env``."""
    if shutil.which("tmux") is None:
        raise AssertionError("tmux is missing: apt-get install tmux (make host-deps)")
    work = Path(tempfile.mkdtemp(prefix="liveupctl-tty-"))  # short: a socket path
    socket, raw, go = work / "tmux.sock", work / "raw.log", work / "go"
    status = work / "status"
    os.mkfifo(go)
    variables = {**env, "TERM": term}
    # sh waits for the program and writes its exit status (its own SIGINT trap is a
    # no-op, and traps are reset at exec: the program gets SIGINT as usual).
    command = (
        f"trap : INT; read _ < {shlex.quote(str(go))}; env "
        + " ".join(shlex.quote(f"{k}={v}") for k, v in variables.items())
        + " "
        + shlex.join(argv)
        + f"; echo $? > {shlex.quote(str(status))}"
    )
    pane = Pane(socket, raw, status)
    try:
        pane.tmux(
            "-f", "/dev/null", "new-session", "-d", "-s", SESSION,
            "-x", str(WIDTH), "-y", str(height), "sh", "-c", command,
        )  # fmt: skip
        pane.tmux("set-option", "-t", SESSION, "remain-on-exit", "on")
        pane.tmux("set-option", "-t", SESSION, "history-limit", "5000")
        pane.tmux("pipe-pane", "-o", "-t", SESSION, f"cat >> {shlex.quote(str(raw))}")
        with open(go, "w") as f:  # the pane reads it: the program starts now
            f.write("go\n")
        yield pane
    finally:
        subprocess.run(
            ["tmux", "-S", str(socket), "kill-server"], capture_output=True, timeout=30, check=False
        )
        shutil.rmtree(work, ignore_errors=True)
