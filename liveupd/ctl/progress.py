"""Follow a transition live: phase, hook, percentage, until it jumps or fails.

The follower reads liveupd's signals for one transition object.  It ends:

* OK when the transition's State becomes ``exec`` (the jump was requested:
  ``systemd`` mode handing over to kexec.target), or when the daemon vanishes
  after the ``exec`` phase started (the machine went into the new kernel);
* in a dry run, OK when the simulated new boot verified it (``completed``):
  the daemon rehearses what follows the jump;
* with the error's exit code on ``TransitionFailed`` (rolled back, or the
  dry run's verification failed);
* FAILED when the daemon vanishes before the ``exec`` phase.

With ``no_return`` (``liveupctl reboot`` whose output is not a terminal: a
fleet tool or a script waiting for a reboot command to end) it ends OK as
soon as the transition cannot fail back any more: in ``direct`` mode when the
``exec`` phase begins (no Cancel is taken from then on; the jump follows), in
``systemd`` mode when the State becomes ``exec`` (handed over to
kexec.target); in a dry run too, while the daemon goes on with the rehearsal.

On a terminal that understands escape codes (``output.escapes_ok``: not
``TERM=dumb``) the progress is a bar redrawn in place; otherwise one plain line
per change, for logs and package-manager output; with ``--quiet``, nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from dbus_fast import Message

from liveupd.ctl.client import DBUS_NAME, PROPERTIES, RemoteError, unwrap
from liveupd.ctl.output import escapes_ok
from liveupd.ctl.render import duration
from liveupd.errors import ExitCode
from liveupd.service import names


@dataclass(frozen=True)
class Outcome:
    code: ExitCode
    message: str
    error: str = ""  # the D-Bus error name, when the transition failed


class Renderer:
    """Plain lines: one per phase, hook and state."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.phase = ""
        self.progress = 0

    def write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def update(self, *, phase: str | None = None, progress: int | None = None) -> None:
        if progress is not None:
            self.progress = progress
        if phase is not None and phase != self.phase:
            self.phase = phase
            self.write(f"phase {phase} ({self.progress}%)")

    def hook(self, hook: str, phase: str, result: str, usec: int) -> None:
        self.write(f"hook {hook} ({phase}): {result} in {duration(usec)}")

    def finish(self) -> None:
        pass

    def interrupt(self) -> None:
        """Ctrl-C was pressed: end the line the terminal echoed ^C on."""
        try:
            tty = self.out.isatty()
        except (ValueError, OSError):
            tty = False
        if tty:
            self.out.write("\n")
            self.out.flush()


class QuietRenderer(Renderer):
    """``--quiet``: no progress at all."""

    def write(self, line: str) -> None:
        pass

    def interrupt(self) -> None:
        pass


