"""``liveupd --verify``: verify a pending transition once (the early-boot unit)."""

from __future__ import annotations

from liveupd.backends.base import Backends
from liveupd.config import Config
from liveupd.errors import ExitCode
from liveupd.transition.engine import Engine
from liveupd.transition.events import discard
from liveupd.transition.phases import TransitionState
from liveupd.transition.recovery import recover


async def verify_once(config: Config, backends: Backends) -> int:
    engine = Engine(config, backends, events=discard)
    _, report = await recover(engine)
    bad = {TransitionState.RECOVERY_FAILED, TransitionState.ROLLBACK_FAILED}
    return int(ExitCode.FAILED if any(r.state in bad for r in report) else ExitCode.OK)
