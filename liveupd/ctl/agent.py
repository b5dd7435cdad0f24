"""A polkit text agent for interactive authorization on a terminal (like systemctl).

When liveupctl runs on a terminal as a user polkit would ask for a password,
it starts ``pkttyagent`` for its own process before the call and stops it
afterwards; without a terminal, or as root, nothing is started.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator

REGISTER_TIMEOUT = 5.0


def wanted(no_ask_password: bool) -> bool:
    return not no_ask_password and os.geteuid() != 0 and sys.stdin.isatty()


@contextlib.contextmanager
def tty_agent(enabled: bool) -> Iterator[None]:
    """Run ``pkttyagent`` for this process while the block runs (if ``enabled``)."""
    program = shutil.which("pkttyagent") if enabled else None
    if program is None:
        yield
        return
    notify_r, notify_w = os.pipe()
    proc = subprocess.Popen(
        [program, "--notify-fd", str(notify_w), "--fallback", "--process", str(os.getpid())],
        pass_fds=(notify_w,),
    )
    os.close(notify_w)
    try:
        # The agent closes the notify fd once it is registered.
        select.select([notify_r], [], [], REGISTER_TIMEOUT)
    finally:
        os.close(notify_r)
    try:
        yield
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)
