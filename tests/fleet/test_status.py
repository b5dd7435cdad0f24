"""``liveupctl status`` for update managers: a newer kernel installed, reboot-required."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from liveupd.backends.dryrun import DEFAULT_MACHINE
from liveupd.fleet.reboot_required import RebootRequired, newer_kernel, reboot_required
from tests.dbus.buses import Daemon, PrivateBus, liveupctl
from tests.dbus.fixtures import DaemonFactory

RUNNING = "6.1.0-55-cloud-amd64"
LATEST = "6.1.0-56-cloud-amd64"
# The keys liveupctl status --json had before these were added: scripts rely on them.
STABLE_KEYS = {
    "state",
    "staged_transition",
    "staged",
    "running_kernel",
    "latest_kernel",
    "unsupported",
    "can_live_update",
    "version",
}


def flag(tmp_path: Path, *packages: str) -> dict[str, str]:
    """An environment pointing liveupctl at a reboot-required file under ``tmp_path``."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    sentinel = run / "reboot-required"
    if packages:
        sentinel.write_text("*** System restart required ***\n")
        (run / "reboot-required.pkgs").write_text("".join(f"{p}\n" for p in packages))
    return {"LIVEUPCTL_REBOOT_REQUIRED": str(sentinel)}


def status(bus: PrivateBus, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = liveupctl(bus, "status", *args, env=env)
        assert result.returncode == 0, result.stderr
        return result

    return json.loads(run("--json").stdout), run().stdout


def test_a_newer_kernel_is_reported(daemon: Daemon, bus: PrivateBus, tmp_path: Path) -> None:
    data, text = status(bus, flag(tmp_path))
    assert data.keys() >= STABLE_KEYS
    assert data["newer_kernel"] == LATEST
    assert (data["running_kernel"], data["latest_kernel"]) == (RUNNING, LATEST)
    assert data["reboot_required"] is False
    assert data["reboot_required_file"] is None and data["reboot_required_packages"] == []
    assert f"Latest kernel:  {LATEST} (newer than the running kernel)\n" in text
    assert f"Reboot needed:  yes: {LATEST} is installed (run 'liveupctl reboot')\n" in text
    bus.call("Stage", "sssa{sv}", "", "", "", "0")
    _, staged = status(bus, flag(tmp_path))
    assert f"Latest kernel:  {LATEST} (newer than the running kernel; staged)" in staged


def test_running_the_newest_kernel_and_no_flag(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    machine = tmp_path / "machine.json"
    system = {**DEFAULT_MACHINE["system"], "release": LATEST}
    machine.write_text(json.dumps({**DEFAULT_MACHINE, "system": system}))
    start_daemon(env={"LIVEUPD_DRY_RUN_MACHINE": str(machine)})
    data, text = status(bus, flag(tmp_path))
    assert data["newer_kernel"] is None and data["reboot_required"] is False
    assert f"Latest kernel:  {LATEST} (running)\n" in text
    assert "Reboot needed:  no\n" in text


def test_reboot_required_with_its_packages(daemon: Daemon, bus: PrivateBus, tmp_path: Path) -> None:
    env = flag(tmp_path, "libc6", "linux-image-6.1.0-56-cloud-amd64", "libc6")
    data, text = status(bus, env)
    sentinel = env["LIVEUPCTL_REBOOT_REQUIRED"]
    assert data["reboot_required"] is True
    assert data["reboot_required_file"] == sentinel
    assert data["reboot_required_packages"] == ["libc6", "linux-image-6.1.0-56-cloud-amd64"]
    assert (
        f"Reboot needed:  yes: {LATEST} is installed; {sentinel} exists (packages: libc6, "
        "linux-image-6.1.0-56-cloud-amd64) (run 'liveupctl reboot')\n"
    ) in text


def test_reboot_required_when_kexec_is_unsupported(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({**DEFAULT_MACHINE, "preflight": ["no kexec here"]}))
    start_daemon(env={"LIVEUPD_DRY_RUN_MACHINE": str(machine)})
    data, text = status(bus, flag(tmp_path, "libc6"))
    assert data["reboot_required"] is True and data["unsupported"] == "no kexec here"
    assert "(reboot normally)" in text


# ------------------------------------------------------------------ pure --


def test_reboot_required_file_reading(tmp_path: Path) -> None:
    run, var_run = tmp_path / "run", tmp_path / "var-run"
    run.mkdir()
    var_run.mkdir()
    files = [str(run / "reboot-required"), str(var_run / "reboot-required")]
    assert reboot_required(files) is None
    (var_run / "reboot-required").touch()  # no .pkgs: no packages named
    assert reboot_required(files) == RebootRequired(files[1], ())
    (run / "reboot-required").write_text("")
    (run / "reboot-required.pkgs").write_text("\nlinux-base\n  linux-base \nsystemd\n")
    assert reboot_required(files) == RebootRequired(files[0], ("linux-base", "systemd"))


def test_newer_kernel_order() -> None:
    assert newer_kernel("6.1.0-9-amd64", "6.1.0-10-amd64") == "6.1.0-10-amd64"
    assert newer_kernel("6.12.0-rc3", "6.12.0") == "6.12.0"
    assert newer_kernel("6.1.0-10-amd64", "6.1.0-9-amd64") is None
    assert newer_kernel("6.1.0-10-amd64", "6.1.0-10-amd64") is None
    assert newer_kernel("6.1.0-10-amd64", "") is None
    assert newer_kernel(None, "6.1.0-10-amd64") is None
