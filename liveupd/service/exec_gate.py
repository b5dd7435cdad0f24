"""The reply to Execute leaves before the point of no return.

Execute returns at once and the engine runs the transition in the
background; in ``direct`` mode the last step, ``reboot(LINUX_REBOOT_CMD_KEXEC)``,
never returns.  ``GatedKexec`` wraps the kexec backend so that its ``jump``
first waits (in its worker thread) until every reply the gate holds has been
written to the bus socket, for at most ``timeout`` seconds: a caller always
gets its reply, and a stuck bus cannot keep the machine from updating.
"""

from __future__ import annotations

import asyncio
import logging

from liveupd import logs
from liveupd.backends.base import KexecBackend, OpenedKernel, Refusal
from liveupd.transition.phases import ExecMode

LOG = logs.get("exec-gate")

REPLY_TIMEOUT = 10.0


class ExecGate:
    """Futures (replies being written) that must resolve before the jump."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[None]] = set()

    def hold(self, fut: asyncio.Future[None]) -> None:
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    async def wait(self, timeout: float) -> bool:
        """True when everything held is out; False on timeout."""
        pending = [f for f in self._pending if not f.done()]
        if not pending:
            return True
        _, still = await asyncio.wait(pending, timeout=timeout)
        return not still


class GatedKexec:
    """A KexecBackend whose ``jump`` waits for the gate (called from a worker thread)."""

    def __init__(
        self,
        inner: KexecBackend,
        gate: ExecGate,
        loop: asyncio.AbstractEventLoop,
        timeout: float = REPLY_TIMEOUT,
    ) -> None:
        self.inner = inner
        self.gate = gate
        self.loop = loop
        self.timeout = timeout

    def refusals(self) -> list[Refusal]:
        return self.inner.refusals()

    def load(self, kernel: OpenedKernel, cmdline: str) -> None:
        self.inner.load(kernel, cmdline)

    def unload(self) -> None:
        self.inner.unload()

    def is_loaded(self) -> bool:
        return self.inner.is_loaded()

    def jump(self, mode: ExecMode) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:  # cannot wait for the loop from the loop itself
            logs.event(LOG, "exec.gate-skipped", level=logging.WARNING, reason="called on loop")
            self.inner.jump(mode)
            return
        future = asyncio.run_coroutine_threadsafe(self.gate.wait(self.timeout), self.loop)
        try:
            out = future.result(self.timeout + 5)
        except Exception as e:  # never let the gate itself stop a transition
            logs.event(LOG, "exec.gate-failed", level=logging.WARNING, error=repr(e))
            out = False
        if not out:
            logs.event(
                LOG,
                "exec.reply-not-written",
                level=logging.WARNING,
                timeout=self.timeout,
                hint="the Execute caller may not have received its reply",
            )
        self.inner.jump(mode)
