"""Ctrl-C while ``liveupctl exec`` (or ``reboot``) follows a transition.

* Before the exec phase, the first Ctrl-C asks liveupd to cancel: it says
  ``cancelling: rolling back ...`` and keeps following until the rollback
  has finished; liveupctl then exits 130.
* A second Ctrl-C (or the first once the exec phase has begun, when the
  transition can no longer be cancelled) only detaches: liveupctl says that
  the transition goes on and how to follow it, and exits 130.  Nothing is
  asked of the daemon.

The messages go to standard error, after the progress display has ended the
line the terminal echoed ``^C`` on.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any, TextIO

from liveupd.ctl import agent
from liveupd.ctl.client import Client, RemoteError
from liveupd.ctl.progress import Follower

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
DELIVERY_WAIT = 5.0  # seconds a detach waits for a Cancel just asked for to arrive


class Interrupts:
    """The SIGINT handler for one followed transition; ``detached`` ends the wait."""

    def __init__(
        self,
        client: Client,
        follower: Follower,
        transition_id: str,
        *,
        interactive: bool,
        err: TextIO | None = None,
    ) -> None:
        self.client = client
        self.follower = follower
        self.tid = transition_id
        self.interactive = interactive
        self.err = err or sys.stderr
        self.presses = 0
        self.cancelling = False  # a Cancel was asked for (the rollback is awaited)
        self.detached: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._cancel: asyncio.Task[None] | None = None

    def __enter__(self) -> Interrupts:
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self.pressed)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    async def cancel_delivered(self, timeout: float = DELIVERY_WAIT) -> None:
        """After a detach: make sure a Cancel asked for reached the daemon (its rollback
        began, or the call ended) before liveupctl closes its connection."""
        if self._cancel is None or self.follower.rolling_back.is_set():
            return
        began = asyncio.ensure_future(self.follower.rolling_back.wait())
        waiting: set[asyncio.Future[Any]] = {began, self._cancel, self.follower.done}
        try:
            await asyncio.wait(waiting, timeout=timeout)
        finally:
            began.cancel()

    def say(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()

    def pressed(self) -> None:
        self.presses += 1
        self.follower.renderer.interrupt()
        if self.detached.done() or self.follower.done.done():
            return
        if self.presses == 1 and not self.follower.past_exec:
            self.cancelling = True
            self.say(
                f"cancelling: rolling back ... (transition {self.tid}; press Ctrl-C again to "
                "stop waiting, the rollback goes on)"
            )
            self._cancel = asyncio.ensure_future(self._ask_cancel())
        else:
            self.detach()

    def detach(self, reason: str = "") -> None:
        if self.detached.done():
            return
        if self.cancelling:
            what = f"the rollback of transition {self.tid} goes on in liveupd"
        elif self.follower.past_exec:
            what = (
                f"transition {self.tid} goes on in liveupd: its exec phase has begun, so it "
                "can no longer be cancelled"
            )
        else:
            what = f"transition {self.tid} goes on in liveupd"
        self.say(
            f"detached{reason}: {what}; follow it with 'liveupctl status', and see the result "
            f"with 'liveupctl show {self.tid}'"
        )
        self.detached.set_result(what)

    async def _ask_cancel(self) -> None:
        try:
            with agent.tty_agent(self.interactive):
                await self.client.cancel(interactive=self.interactive)
        except RemoteError as e:
            if self.follower.done.done():
                return  # it ended before the Cancel arrived: the outcome says how
            self.say(f"cannot cancel: {e.message}")
            self.cancelling = False
            self.detach()
