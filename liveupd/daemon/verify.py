"""``liveupd --verify``: verify a pending transition once (the early-boot unit).

Exit status 0 when nothing failed (nothing pending, completed, superseded),
1 when a transition's verification or rollback failed.
"""

from __future__ import annotations

from liveupd import logs
from liveupd.backends.base import Backends
from liveupd.config import Config
from liveupd.errors import ExitCode
from liveupd.transition.engine import Engine
from liveupd.transition.events import discard
from liveupd.transition.phases import TransitionState
from liveupd.transition.recovery import recover

LOG = logs.get("verify")
FAILED_STATES = {TransitionState.RECOVERY_FAILED, TransitionState.ROLLBACK_FAILED}


async def verify_once(config: Config, backends: Backends) -> int:
    engine = Engine(config, backends, events=discard)
    _, report = await recover(engine)
    for r in report:
        logs.event(LOG, "verify.result", transition=r.id, action=r.action, state=str(r.state))
    if not report:
        logs.event(LOG, "verify.nothing-pending")
    return int(ExitCode.FAILED if any(r.state in FAILED_STATES for r in report) else ExitCode.OK)
