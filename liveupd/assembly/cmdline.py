"""liveupd's own words on the new kernel's command line.

* ``panic=N`` (``[exec] panic-sec``) unless the command line sets ``panic``:
  Debian's kernels halt on a panic (CONFIG_PANIC_TIMEOUT=0); with it a panic
  on the new kernel reboots, through the firmware, into the old one;
* what keeps the armed watchdog running until ``liveupd --verify`` takes it
  over: its driver may not load before (``devices/watchdog.py``).

Computed at stage (the kernel is loaded with its command line), from the
watchdogs present then; the checkpoint step plans the watchdog again at
Execute and warns when the staged line does not keep its driver out.
"""

from __future__ import annotations

from liveupd.devices.watchdog import cmdline_words, plan_for
from liveupd.kernel.cmdline import Additions
from liveupd.transition.context import TransitionContext


def additions(ctx: TransitionContext, release: str) -> Additions:
    """For the target kernel ``release`` (a watchdog it cannot take over is not armed)."""
    config = ctx.config
    defaults = (f"panic={config.exec.panic_sec}",) if config.exec.panic_sec else ()
    guard = plan_for(ctx.backends.watchdog, config, release)
    return Additions(defaults=defaults, extra=tuple(cmdline_words(guard.record)))
