"""A failure after the point of no return is reported by the new kernel (issue 20).

The system-shutdown helper runs at the very end of a systemd-mode shutdown,
when nothing can be undone and the filesystems are read-only.  If it fails, a
line is left in ``<state-dir>/late-failures.jsonl`` and the new kernel's
verification turns it into a warning: in the report (``liveupctl show``,
``GetHistory``) and in ``Recovered``'s report.

On the dry-run machine the shutdown never happens, so a flush hook (after the
checkpoint wrote ``pending``, as the real shutdown comes after it) runs the
shipped ``units/liveupd-shutdown`` itself, with a helper program that cannot
run, as in the issue ("No module named 'liveupd'").
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import HookFactory
from tests.dbus.buses import REPO, PrivateBus, Recorder, liveupctl
from tests.dbus.fixtures import DaemonFactory

HELPER = REPO / "units" / "liveupd-shutdown"


def test_a_helper_that_cannot_run_is_a_warning_in_the_new_kernels_report(
    start_daemon: DaemonFactory,
    bus: PrivateBus,
    recorder: Recorder,
    make_hook: HookFactory,
    tmp_path: Path,
) -> None:
    daemon = start_daemon()
    state = daemon.state_dir
    broken = tmp_path / "shutdown-unbind"
    broken.write_text("#!/bin/sh\necho \"No module named 'liveupd'\" >&2\nexit 1\n")
    broken.chmod(0o755)
    make_hook(
        "90-system-shutdown",
        "flush",
        f"LIVEUPD_STATE_DIR={state} LIVEUPD_SHUTDOWN_UNBIND={broken} sh {HELPER} kexec",
    )
    result = liveupctl(bus, "reboot", "--mode", "systemd")
    assert result.returncode == 0, result.stderr
    recovered = recorder.wait_for(lambda s: s["member"] == "Recovered", "Recovered")
    ok, report = recovered["body"][1], json.loads(recovered["body"][2])
    warning = (
        "the system-shutdown helper (shutdown-unbind) failed with status 1 before it could say why"
    )
    assert ok is True  # a warning, not a failed verification
    [got] = report["verification"]["warnings"]
    assert got.startswith(warning), got
    [entry] = json.loads(bus.call("GetHistory", "u", "0")[0])
    assert (entry["state"], entry["verification"]["warnings"]) == ("completed", [got])
    shown = liveupctl(bus, "show").stdout
    assert "Verification on the new kernel (simulated): passed" in shown
    assert f"  warning: {warning}" in shown
    assert not (state / "late-failures.jsonl").exists()  # read once, into the journal


def test_without_a_failure_there_is_no_warning(
    start_daemon: DaemonFactory, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path
) -> None:
    daemon = start_daemon()
    fine = tmp_path / "shutdown-unbind"
    fine.write_text("#!/bin/sh\nexit 0\n")
    fine.chmod(0o755)
    make_hook(
        "90-system-shutdown",
        "flush",
        f"LIVEUPD_STATE_DIR={daemon.state_dir} LIVEUPD_SHUTDOWN_UNBIND={fine} sh {HELPER} kexec",
    )
    assert liveupctl(bus, "stage").returncode == 0
    assert liveupctl(bus, "exec", "--mode", "systemd").returncode == 0  # follows to the end
    [entry] = json.loads(bus.call("GetHistory", "u", "0")[0])
    assert (entry["state"], entry["verification"]["warnings"]) == ("completed", [])
    assert "warning:" not in liveupctl(bus, "show").stdout
