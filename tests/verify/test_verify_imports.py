"""What ``liveupd --verify`` imports to verify a transition that completes (issue 19).

The early-boot unit's start-up is mostly Python importing liveupd, competing
with the rest of the new boot for the CPUs: what only a failure needs (the
fall-back to the old kernel and the kernel quarantine, a rollback's staging),
what only the daemon needs (D-Bus, psutil) and what only the old side needs
(the unbind planning, kernel images) is imported when it is needed.  A fresh
interpreter runs the dry-run verification of a pending transition and prints
``sys.modules`` at exit: a behavioural guard, not a timing test
(bench/verify_startup.py measures the time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.verify_startup import setup_pending

NOT_FOR_A_COMPLETED_VERIFICATION = (
    "liveupd.verify.fallback",
    "liveupd.kernel.quarantine",
    "liveupd.kernel.image",
    "liveupd.kernel.resolve",
    "liveupd.devices.steps",
    "liveupd.service",
    "liveupd.manager",
    "dbus_fast",
    "psutil",
    "pyudev",
)

PROGRAM = """
import atexit, json, runpy, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["liveupd", "--dry-run", "--verify", "--config", sys.argv[1]]
runpy.run_module("liveupd.daemon.main", run_name="__main__")
"""


def test_a_completed_verification_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    conf, machine_file = setup_pending(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(conf)],
        env=dict(os.environ, LIVEUPD_DRY_RUN_MACHINE=str(machine_file)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "event=verify.finished transition=T1 state=completed" in out.stderr
    modules = set(json.loads(out.stderr.splitlines()[-1]))
    assert "liveupd.verify.postboot" in modules and "liveupd.hooks.runner" in modules
    assert sorted(m for m in modules if m.startswith(NOT_FOR_A_COMPLETED_VERIFICATION)) == []
