"""Run the engine in its own process (dry-run), so a test can SIGKILL it mid-transition.

usage: python -m tests.unit.engine_runner CONFIG {transition|recover}
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from liveupd.assembly import make_engine
from liveupd.backends import dryrun
from liveupd.config.load import load_config
from liveupd.recovery import recover
from liveupd.transition.context import StageRequest
from liveupd.transition.phases import ExecMode


async def main(config_path: str, action: str) -> None:
    config = load_config(Path(config_path))
    engine = make_engine(config, dryrun.make(config.state_dir), events=lambda e: None)
    if action == "transition":
        t = await engine.stage(StageRequest(kernel="6.1.0-56-cloud-amd64"))
        await engine.start_execute(t, ExecMode.DIRECT)
        print(json.dumps({"id": t.id, "state": str(t.state)}))
    else:
        _, report = await recover(engine)
        print(json.dumps([{"id": r.id, "action": r.action, "state": str(r.state)} for r in report]))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
