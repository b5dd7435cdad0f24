"""The built-in steps of a transition, and where each sits among the hooks.

check   preserve-check (first-1) services CRIU cannot dump refuse the stage
check   kernel-check  (first)   resolve and validate the kernel
check   devices-check (50)      plan the unbind; refuse the root device
check   storage-check (50)      plan the freeze; refuse unmounted filesystems
load    kernel-load   (first)   kexec_file_load            undo: unload
quiesce end-remote-sessions (first)  stop ssh listeners,  undo: start them
                                     end remote logins
unbind  devices       (50)      record, link down, unbind  undo: bind again
checkpoint preserve   (50)      CRIU dump, left stopped     undo: SIGCONT, images removed
checkpoint checkpoint (last)    write the transition record  undo: drop it
flush   storage       (last)    sync, syncfs, freeze        undo: thaw
exec    watchdog      (first-1) arm the watchdog (direct)   undo: stop it
exec    exec          (first)   the jump

kernel-check builds the command line with liveupd's own words (cmdline.py);
the checkpoint step plans the watchdog, which the new kernel takes over.
"""

from __future__ import annotations

from collections.abc import Sequence

from liveupd.assembly.checkpoint_step import CheckpointStep
from liveupd.assembly.cmdline import additions
from liveupd.devices.steps import DevicesCheckStep, UnbindStep
from liveupd.devices.watchdog_step import WatchdogStep
from liveupd.hooks.manifest import Hook
from liveupd.kernel.steps import CheckStep, ExecStep, LoadStep
from liveupd.preserve.step import PreserveCheckStep, PreserveStep
from liveupd.sessions.step import EndSessionsStep
from liveupd.storage.steps import FlushStep, StorageCheckStep
from liveupd.transition.phases import ExecMode
from liveupd.transition.steps import Step


def builtin_steps(mode: ExecMode, hooks: Sequence[Hook]) -> list[Step]:
    del mode  # every built-in runs in both modes; each adapts to ctx.mode itself
    return [
        CheckStep(additions),
        DevicesCheckStep(tuple(hooks)),
        StorageCheckStep(),
        PreserveCheckStep(),
        LoadStep(),
        EndSessionsStep(),
        UnbindStep(tuple(hooks)),
        PreserveStep(),
        CheckpointStep(),
        FlushStep(),
        WatchdogStep(),
        ExecStep(),
    ]
