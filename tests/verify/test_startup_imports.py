"""``liveupd --verify`` imports only what verification needs (issue 19).

It runs early in the new boot and delays the recovery report by its start-up,
mostly imports: the D-Bus library and the service layer (the daemon's), and the
kernel, devices and storage steps (needed to stage or execute, or to roll back)
must not be imported by a verification that succeeds.  The program is run in a
fresh interpreter, as the boot unit runs it, and its ``sys.modules`` read at the
end.  This is a behavioural guard, not a timing test (bench/verify_startup.py
measures the time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from liveupd.config import Config
from tests.conftest import HookFactory
from tests.verify.scenario import journal_data, machine, pending

NOT_FOR_VERIFY = (
    "dbus_fast",
    "liveupd.service",
    "liveupd.manager",
    "liveupd.assembly.builtins",
    "liveupd.kernel.steps",
    "liveupd.kernel.resolve",
    "liveupd.kernel.uki",
    "liveupd.kernel.image",
    "liveupd.devices.steps",
    "liveupd.devices.holders",
    "liveupd.storage.steps",
)

PROGRAM = """
import json, sys
from liveupd.daemon.main import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""


def run_verify(config_file: Path, machine_file: Path) -> tuple[int, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, "--dry-run", "--verify", "--config", str(config_file)],
        env=dict(os.environ, LIVEUPD_DRY_RUN_MACHINE=str(machine_file)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    return int(result["rc"]), set(result["modules"])


def test_a_successful_verification_imports_no_dbus_service_or_staging_code(
    write_config: Callable[[str], Config],
    boot_dir: Path,
    tmp_path: Path,
    make_hook: HookFactory,
) -> None:
    config = write_config("[verify]\nsettle-timeout = 0.5\n")
    pending(config, boot_dir)
    make_hook("10-check", "verify", "true")
    make_hook("10-start", "restore", "true")

    rc, modules = run_verify(tmp_path / "liveupd.conf", machine(tmp_path))

    assert rc == 0
    assert journal_data(config)["state"] == "completed"  # it did verify, hooks included
    assert "liveupd.verify.postboot" in modules and "liveupd.hooks.runner" in modules
    loaded = sorted(m for m in modules if m.startswith(NOT_FOR_VERIFY))
    assert loaded == []


def test_nothing_pending_imports_no_dbus_service_or_staging_code(
    config: Config, tmp_path: Path
) -> None:
    rc, modules = run_verify(tmp_path / "liveupd.conf", machine(tmp_path))

    assert rc == 0
    assert sorted(m for m in modules if m.startswith(NOT_FOR_VERIFY)) == []
    assert "psutil" not in modules  # only a hook that runs needs it


def test_the_real_backends_import_no_loading_or_unbinding_code() -> None:
    """What the boot unit imports beyond the dry run: the real backends' modules (only
    imported here, never used: this is a host test)."""
    program = (
        "import json, sys\n"
        "import liveupd.daemon.verify, liveupd.backends.real\n"
        "from liveupd.devices.machine import SysfsDevices\n"
        "from liveupd.kernel.loader import RealKexec\n"
        "from liveupd.storage.freeze import RealStorage\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True
    )
    modules = set(json.loads(out.stdout))
    assert "liveupd.kernel.loader" in modules and "liveupd.devices.machine" in modules
    not_needed = ("liveupd.kernel.image", "liveupd.kernel.validate", "liveupd.devices.holders")
    assert sorted(m for m in modules if m.startswith((*NOT_FOR_VERIFY, *not_needed))) == []
    assert "psutil" not in modules
