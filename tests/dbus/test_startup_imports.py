"""What the daemon imports before it owns its bus name (issue 19).

Property reads (and the call that bus-activated the daemon) are answered as
soon as the name is owned; the transition machinery (the engine, its steps
and the hooks runner, recovery, post-boot verification) is imported by the
daemon's recovery right after, or by the first call that needs it.  This
imports what the daemon's start imports, in a fresh interpreter, and looks at
``sys.modules``: a behavioural guard, not a timing test (bench/daemon.py
measures the time).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NOT_BEFORE_THE_NAME = (
    "liveupd.assembly",
    "liveupd.transition.engine",
    "liveupd.transition.groups",
    "liveupd.transition.plan",
    "liveupd.transition.steps",
    "liveupd.hooks.runner",
    "liveupd.recovery",
    "liveupd.verify",
    "liveupd.kernel.resolve",
    "liveupd.devices.steps",
    "liveupd.storage.steps",
)

PROGRAM = """
import json, sys
import liveupd.daemon.main, liveupd.service.server, liveupd.backends.dryrun
print(json.dumps(sorted(sys.modules)))
"""


def test_the_daemon_imports_no_transition_machinery_before_it_serves() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120, check=True
    )
    modules = set(json.loads(out.stdout))
    assert "liveupd.manager" in modules and "liveupd.transition.history" in modules
    assert sorted(m for m in modules if m.startswith(NOT_BEFORE_THE_NAME)) == []


def test_the_engine_is_made_on_first_use(tmp_path: Path) -> None:
    program = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from liveupd.config import Config\n"
        "from liveupd.backends import dryrun\n"
        "from liveupd.manager import Manager\n"
        "m = Manager(Config(), dryrun.make(Path(sys.argv[1])))\n"
        "before = 'liveupd.transition.engine' in sys.modules\n"
        "engine = m.engine\n"
        "print(json.dumps([before, engine is m.engine, type(engine).__name__]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout) == [False, True, "Engine"]
