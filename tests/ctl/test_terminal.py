"""liveupctl in a real terminal, as a person runs it (issue 18, cases 2 and 7).

tmux gives a real pseudo-terminal: the progress display during ``exec``, Ctrl-C
cancelling and rolling back (exit 130), a second Ctrl-C detaching, Ctrl-C
once the exec phase began only detaching, and no escape codes with
``TERM=dumb`` or when the output is piped.  The daemon is the dry-run one on a
private bus; hooks block on a FIFO until the test releases them (``Gate``), so
every step is observed, never waited for with a sleep.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

from tests.conftest import HookFactory
from tests.ctl.terminal import terminal
from tests.dbus.buses import LIVEUPCTL, REPO, Daemon, PrivateBus, wait_until

TARGET = "6.1.0-56-cloud-amd64"
ESC = b"\x1b"


class Gate:
    """A hook (or undo) that says it started, then blocks until ``release()``."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.started = tmp_path / f"{name}.started"
        self.fifo = tmp_path / f"{name}.fifo"
        os.mkfifo(self.fifo)

    @property
    def script(self) -> str:
        return f"touch {self.started}; read _ < {self.fifo}"

    def wait_started(self) -> None:
        wait_until(self.started.exists, f"{self.started.name}")

    def release(self) -> bool:
        """Let the blocked program go on; False if nobody waits (it was killed)."""
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no reader
                return False
            raise
        with os.fdopen(fd, "w") as f:
            f.write("go\n")
        return True


def env(bus: PrivateBus) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LIVEUPD_HOST_TEST": "1",
        "LIVEUPCTL_PAGER": "",
        "HOME": os.environ.get("HOME", "/root"),
    }


def exec_argv(bus: PrivateBus) -> list[str]:
    return [LIVEUPCTL, "--bus", bus.address, "exec"]


def history(bus: PrivateBus) -> list[dict[str, object]]:
    return list(json.loads(bus.call("GetHistory", "u", "0")[0]))


def test_progress_then_ctrl_c_cancels_and_rolls_back(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path
) -> None:
    undone = tmp_path / "undone"
    make_hook("05-first", "quiesce", "true", f"touch {undone}")
    hold = Gate(tmp_path, "hold")
    make_hook("10-hold", "quiesce", hold.script)
    tid, _ = bus.call("Stage", "sssa{sv}", TARGET, "", "", "0")
    with terminal(exec_argv(bus), term="screen", env=env(bus)) as pane:
        pane.wait_for(f"Transition {tid}: switching to {TARGET}")
        hold.wait_started()
        # The progress bar, redrawn in place, names the phase and the last hook.
        screen = pane.wait_for("quiesce: 05-first", "the progress bar")
        bar = next(line for line in screen.splitlines() if "quiesce: 05-first" in line)
        assert bar.startswith("[") and "%" in bar, screen
        pane.press_ctrl_c()
        screen = pane.wait_for("cancelling: rolling back ...")
        assert pane.exit_status() == 130, pane.screen()
        screen = pane.screen()
        raw = pane.raw_until(b"liveupctl: cancelled")
    assert "liveupctl: cancelled: transition" in screen, screen
    assert "\x1b" not in screen  # what the terminal shows is text ...
    assert b"\r\x1b[2K[" in raw  # ... drawn with escape codes on a real terminal
    # The ^C the terminal echoed ends its line: the message starts on a line of its own.
    assert any(line.startswith("cancelling: rolling back ...") for line in screen.splitlines())
    # The daemon cancelled: the blocked hook was killed, the first one undone.
    assert not hold.release()
    assert undone.exists()
    assert [(e["id"], e["state"]) for e in history(bus)] == [(tid, "cancelled")]
    assert bus.get("State") == "idle"


def test_second_ctrl_c_detaches_while_the_rollback_goes_on_and_dumb_terminal_has_no_escapes(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path
) -> None:
    undo = Gate(tmp_path, "undo")
    make_hook("05-first", "quiesce", "true", undo.script)
    hold = Gate(tmp_path, "hold")
    make_hook("10-hold", "quiesce", hold.script)
    tid, _ = bus.call("Stage", "sssa{sv}", TARGET, "", "", "0")
    with terminal(exec_argv(bus), term="dumb", env=env(bus)) as pane:
        pane.wait_for(f"Transition {tid}: switching to {TARGET}")
        hold.wait_started()
        pane.press_ctrl_c()
        pane.wait_for("cancelling: rolling back ...")
        undo.wait_started()  # the rollback is under way, blocked in 05-first's undo
        pane.press_ctrl_c()
        pane.wait_for("detached")
        assert pane.exit_status() == 130
        screen = pane.screen()
        raw = pane.raw_until(b"detached")
    assert (
        f"detached: the rollback of transition {tid} goes on in liveupd; follow it with "
        "'liveupctl status'"
    ) in screen, screen
    # TERM=dumb: plain lines, not one escape code.
    assert ESC not in raw, raw
    assert "phase quiesce (0%)" in screen
    # liveupctl went; the rollback goes on in the daemon until the undo is released.
    status = json.loads(
        subprocess.run(
            [LIVEUPCTL, "--bus", bus.address, "status", "--json"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=30,
            check=True,
        ).stdout
    )
    assert status["transition"]["id"] == tid
    assert status["transition"]["phase"] == "rollback"
    assert undo.release()
    wait_until(lambda: history(bus)[0]["state"] == "cancelled", "the rollback to end")


def test_ctrl_c_after_the_exec_phase_began_only_detaches(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path
) -> None:
    """In the dry run, the simulated new boot's verify hook holds the transition past
    its jump: Ctrl-C must not (and could not) cancel it."""
    verify = Gate(tmp_path, "verify")
    make_hook("50-verify", "verify", verify.script)
    tid, _ = bus.call("Stage", "sssa{sv}", TARGET, "", "", "0")
    with terminal(exec_argv(bus), term="screen", env=env(bus)) as pane:
        pane.wait_for(f"Transition {tid}: switching to {TARGET}")
        verify.wait_started()
        pane.wait_for("the jump into")
        pane.press_ctrl_c()
        pane.wait_for("detached")
        assert pane.exit_status() == 130
        screen = pane.screen()
    assert "cancelling" not in screen
    assert (
        f"detached: transition {tid} goes on in liveupd: its exec phase has begun, so it can "
        "no longer be cancelled"
    ) in screen, screen
    assert verify.release()
    wait_until(lambda: history(bus)[0]["state"] == "completed", "the rehearsal to end")


def test_piped_output_has_no_escape_codes(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory
) -> None:
    make_hook("10-quiesce", "quiesce", "true")
    bus.call("Stage", "sssa{sv}", TARGET, "", "", "0")
    out = subprocess.run(
        [*exec_argv(bus)],
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "TERM": "xterm-256color"},
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert ESC not in out.stdout + out.stderr
    assert b"phase quiesce (0%)\n" in out.stdout


def test_status_in_a_dumb_terminal_is_plain_text(daemon: Daemon, bus: PrivateBus) -> None:
    with terminal([LIVEUPCTL, "--bus", bus.address, "status"], term="dumb", env=env(bus)) as pane:
        assert pane.exit_status() == 0
        screen = pane.screen()
        raw = pane.raw_until(b"Version:")
    assert "State:          idle (dry run: a simulated machine)" in screen
    assert ESC not in raw
