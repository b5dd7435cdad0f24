"""Post-boot verification of a transition found pending after a new boot.

(First version: decides completed vs superseded from the running release;
device, hook and downtime checks build on this.)
"""

from __future__ import annotations

from liveupd.fsio import remove_durably
from liveupd.transition.checkpoint import pending_path, read_checkpoint, read_pending
from liveupd.transition.engine import Engine, Transition
from liveupd.transition.phases import TransitionState


async def verify_after_boot(engine: Engine, t: Transition) -> TransitionState:
    journal = t.ctx.journal
    target = t.ctx.target
    checkpoint = read_checkpoint(journal.dir)
    running = engine.backends.system.release()
    if (
        journal.state is TransitionState.STAGED
        or target is None
        or checkpoint is None
        or running != target.release
    ):
        state = TransitionState.SUPERSEDED
    else:
        state = TransitionState.COMPLETED
    journal.set_state(state, verification={"running_release": running})
    if read_pending(engine.config.state_dir) == journal.id:
        remove_durably(pending_path(engine.config.state_dir))
    t.ctx.log("verify.finished", state=str(state))
    return state