class BarRenderer(Renderer):
    """A progress bar on a terminal, redrawn in place; hooks are printed above it."""

    WIDTH = 30

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self.last_hook = ""
        self._drawn = False

    def _bar(self) -> str:
        filled = self.WIDTH * self.progress // 100
        tail = f"  {self.phase}" + (f": {self.last_hook}" if self.last_hook else "")
        columns = shutil.get_terminal_size((80, 24)).columns
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.progress:3d}%{tail}"
        return line[: max(10, columns - 1)]

    def _draw(self) -> None:
        self.out.write("\r\x1b[2K" + self._bar())
        self.out.flush()
        self._drawn = True

    def write(self, line: str) -> None:
        if self._drawn:
            self.out.write("\r\x1b[2K")
        self.out.write(line + "\n")
        self._draw()

    def update(self, *, phase: str | None = None, progress: int | None = None) -> None:
        if progress is not None:
            self.progress = progress
        if phase is not None and phase != self.phase:
            self.phase = phase
            self.last_hook = ""
        self._draw()

    def hook(self, hook: str, phase: str, result: str, usec: int) -> None:
        self.last_hook = hook
        if result != "success":
            self.write(f"hook {hook} ({phase}): {result} after {duration(usec)}")
        else:
            self._draw()

    def finish(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False

    def interrupt(self) -> None:
        self.finish()  # the ^C stays at the end of the bar; the next one starts below


def renderer_for(out: TextIO = sys.stdout, *, quiet: bool = False) -> Renderer:
    if quiet:
        return QuietRenderer(out)
    return BarRenderer(out) if escapes_ok(out) else Renderer(out)


class Follower:
    """Turns liveupd's signals for ``path`` into renderer calls and an Outcome."""

    def __init__(
        self,
        path: str,
        renderer: Renderer,
        *,
        dry_run: bool = False,
        no_return: str | None = None,
    ) -> None:
        self.path = path
        self.renderer = renderer
        self.dry_run = dry_run
        # The exec mode, when the follow ends at the point of no return (see above).
        self.no_return = no_return
        self.phase = ""
        self.target = ""
        self.jumped = False  # the State became exec
        self.rolling_back = asyncio.Event()  # the rollback phase began (a Cancel arrived)
        self.done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._held: list[Message] | None = []  # signals that came before begin()

    def begin(self, target: str) -> None:
        """Start rendering: first the signals that came while the caller was busy."""
        self.target = target or self.target
        held, self._held = self._held or [], None
        for msg in held:
            self.on_signal(msg)

    def _finish(self, outcome: Outcome) -> None:
        if not self.done.done():
            self.renderer.finish()
            self.done.set_result(outcome)

    def _apply(self, props: dict[str, Any]) -> None:
        if props.get("TargetRelease"):
            self.target = str(props["TargetRelease"])
        phase = props.get("Phase")
        if isinstance(phase, str) and phase:
            self.phase = phase
        progress = props.get("Progress")
        self.renderer.update(
            phase=phase if isinstance(phase, str) and phase else None,
            progress=int(progress) if isinstance(progress, int) else None,
        )
        state = props.get("State")
        target = self.target or "the new kernel"
        if state == "exec":
            self.jumped = True
            if self.no_return is not None:
                self._past_no_return()
                return
            if not self.dry_run:
                self._finish(Outcome(ExitCode.OK, f"the jump into {target} was requested"))
                return
            self.renderer.write(
                f"the jump into {target} was requested (dry run: the simulated machine "
                "boots it, and liveupd verifies it there)"
            )
        elif state == "completed" and self.dry_run:
            tid = self.path.rsplit("/", 1)[-1]
            self._finish(
                Outcome(
                    ExitCode.OK,
                    f"dry run: the simulated new boot runs {target} and passed verification; "
                    f"transition {tid} completed ('liveupctl show {tid}' for the report)",
                )
            )

    def _past_no_return(self) -> None:
        target = self.target or "the new kernel"
        tid = self.path.rsplit("/", 1)[-1]
        how = (
            "handed over to kexec.target"
            if self.no_return == "systemd"
            else "the exec phase began: it can no longer be cancelled"
        )
        dry = "; dry run: the simulated machine boots it next" if self.dry_run else ""
        self._finish(
            Outcome(
                ExitCode.OK,
                f"the jump into {target} was requested ({how}{dry}); 'liveupctl show {tid}' "
                "reports it once the new kernel verified it",
            )
        )

    def on_signal(self, msg: Message) -> None:
        if self._held is not None:
            self._held.append(msg)
            return
        if msg.member == "NameOwnerChanged" and msg.sender == DBUS_NAME:
            if len(msg.body) == 3 and msg.body[0] == names.BUS_NAME and not msg.body[2]:
                self.vanished()
            return
        if msg.path == self.path and msg.interface == PROPERTIES:
            if msg.member == "PropertiesChanged" and msg.body[0] == names.TRANSITION_INTERFACE:
                self._apply(unwrap(msg.body[1]))
            return
        if msg.path != names.OBJECT_PATH or msg.interface != names.MANAGER_INTERFACE:
            return
        body = msg.body
        if not body or body[0] != self.path:
            return
        if msg.member == "PhaseChanged":
            self.phase = str(body[1])
            if self.phase == "rollback":
                self.rolling_back.set()
            self.renderer.update(phase=self.phase)
            if self.phase == "exec" and self.no_return == "direct":
                self._past_no_return()
        elif msg.member == "HookFinished":
            self.renderer.hook(str(body[1]), str(body[2]), str(body[3]), int(body[4]))
        elif msg.member == "TransitionFailed":
            error = RemoteError(str(body[1]), str(body[2]))
            self._finish(Outcome(error.exit_code, error.message, error.name))

    @property
    def past_exec(self) -> bool:
        """The exec phase has begun: the transition can no longer be cancelled."""
        return self.jumped or self.phase in ("exec", "verify", "restore")

    def vanished(self) -> None:
        """liveupd left the bus (or our connection dropped)."""
        if self.dry_run and self.past_exec:
            self._finish(
                Outcome(
                    ExitCode.FAILED,
                    "liveupd went away after the simulated jump, before the simulated new "
                    "boot was verified; see its log and 'liveupctl history'",
                )
            )
        elif self.phase == "exec":
            self._finish(
                Outcome(
                    ExitCode.OK,
                    "the connection dropped during the jump: the machine is booting "
                    f"{self.target or 'the new kernel'}",
                )
            )
        else:
            self._finish(
                Outcome(
                    ExitCode.FAILED,
                    f"liveupd went away during the {self.phase or 'starting'} phase; see "
                    "'journalctl -u liveupd' and 'liveupctl history'",
                )
            )
