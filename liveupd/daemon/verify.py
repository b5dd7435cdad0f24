"""``liveupd --verify``: verify a pending transition once (the early-boot unit).

Exit status 0 when nothing failed (nothing pending, completed, superseded),
1 when a transition's verification or rollback failed, a transition fell
back to the old kernel, or a journal was found corrupt (it was set aside;
someone needs to look).
"""

from __future__ import annotations

from liveupd import logs
from liveupd.assembly import make_engine
from liveupd.backends.base import Backends
from liveupd.config import Config
from liveupd.errors import ExitCode
from liveupd.recovery import Action, recover
from liveupd.transition.events import discard
from liveupd.transition.phases import TransitionState

LOG = logs.get("verify")
FAILED_STATES = {
    TransitionState.RECOVERY_FAILED,
    TransitionState.ROLLBACK_FAILED,
    TransitionState.FELL_BACK,
}


async def verify_once(config: Config, backends: Backends) -> int:
    engine = make_engine(config, backends, events=discard)
    _, report = await recover(engine)
    for r in report:
        logs.event(
            LOG,
            "verify.result",
            transition=r.id,
            action=r.action,
            state=str(r.state) if r.state else None,
            note=r.note or None,
        )
    if not report:
        logs.event(LOG, "verify.nothing-pending")
    failed = any(r.state in FAILED_STATES or r.action == Action.QUARANTINED for r in report)
    return int(ExitCode.FAILED if failed else ExitCode.OK)
